"""The people's queue: rows waiting for a person, in the run store, and every way to answer them.

A run with a `human` reviewer puts the rows it wants a person to see here (with what the specialists
and the LLM said, and why the row is asked) and waits (exit status 3). People answer them on the review
page (`labeljury review`), through its JSON API, or in Label Studio (`labeljury export-queue` /
`import-reviews`); each answer is written to the run's reviews at once, in one transaction with the
queue, so the next `labeljury run` continues with it and nothing is asked twice.

Several people at once: `lease` hands each one a different row for LEASE_SECONDS; `answer` accepts
a row only once (a second answer to the same row is refused, not applied). `undo` takes back a
person's own answer while no run has used it yet.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ReviewError
from ..sources import SECOND_LOOK, queued
from ..sources import reviewed as reviewed_by
from ..store import Answer, check_store_file, transaction
from ..store.db import connect_shared
from ..store.meta import read_meta
from ..store.reviews import withdraw_review, write_answer, write_person_review
from .base import ReviewItem

LEASE_SECONDS = 300.0



@dataclass(frozen=True)
class Waiting:
    """A row waiting for a person, with everything the page shows."""

    id: int
    text: str
    why: str  # "hard", "audit", "bootstrap", "flagged", "llm-<why>" (the LLM could not answer)
    suggestion: str | None
    confidence: float | None
    votes: dict[str, str | None]
    llm_label: str | None
    llm_confidence: float | None
    llm_reason: str | None

    def to_dict(self, labels: Sequence[str]) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "why": self.why, "suggestion": self.suggestion,
                "confidence": self.confidence, "votes": self.votes, "llm": None if self.llm_label is None and
                self.llm_reason is None else {"label": self.llm_label, "confidence": self.llm_confidence,
                                              "reason": self.llm_reason},
                "labels": list(labels)}


class HumanQueue:
    """The queue of one run directory, on a connection of its own (the pipeline and the review server
    each have one; SQLite's WAL lets them work side by side)."""

    def __init__(self, run_dir: str | Path):
        self.db_path = Path(run_dir) / "run.db"
        check_store_file(self.db_path, fresh_ok=False)
        try:
            self.conn = connect_shared(self.db_path)
            self.conn.execute("SELECT 1 FROM human_queue LIMIT 1")
        except sqlite3.Error as err:
            raise ReviewError(f"the review queue in {str(self.db_path)!r} cannot be opened ({err})") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), holding the connection's lock: the review
        server answers from several threads, and one SQLite connection is not for two at once."""
        with transaction(self.conn, self._lock) as c:
            yield c

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    # -- the pipeline's side ------------------------------------------------------------------------
    def enqueue(self, items: Sequence[ReviewItem]) -> None:
        """Put rows in the queue (a row already there keeps its place and any answer)."""
        now = time.time()
        rows = []
        for it in items:
            llm = it.previous
            rows.append((it.key, _why(it), it.text, it.vote, it.confidence, json.dumps(it.votes),
                         llm.label if llm else None, llm.confidence if llm else None,
                         (llm.reason or llm.source) if llm else None, now))
        with self._tx():
            self.conn.executemany(
                "INSERT OR IGNORE INTO human_queue(text_id, why, text, suggestion, confidence, votes, llm_label, "
                "llm_confidence, llm_reason, queued_at) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def answered(self, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """{text id: (label, via)} of the rows among `ids` that a person has answered."""
        out: dict[int, tuple[str, str]] = {}
        ids = list(ids)
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            q = (f"SELECT text_id, label, via FROM human_queue WHERE label IS NOT NULL AND "
                 f"text_id IN ({','.join('?' * len(part))})")
            out.update({t: (lab, via) for t, lab, via in self._read(q, part)})
        return out

    # -- the people's side --------------------------------------------------------------------------
    def lease(self, owner: str, ttl: float = LEASE_SECONDS) -> Waiting | None:
        """The next unanswered row nobody else holds, now held by `owner` for `ttl` seconds (a row the
        owner already holds is handed back first); None when nothing is left."""
        now = time.time()
        with self._tx():
            row = self.conn.execute(
                "SELECT text_id FROM human_queue WHERE label IS NULL AND "
                "(lease IS NULL OR lease_until < ? OR lease = ?) "
                "ORDER BY (lease = ?) DESC, skips, CASE why WHEN 'audit' THEN 0 ELSE 1 END, queued_at, text_id LIMIT 1",
                (now, owner, owner)).fetchone()
            if row is None:
                return None
            self.conn.execute("UPDATE human_queue SET lease=?, lease_until=? WHERE text_id=?", (owner, now + ttl, row[0]))
        return self.get(row[0])

    def get(self, text_id: int) -> Waiting | None:
        rows = self._read(
            "SELECT text_id, text, why, suggestion, confidence, votes, llm_label, llm_confidence, llm_reason "
            "FROM human_queue WHERE text_id=?", (text_id,))
        if not rows:
            return None
        t, text, why, sug, conf, votes, ll, lc, lr = rows[0]
        return Waiting(t, text, why, sug, conf, json.loads(votes or "{}"), ll, lc, lr)

    def skip(self, text_id: int, owner: str) -> None:
        """Hand the row back, to the end of the queue."""
        with self._tx():
            self.conn.execute("UPDATE human_queue SET lease=NULL, lease_until=NULL, skips=skips+1 "
                              "WHERE text_id=? AND label IS NULL AND (lease=? OR lease IS NULL)", (text_id, owner))

    def release(self, owner: str) -> int:
        """Hand back every unanswered row `owner` holds (its page was closed), at once rather than when
        the leases expire; their place in the queue is kept. The number of rows handed back."""
        with self._tx():
            return self.conn.execute("UPDATE human_queue SET lease=NULL, lease_until=NULL "
                                     "WHERE lease=? AND label IS NULL", (owner,)).rowcount

    def answer(self, text_id: int, label: str, owner: str, via: str = "human", note: str | None = None) -> bool:
        """Record `owner`'s answer and the run's review of the row, in one transaction. False when the
        row is not waiting (unknown, or answered already by someone)."""
        now = time.time()
        with self._tx():
            cur = self.conn.execute(
                "UPDATE human_queue SET label=?, answered_by=?, answered_at=?, via=?, lease=NULL, lease_until=NULL "
                "WHERE text_id=? AND label IS NULL", (label, owner, now, via, text_id))
            if cur.rowcount != 1:
                return False
            write_person_review(self.conn, text_id, label, reviewed_by(via), note, now)
        return True

    def flag(self, text_id: int, why: str) -> None:
        """Leave the row in the queue for a second look, saying why (e.g. annotators who tied)."""
        with self._tx():
            self.conn.execute("UPDATE human_queue SET why='flagged', lease=NULL, lease_until=NULL WHERE text_id=?",
                              (text_id,))
            write_answer(self.conn, text_id, "human", Answer(None, None, why, queued(SECOND_LOOK)))

    def undo(self, text_id: int, owner: str) -> bool:
        """Take back `owner`'s answer to the row, while no run has used it (started since). False when
        it cannot be taken back."""
        with self._tx():
            row = self.conn.execute("SELECT answered_by, answered_at FROM human_queue WHERE text_id=?",
                                    (text_id,)).fetchone()
            used = read_meta(self.conn, "run_started_at")
            if row is None or row[0] != owner or (used is not None and used >= row[1]):
                return False
            self.conn.execute("UPDATE human_queue SET label=NULL, answered_by=NULL, answered_at=NULL, via=NULL, "
                              "lease=?, lease_until=? WHERE text_id=?", (owner, time.time() + LEASE_SECONDS, text_id))
            withdraw_review(self.conn, text_id, queued("human"))
        return True

    def waiting(self) -> list[Waiting]:
        ids = [t for (t,) in self._read("SELECT text_id FROM human_queue WHERE label IS NULL ORDER BY queued_at, text_id")]
        return [w for w in (self.get(t) for t in ids) if w is not None]

    def progress(self) -> dict[str, int]:
        answered, left = self._read(
            "SELECT COALESCE(SUM(label IS NOT NULL), 0), COALESCE(SUM(label IS NULL), 0) FROM human_queue")[0]
        return {"answered": int(answered), "left": int(left)}

    def answer_times(self, since: float) -> list[float]:
        return [t for (t,) in self._read(
            "SELECT answered_at FROM human_queue WHERE answered_at > ? ORDER BY answered_at", (since,))]


def _why(item: ReviewItem) -> str:
    """Why a person sees the row: the pipeline's reason, or the earlier reviewer that could not settle
    it ("llm-timeout", "llm-invalid-answer", "llm-unsure" for an answer below min_confidence...)."""
    prev = item.previous
    if prev is None or item.reason == SECOND_LOOK:  # an answer given, doubted afterwards
        return item.reason
    if prev.label is not None:
        return "llm-unsure"
    return "llm-" + prev.source.removeprefix("queued:").removeprefix("llm-")
