"""Output records: the final label, confidence and provenance of every text, and each continual-learning
stage's metrics."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..sources import skipped
from .db import by_ids
from .records import FinalLabel
from .tables import Tables


class OutputRecords(Tables):
    def put_final(self, records: Iterable[tuple[int, str | None, float | None, str, str | None, float | None, str]],
                  meta: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> None:
        """(text_id, label, confidence, source, vote, vote_confidence, specialist_votes_json), and the
        `meta` keys that describe them (or a function giving them once the records are written), in
        one transaction."""
        with self.transaction() as c:
            c.execute("DELETE FROM final")
            c.executemany("INSERT INTO final VALUES (?,?,?,?,?,?,?)", records)
            for key, value in ((meta() if callable(meta) else meta) or {}).items():
                self.set_meta(key, value, c)
            self.mark_done("finalize", c)

    def final_for(self, text_ids: np.ndarray) -> dict[int, FinalLabel]:
        """{text id: its final label} of `text_ids` (ids < 0, skipped rows, are left out)."""
        return {t: FinalLabel(*rest) for t, *rest in by_ids(
            self.conn, "SELECT text_id, label, confidence, source, vote, vote_confidence, specialist_votes FROM final "
            "WHERE text_id IN ", text_ids.tolist())}

    def source_counts(self) -> dict[str, int]:
        """Input rows per annotation source (skipped rows included)."""
        counts = dict(self.conn.execute(
            "SELECT f.source, COUNT(*) FROM rows r JOIN final f ON f.text_id = r.text_id GROUP BY f.source"))
        for why, n in self.skipped_counts().items():  # type: ignore[attr-defined]
            counts[skipped(why)] = n
        return counts

    def put_stage(self, stage: int, metrics: dict[str, Any], conn: sqlite3.Connection | None = None) -> None:
        self._c(conn).execute("INSERT OR REPLACE INTO stages(stage, metrics) VALUES (?,?)", (stage, json.dumps(metrics)))

    def stages(self) -> list[dict[str, Any]]:
        return [json.loads(m) for (m,) in self.conn.execute("SELECT metrics FROM stages ORDER BY stage")]
