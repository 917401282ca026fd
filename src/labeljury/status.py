"""`labeljury status`: what a run directory holds, read from its store alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import RunStoreError
from .store import RunStore


def run_status(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not (run_dir / "run.db").exists():
        raise RunStoreError(f"{str(run_dir)!r} is not a run directory (no run.db); pass the --run-dir of a run")
    with RunStore(run_dir) as s:
        task = s.get_meta("task") or {}
        rows = s.n_rows
        reviews = s.reviews()
        pending = len(s.reviews(include_pending=True)) - len(reviews)
        skipped = s.conn.execute("SELECT COUNT(*) FROM rows WHERE text_id IS NULL").fetchone()[0]
        budget = task.get("review", {}).get("budget")
        done = s.is_done("finalize")
        state = "complete" if done else ("waiting for reviews" if pending else
                                         ("ingesting" if not s.is_done("ingest") else "labeling"))
        return {
            "task": task.get("name"),
            "input": s.get_meta("input_path"),
            "state": state,
            "rows": rows,
            "texts": s.n_texts,
            "skipped": skipped,
            "reviews": len(reviews),
            "reviews_by_source": _count(r.source for r in reviews.values()),
            "pending_reviews": pending,
            "budget": budget,
            "cost_usd": round(sum(r.cost_usd for r in reviews.values()), 6),
            "specialists": s.specialists(),
            "stages": s.stages(),
            "sources": s.source_counts() if done else {},
        }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
