"""Review records: the deciding review of each row (`reviews`, stored as each arrives, or why there is
none), every reviewer's own answer (`answers`: in a cascade the ones before the decider too), the vote's
distribution over the labels of each reviewed row taken before its review (`priors`), and the weighing's
verdict on each reviewed row (`verdicts`).

One reader per need: `reviews` (the deciding reviews of some rows, or all), `answered` (when each was
given: what the desk retries by), `learned_labels` / `audited_labels` (what trains, what measures),
`review_batches` (every answered review, streamed: the weighing), and sums for `status`. The review
server's queue writes through `write_review` / `write_answer` / `withdraw_review` on its own connection."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .db import by_ids, missing_table_guard
from .records import Answer, ReviewResult, Verdict
from .tables import Tables

_REVIEW_COLUMNS = "SELECT text_id, label, source, confidence, reason, pending, cost_usd FROM reviews"
_ANSWER_COLUMNS = "SELECT text_id, reviewer, label, confidence, reason, source FROM answers"
_VERDICT_COLUMNS = "SELECT text_id, label, belief, answer, flagged, train, weight FROM verdicts"


def write_review(conn: sqlite3.Connection, r: ReviewResult) -> None:
    """Store one deciding review (a pending one is overwritten by the next answer)."""
    conn.execute(
        "INSERT INTO reviews(text_id, label, source, confidence, reason, pending, cost_usd, created_at) "
        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(text_id) DO UPDATE SET label=excluded.label, "
        "source=excluded.source, confidence=excluded.confidence, reason=excluded.reason, "
        "pending=excluded.pending, cost_usd=excluded.cost_usd, created_at=excluded.created_at",
        (r.key, r.label, r.source, r.confidence, r.reason, int(r.pending), r.cost_usd, time.time()))


def write_person_review(conn: sqlite3.Connection, text_id: int, label: str, source: str, note: str | None,
                        at: float) -> None:
    """A person's answer (the queue's): decides the row, keeps any cost an earlier reviewer spent on it."""
    conn.execute(
        "INSERT INTO reviews(text_id, label, source, confidence, reason, pending, cost_usd, created_at) "
        "VALUES (?,?,?,?,?,0,0,?) ON CONFLICT(text_id) DO UPDATE SET label=excluded.label, "
        "source=excluded.source, confidence=excluded.confidence, reason=excluded.reason, pending=0, "
        "created_at=excluded.created_at", (text_id, label, source, 1.0, note, at))


def withdraw_review(conn: sqlite3.Connection, text_id: int, source: str) -> None:
    """A person took their answer back: the row waits again (as `source`)."""
    conn.execute("UPDATE reviews SET label=NULL, source=?, pending=1, confidence=NULL WHERE text_id=?",
                 (source, text_id))


def write_answer(conn: sqlite3.Connection, text_id: int, reviewer: str, answer: Answer) -> None:
    """Keep one reviewer's own answer to a row (replacing its earlier one)."""
    conn.execute(
        "INSERT OR REPLACE INTO answers(text_id, reviewer, label, confidence, reason, source, created_at) "
        "VALUES (?,?,?,?,?,?,?)", (text_id, reviewer, answer.label, answer.confidence, answer.reason, answer.source,
                                   time.time()))


def _review_results(rows: Iterable[tuple[Any, ...]]) -> dict[int, ReviewResult]:
    return {t: ReviewResult(t, lab, src, conf, why, bool(p), cost) for t, lab, src, conf, why, p, cost in rows}


def _answers(rows: Iterable[tuple[Any, ...]]) -> dict[int, dict[str, Answer]]:
    out: dict[int, dict[str, Answer]] = {}
    for t, rev, lab, conf, why, src in rows:
        out.setdefault(t, {})[rev] = Answer(lab, conf, why, src)
    return out


def _verdicts(rows: Iterable[tuple[Any, ...]]) -> dict[int, Verdict]:
    return {t: Verdict(lab, b, a, bool(f), tr, w) for t, lab, b, a, f, tr, w in rows}


