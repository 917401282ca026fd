"""`labeljury status`: what a run directory holds, read from its store alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import RunStoreError
from .llm.usage import LLMUsage, read_llm_usage
from .registry import read_registry
from .store import RunStore


def run_status(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not (run_dir / "run.db").exists():
        raise RunStoreError(f"{str(run_dir)!r} is not a run directory (no run.db); pass the --run-dir of a run")
    usage = read_llm_usage(run_dir)
    with RunStore(run_dir) as s:
        if s.get_meta("kind") == "baseline":
            return _baseline_status(s.get_meta("baseline") or {}, usage)
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
            "llm": _llm_cost(usage, rows, llm_reviewed=sum(r.source == "reviewed:llm" for r in reviews.values()),
                             review_cost=sum(r.cost_usd for r in reviews.values())),
            "specialists": [r.to_dict() for r in read_registry(s)],
            "stages": s.stages(),
            "sources": s.source_counts() if done else {},
        }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _llm_cost(usage: LLMUsage | None, rows: int, *, llm_reviewed: int = 0, review_cost: float = 0.0) -> dict[str, Any] | None:
    """What the run's LLM calls cost: in all, per input row and per row the LLM reviewed."""
    if usage is None:
        return None
    out = usage.to_dict()
    out["rows"] = rows
    out["cost_per_row_usd"] = usage.per_row(rows)
    if llm_reviewed:
        out["llm_reviewed_rows"] = llm_reviewed
        out["cost_per_reviewed_row_usd"] = review_cost / llm_reviewed
    return out


def _baseline_status(meta: dict[str, Any], usage: LLMUsage | None) -> dict[str, Any]:
    rows = int(meta.get("rows", 0))
    return {
        "kind": "baseline",
        "task": meta.get("task"),
        "input": meta.get("input"),
        "output": meta.get("output"),
        "method": meta.get("method"),
        "models": meta.get("models", []),
        "state": "complete" if meta.get("done") else "labeling (rerun the same command to resume)",
        "rows": rows if meta.get("done") else None,
        "sources": meta.get("sources", {}),
        "llm": _llm_cost(usage, rows),
    }
