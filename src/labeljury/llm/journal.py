"""The spend journal: every paid LLM call written to the run store *before* it is sent, at its worst
case, and reconciled to what it really cost when the answer comes.

So the dollar and token caps hold across restarts: a run killed with calls in flight, or whose calls
timed out (the provider may have billed them), starts again from a spent total that counts each such
call at its worst case. A call that the server refused before billing (a rate limit, an error status)
is released.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from ..errors import LLMError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_spend (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,
    reserved_nanos INTEGER NOT NULL, reserved_tokens INTEGER NOT NULL, spent_nanos INTEGER,
    spent_tokens INTEGER, state TEXT NOT NULL, created_at REAL NOT NULL, settled_at REAL)
"""


class SpendJournal(Protocol):
    def reserve(self, nanos: int, tokens: int) -> int: ...

    def settle(self, entry: int, nanos: int, tokens: int) -> None: ...

    def release(self, entry: int) -> None: ...

    def totals(self) -> tuple[int, int]:
        """(nano-dollars, tokens) spent: settled calls at their cost, open ones at their worst case."""
        ...

    def close(self) -> None: ...


class SQLiteSpendJournal:
    """The `llm_spend` table of a run's `run.db` (for one model), on a connection of its own."""

    def __init__(self, db_path: str | Path, model: str) -> None:
        self.model = model
        try:
            self._db = sqlite3.connect(Path(db_path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as err:
            raise LLMError(f"the LLM spend journal in {str(db_path)!r} cannot be opened ({err}); check the run "
                           "directory") from None
        self._lock = threading.Lock()

    def reserve(self, nanos: int, tokens: int) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO llm_spend(model, reserved_nanos, reserved_tokens, state, created_at) "
                "VALUES (?, ?, ?, 'open', ?)", (self.model, nanos, tokens, time.time()))
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def settle(self, entry: int, nanos: int, tokens: int) -> None:
        with self._lock:
            self._db.execute("UPDATE llm_spend SET spent_nanos=?, spent_tokens=?, state='settled', settled_at=? "
                             "WHERE id=?", (nanos, tokens, time.time(), entry))

    def release(self, entry: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM llm_spend WHERE id=?", (entry,))

    def totals(self) -> tuple[int, int]:
        with self._lock:
            nanos, tokens = self._db.execute(
                "SELECT COALESCE(SUM(CASE WHEN state='settled' THEN spent_nanos ELSE reserved_nanos END), 0), "
                "COALESCE(SUM(CASE WHEN state='settled' THEN spent_tokens ELSE reserved_tokens END), 0) "
                "FROM llm_spend WHERE model=?", (self.model,)).fetchone()
        return int(nanos), int(tokens)

    def close(self) -> None:
        with self._lock:
            self._db.close()
