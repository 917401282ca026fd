"""The review budget, planned once, in one place: how many rows the reviewer may label in all, how many
of them go to the diverse bootstrap sample, and how the rest is split over the continual-learning stages.

`plan_budget` is a pure function of the task's settings and the input's size. The pipeline computes
the plan when a run starts, stores it in the run store, and never recomputes it, so a resumed run
spends exactly what the first one planned; every routing step takes its share from it and no step
can spend past `total`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .task import ContinualSpec, ReviewSpec

MAX_STAGES = 16  # more stages measured no better (BENCHMARKS.md), and each one refits every head
MIN_STAGE_REVIEWS = 25
BOOTSTRAP_CAP = 200  # the default bootstrap sample: 25% of the budget, 4 rows a label .. this many


@dataclass(frozen=True)
class BudgetPlan:
    """Reviews allowed in all (`total`), for the bootstrap sample, and for each stage, in order.
    `bootstrap + sum(stages) <= total` always holds."""

    total: int
    bootstrap: int
    stages: tuple[int, ...]

    @property
    def hard(self) -> int:
        """Reviews for the rows the specialists find hard: every stage's share."""
        return sum(self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stages": list(self.stages)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BudgetPlan:
        return cls(total=int(d["total"]), bootstrap=int(d["bootstrap"]), stages=tuple(int(x) for x in d["stages"]))


def budget_rows(review: ReviewSpec, n_rows: int) -> int:
    """`review.budget` as a row count for an input of `n_rows` rows: a float is a fraction of the
    rows, an int a count."""
    if isinstance(review.budget, float):
        return int(review.budget * n_rows + 1e-9)
    return int(review.budget)


def bootstrap_rows(review: ReviewSpec, n_rows: int, n_labels: int) -> int:
    """Rows to review first, within the budget; by default 25% of it, between 4 a label and 200."""
    budget = budget_rows(review, n_rows)
    if review.bootstrap is None:
        want = max(4 * n_labels, min(BOOTSTRAP_CAP, int(0.25 * budget)))
    elif isinstance(review.bootstrap, float):
        want = int(review.bootstrap * n_rows)
    else:
        want = review.bootstrap
    return max(0, min(want, budget))


def plan_budget(review: ReviewSpec, continual: ContinualSpec | None, *, n_rows: int, n_texts: int,
                n_labels: int, trainable: bool) -> BudgetPlan:
    """The budget of a run over `n_rows` input rows holding `n_texts` unique texts.

    The bootstrap sample takes `bootstrap_rows` (at most one review a text). With continual learning
    (enabled, and some specialist `trainable`), the rest is split into `continual.stage_size` reviews
    a stage, or by default into up to MAX_STAGES stages of at least MIN_STAGE_REVIEWS; without, it is
    one stage. The split is even, earlier stages taking the remainder."""
    continual = continual or ContinualSpec()
    total = budget_rows(review, n_rows)
    bootstrap = min(bootstrap_rows(review, n_rows, n_labels), n_texts)
    hard = max(0, total - bootstrap)
    if not (continual.enabled and trainable) or n_texts == 0:
        n_stages = 1
    elif continual.stage_size:
        n_stages = math.ceil(hard / continual.stage_size)
    else:
        n_stages = min(MAX_STAGES, hard // MIN_STAGE_REVIEWS)
    n_stages = int(min(max(1, n_stages), max(1, n_texts)))
    base, extra = divmod(hard, n_stages)
    return BudgetPlan(total=total, bootstrap=bootstrap, stages=tuple(base + (i < extra) for i in range(n_stages)))
