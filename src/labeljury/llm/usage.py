"""What a run directory's LLM calls cost, read back from its call cache (`run.db`'s `llm_calls`).

Every completed call — review, model selection or baseline — is stored there with its tokens and
dollars, so it is the record of what a run paid. Reading never creates or changes anything: a run
that made no LLM call has no usage (None), and `labeljury status` / `eval` say nothing about cost.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelUsage:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class LLMUsage:
    """Totals over the run's completed LLM calls (re-asks included, cache hits not: they are free)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    by_model: dict[str, ModelUsage] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def per_row(self, rows: int) -> float | None:
        """Dollars per row over `rows` rows (None for no rows)."""
        return self.cost_usd / rows if rows > 0 else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokens"] = self.tokens
        return out


def _connect_readonly(db: Path) -> sqlite3.Connection | None:
    if not db.is_file():
        return None
    try:
        return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None


def read_llm_usage(run_dir: str | Path) -> LLMUsage | None:
    """The LLM usage recorded in `run_dir/run.db`, or None when the run made no LLM call."""
    conn = _connect_readonly(Path(run_dir) / "run.db")
    if conn is None:
        return None
    try:
        rows = conn.execute(
            "SELECT model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(cost_usd), 0) FROM llm_calls GROUP BY model ORDER BY model"
        ).fetchall()
    except sqlite3.Error:  # no llm_calls table: no LLM was ever called for this run
        return None
    finally:
        conn.close()
    if not rows:
        return None
    by_model = {str(m): ModelUsage(int(n), int(p), int(c), float(usd)) for m, n, p, c, usd in rows}
    return LLMUsage(
        calls=sum(u.calls for u in by_model.values()),
        prompt_tokens=sum(u.prompt_tokens for u in by_model.values()),
        completion_tokens=sum(u.completion_tokens for u in by_model.values()),
        cost_usd=round(sum(u.cost_usd for u in by_model.values()), 9),
        by_model=by_model,
    )
