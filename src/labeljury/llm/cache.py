"""A cache of LLM calls, so that a resumed or repeated run never pays for the same call twice.

The key is a sha256 of everything that determines the answer: the model, the messages, the answer
schema, the temperature and `max_tokens`. It does not depend on how the schema was sent
(`json_schema`, `json_object` or plain text), so an answer stays valid whichever mode the server
accepts. Only completed calls are stored; failures are not.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import LLMError


@dataclass(frozen=True)
class CallRecord:
    """One completed call: what was sent (without credentials), what came back, and its cost."""

    model: str
    request: dict[str, Any]
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    created_at: float


class CallCache(Protocol):
    def get(self, key: str) -> CallRecord | None: ...

    def put(self, key: str, record: CallRecord) -> None: ...


def cache_key(
    model: str,
    messages: Sequence[dict[str, str]],
    schema: dict[str, Any] | None,
    temperature: float,
    max_tokens: int,
) -> str:
    payload = {
        "model": model,
        "messages": list(messages),
        "schema": schema,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class MemoryCallCache:
    """A dict-backed cache for tests and one-off scripts."""

    def __init__(self) -> None:
        self._records: dict[str, CallRecord] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> CallRecord | None:
        with self._lock:
            return self._records.get(key)

    def put(self, key: str, record: CallRecord) -> None:
        with self._lock:
            self._records.setdefault(key, record)

    def records(self) -> list[CallRecord]:
        """Every stored call, oldest first."""
        with self._lock:
            return list(self._records.values())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request_json TEXT NOT NULL,
    response_json TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at REAL NOT NULL
)
"""


class SQLiteCallCache:
    """The `llm_calls` table in a SQLite file (the run store's `run.db`), on a connection of its own.

    WAL mode and a busy timeout let it share the file with the run store's writer. Safe to use from
    several threads.
    """

    def __init__(self, db_path: str | Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(db_path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as err:
            raise LLMError(
                f"the LLM call cache {str(self.path)!r} cannot be opened ({err}); check the run directory"
            ) from None
        self._lock = threading.Lock()

    def get(self, key: str) -> CallRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT model, request_json, response_json, prompt_tokens, completion_tokens, cost_usd, created_at "
                "FROM llm_calls WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        response = json.loads(row[2])
        return CallRecord(
            model=row[0],
            request=json.loads(row[1]),
            content=response["content"],
            finish_reason=response.get("finish_reason"),
            prompt_tokens=row[3],
            completion_tokens=row[4],
            cost_usd=row[5],
            created_at=row[6],
        )

    def put(self, key: str, record: CallRecord) -> None:
        response = {"content": record.content, "finish_reason": record.finish_reason}
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO llm_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    record.model,
                    json.dumps(record.request, ensure_ascii=False),
                    json.dumps(response, ensure_ascii=False),
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.cost_usd,
                    record.created_at,
                ),
            )

    def totals(self) -> tuple[float, int]:
        """Dollars and tokens already paid for the cached calls: what a resumed run starts its
        `Ledger` from, so a cap holds across restarts."""
        with self._lock:
            usd, tokens = self._db.execute(
                "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM llm_calls"
            ).fetchone()
        return float(usd), int(tokens)

    def close(self) -> None:
        with self._lock:
            self._db.close()
