"""Routing records: which texts were sent for review, why (`sources.Why`: audit / bootstrap / hard), their
hardness and stage; for an audit row, the stage whose hardest rows it would have been among
(`hard_stage`: it is not asked again, but it was picked)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from .tables import Tables


class RoutingRecords(Tables):
    def add_routing(self, text_ids: Sequence[int], why: str, hardness: Sequence[float] | None, stage: int,
                    done_step: str | None = None,
                    audit_hard: tuple[Sequence[int], Sequence[float]] | None = None) -> None:
        """Record the rows sent to review (and the audit rows this stage would have sent: `audit_hard`),
        and (atomically) that the routing step is done."""
        now = time.time()
        hard = list(hardness) if hardness is not None else [None] * len(text_ids)
        with self.transaction() as c:  # type: ignore[attr-defined]
            c.executemany(
                "INSERT OR IGNORE INTO routing(text_id, why, hardness, stage, created_at) VALUES (?,?,?,?,?)",
                [(int(t), why, None if h is None else float(h), stage, now) for t, h in zip(text_ids, hard)])
            if audit_hard is not None:
                self._mark_audit_hard(audit_hard[0], audit_hard[1], stage, c)
            if done_step:
                self.mark_done(done_step, c)  # type: ignore[attr-defined]

    def routed(self, why: str | None = None, stage: int | None = None) -> list[int]:
        """The routed text ids (of one reason, of one stage), hardest first."""
        q, args = "SELECT text_id FROM routing WHERE 1=1", []
        if why is not None:
            q += " AND why=?"
            args.append(why)
        if stage is not None:
            q += " AND stage=?"
            args.append(stage)
        return [t for (t,) in self.conn.execute(q + " ORDER BY hardness DESC, text_id", args)]

    def routing_reasons(self) -> list[str]:
        """Why each routed row was routed, in the table's order."""
        return [why for (why,) in self.conn.execute("SELECT why FROM routing")]

    @property
    def n_routed(self) -> int:
        """Rows sent for review by this run (not the texts an earlier run brought: `store.carried`)."""
        return self.conn.execute("SELECT COUNT(*) FROM routing WHERE why NOT IN ('carried', 'reference')").fetchone()[0]

    def _mark_audit_hard(self, text_ids: Sequence[int], hardness: Sequence[float], stage: int,
                         conn: sqlite3.Connection) -> None:
        """Audit rows that stage `stage` would have sent for review as hard (they are not asked again)."""
        conn.executemany(
            "UPDATE routing SET hard_stage=?, hardness=? WHERE text_id=? AND why='audit'",
            [(stage, float(h), int(t)) for t, h in zip(text_ids, hardness, strict=True)])

    def audit_hard(self) -> dict[int, int]:
        """{audit text id: the stage that would have sent it for review as hard}."""
        return dict(self.conn.execute(
            "SELECT text_id, hard_stage FROM routing WHERE why='audit' AND hard_stage IS NOT NULL"))