class ReviewRecords(Tables):
    # -- the deciding reviews ---------------------------------------------------------------------------
    def put_review(self, r: ReviewResult) -> None:
        """Store one answer at once (a pending one is overwritten by the next answer)."""
        write_review(self.conn, r)

    def reviews(self, text_ids: Iterable[int] | None = None, *, include_pending: bool = False) -> dict[int, ReviewResult]:
        """{text id: its deciding review} of `text_ids` (default: every reviewed row); answered ones only
        unless `include_pending`."""
        where = "" if include_pending else "pending=0"
        if text_ids is None:
            return _review_results(self.conn.execute(_REVIEW_COLUMNS + (f" WHERE {where}" if where else "")))
        return _review_results(by_ids(self.conn, f"{_REVIEW_COLUMNS} WHERE {where + ' AND ' if where else ''}text_id IN ",
                                      text_ids))

    def answered(self, text_ids: Iterable[int]) -> dict[int, tuple[str | None, str, float]]:
        """{text id: (label, source, created_at)} of those of `text_ids` with an answer (not pending)."""
        return {t: (lab, src, at) for t, lab, src, at in by_ids(
            self.conn, "SELECT text_id, label, source, created_at FROM reviews WHERE pending=0 AND text_id IN ", text_ids)}

    def count_reviews(self, pending: bool = False) -> int:
        """How many rows have an answer from this run's reviewers (or, with `pending`, wait for one): not the
        reviews an earlier run brought (`earlier:*`), which cost this run nothing."""
        return self.conn.execute("SELECT COUNT(*) FROM reviews WHERE pending=? AND source NOT LIKE 'earlier:%'",
                                 (int(pending),)).fetchone()[0]

    def review_batches(self, size: int = 50_000) -> Iterator[list[tuple[int, str | None, str, float | None]]]:
        """Every answered review of this run's reviewers as (text id, label, source, confidence), in text id
        order, `size` at a time: what the weighing weighs (an earlier run's reviews, `earlier:*`, were
        weighed there: what they carry is the label it decided)."""
        cursor = self.conn.execute("SELECT text_id, label, source, confidence FROM reviews WHERE pending=0 "
                                   "AND source NOT LIKE 'earlier:%' ORDER BY text_id")
        while batch := cursor.fetchmany(size):
            yield batch

    def review_totals(self) -> dict[str, tuple[int, float]]:
        """{source: (answered rows, cost in USD)} of this run's reviews, in the order the sources first
        appeared: sums, not rows (the reviews an earlier run brought: `carried_totals`)."""
        return {src: (n, cost) for src, n, cost in self.conn.execute(
            "SELECT source, COUNT(*), TOTAL(cost_usd) FROM reviews WHERE pending=0 AND source NOT LIKE 'earlier:%' "
            "GROUP BY source ORDER BY MIN(rowid)")}

    def carried_totals(self) -> tuple[int, int]:
        """(reviewed rows an earlier run brought, those of them this input holds too: reused, not asked)."""
        n_input = self.n_input_texts  # type: ignore[attr-defined]
        row = self.conn.execute("SELECT COUNT(*), TOTAL(text_id < ?) FROM reviews WHERE source LIKE 'earlier:%'",
                                (n_input,)).fetchone()
        return int(row[0]), int(row[1])

    def audit_review_sources(self) -> list[tuple[str, int]]:
        """(source, answered audit rows) of the audit sample's reviews."""
        return self.conn.execute(
            "SELECT r.source, COUNT(*) FROM reviews r JOIN routing g ON g.text_id = r.text_id AND g.why = 'audit' "
            "WHERE r.pending=0 GROUP BY r.source ORDER BY MIN(r.rowid)").fetchall()

    def reviews_signature(self) -> list[Any]:
        """(answered rows, the latest answer's time, pending rows): changes with every answer."""
        signature = list(self.conn.execute("SELECT COUNT(*), MAX(created_at) FROM reviews WHERE pending=0").fetchone())
        signature.append(self.count_reviews(pending=True))
        return signature

    def labels_signature(self) -> tuple[Any, ...]:
        """Changes whenever a reviewed row's label to learn from may have changed (an answer, a
        weighing): what a label model fitted with the reviewed labels clamped is kept under."""
        count, when = self.conn.execute(
            "SELECT COUNT(*), TOTAL(created_at) FROM reviews WHERE pending = 0 AND label IS NOT NULL").fetchone()
        return count, when, self.get_meta("verdicts_written", 0)  # type: ignore[attr-defined]

    # -- what trains and what measures ----------------------------------------------------------------
    def learned_labels(self, start: int = 0, stop: int | None = None, *,
                       include_audit: bool = False, include_carried: bool | None = None) -> tuple[np.ndarray, list[str]]:
        """(text ids in [start, stop), ascending; their labels) of the reviewed rows a specialist may
        learn from: every reviewed row with a label, the label to train on where it was weighed (its
        verdict's), without the audit sample, which measures (`include_audit`: with it, for the final
        refit, which the audit measures by cross-fitting); an earlier batch's rows (`store.carried`)
        unless this batch has drifted from them (`include_carried`: with them or without, whatever the
        drift). Read by range of the primary key: a chunk's rows cost the chunk, not every review. Each
        label is one shared string (a million reviews hold a million pointers, not a million strings)."""
        stop = self.n_texts if stop is None else stop  # type: ignore[attr-defined]
        if not (self.learns_from_carried if include_carried is None else include_carried):  # type: ignore[attr-defined]
            stop = min(stop, self.n_input_texts)  # type: ignore[attr-defined]
        audit = "" if include_audit else (
            "AND NOT EXISTS (SELECT 1 FROM routing g WHERE g.text_id = r.text_id AND g.why = 'audit') ")
        rows = self.conn.execute(
            "SELECT r.text_id, CASE WHEN v.text_id IS NULL THEN r.label ELSE v.train END FROM reviews r "
            "LEFT JOIN verdicts v ON v.text_id = r.text_id WHERE r.pending = 0 AND r.label IS NOT NULL "
            f"AND r.text_id >= ? AND r.text_id < ? {audit}ORDER BY r.text_id", (start, stop))
        ids: list[int] = []
        labels: list[str] = []
        shared: dict[str, str] = {}
        for t, lab in rows:
            if lab is not None:
                ids.append(t)
                labels.append(shared.setdefault(lab, lab))
        return np.array(ids, dtype=np.int64), labels

    def audited_labels(self) -> tuple[np.ndarray, list[str]]:
        """(text ids, ascending; their labels) of the audit rows that got a label."""
        rows = self.conn.execute(
            "SELECT r.text_id, r.label FROM reviews r JOIN routing g ON g.text_id = r.text_id AND g.why = 'audit' "
            "WHERE r.pending = 0 AND r.label IS NOT NULL ORDER BY r.text_id").fetchall()
        return np.array([t for t, _ in rows], dtype=np.int64), [lab for _, lab in rows]

    # -- every reviewer's own answers -------------------------------------------------------------------
    def put_answer(self, reviewer: str, r: ReviewResult) -> None:
        """Keep one reviewer's own answer to a row (whatever decided the row in the end)."""
        write_answer(self.conn, r.key, reviewer, Answer(r.label, r.confidence, r.reason, r.source))

    @missing_table_guard(dict)
    def answers(self, text_ids: Iterable[int] | None = None, *, answered_twice: bool = False) -> dict[int, dict[str, Answer]]:
        """{text id: {reviewer: its answer}} of `text_ids` (default: every row); with `answered_twice`, only
        the rows that more than one reviewer answered (or a row marked as sent on): what the weighing
        compares, without every row's single answer."""
        if answered_twice:
            return _answers(self.conn.execute(
                f"{_ANSWER_COLUMNS} WHERE text_id IN (SELECT text_id FROM answers GROUP BY text_id "
                "HAVING COUNT(*) > 1) ORDER BY rowid"))
        if text_ids is None:
            return _answers(self.conn.execute(_ANSWER_COLUMNS))
        return _answers(by_ids(self.conn, f"{_ANSWER_COLUMNS} WHERE text_id IN ", text_ids))

    @missing_table_guard(set)
    def answered_by(self, reviewer: str) -> set[int]:
        """The rows `reviewer` has an answer (or a mark) for."""
        return {t for (t,) in self.conn.execute("SELECT text_id FROM answers WHERE reviewer=?", (reviewer,))}

    @missing_table_guard(lambda: (0, 0))
    def marked_and_decided(self, mark: str) -> tuple[int, int]:
        """(rows carrying the answers-table mark `mark`, of which a review was stored since the mark)."""
        sent, decided = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(r.created_at >= a.created_at), 0) FROM answers a JOIN reviews r "
            "USING (text_id) WHERE a.reviewer=? AND r.pending=0", (mark,)).fetchone()
        return int(sent), int(decided)

    # -- the vote's priors ------------------------------------------------------------------------------
    def put_priors(self, priors: Mapping[int, Sequence[float]], replace: bool = False) -> None:
        """The vote's distribution of rows about to be reviewed; the first one given stands (it was
        taken by specialists that had not learned from the row), unless `replace` (for rows no
        specialist ever learns from: the audit)."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        self.conn.executemany(f"{verb} INTO priors(text_id, probs) VALUES (?,?)",
                              [(int(t), json.dumps([round(float(x), 5) for x in p])) for t, p in priors.items()])

    def priors(self, text_ids: Iterable[int] | None = None) -> dict[int, list[float]]:
        """{text id: the vote's distribution before its review} of `text_ids` (default: every row)."""
        rows = (self.conn.execute("SELECT text_id, probs FROM priors") if text_ids is None else
                by_ids(self.conn, "SELECT text_id, probs FROM priors WHERE text_id IN ", text_ids))
        return {t: json.loads(p) for t, p in rows}

    def prior_batches(self, size: int = 50_000) -> Iterator[list[tuple[int, str]]]:
        """Every prior as (text id, JSON list), in text id order, `size` at a time."""
        cursor = self.conn.execute("SELECT text_id, probs FROM priors ORDER BY text_id")
        while batch := cursor.fetchmany(size):
            yield batch

    # -- the weighing's verdicts -------------------------------------------------------------------------
    def put_verdicts(self, verdicts: Mapping[int, Verdict]) -> None:
        """Every reviewed row's verdict, replacing all."""
        with self.transaction() as c:  # type: ignore[attr-defined]
            c.execute("DELETE FROM verdicts")
            c.executemany("INSERT INTO verdicts(text_id, label, belief, answer, flagged, train, weight) "
                          "VALUES (?,?,?,?,?,?,?)",
                          [(int(t), v.label, float(v.belief), v.answer, int(v.flagged), v.train,
                            None if v.weight is None else float(v.weight)) for t, v in sorted(verdicts.items())])
            self.set_meta("verdicts_written", self.get_meta("verdicts_written", 0) + 1, c)  # type: ignore[attr-defined]

    @missing_table_guard(dict)
    def verdicts(self, text_ids: Iterable[int] | None = None) -> dict[int, Verdict]:
        """{text id: verdict} of `text_ids` (default: every reviewed row)."""
        columns = _VERDICT_COLUMNS
        if "weight" not in {row[1] for row in self.conn.execute("PRAGMA table_info(verdicts)")}:
            columns = columns.replace("weight", "NULL")  # a read-only look at a run made before weights
        if text_ids is None:
            return _verdicts(self.conn.execute(columns))
        return _verdicts(by_ids(self.conn, f"{columns} WHERE text_id IN ", text_ids))

    @missing_table_guard(set)
    def flagged_ids(self) -> set[int]:
        """The reviewed rows whose label the weighing flagged for a second look."""
        return {t for (t,) in self.conn.execute("SELECT text_id FROM verdicts WHERE flagged=1")}

    @missing_table_guard(dict)
    def train_weights(self) -> dict[int, float]:
        """{text id: weight} of the reviewed rows to learn from with a weight other than 1 (a weighed
        reviewer's answers: how likely each is right)."""
        rows = self.conn.execute("SELECT text_id, weight FROM verdicts WHERE train IS NOT NULL "
                                 "AND weight IS NOT NULL AND weight != 1").fetchall()
        return {int(t): float(w) for t, w in rows}
