"""The review budget, planned once, in one place: how many rows the reviewer may label in all, how many
of them go to the audit sample (to measure), how many to the diverse bootstrap sample (to
start the specialists), and how the rest is split over the continual-learning stages.

`plan_budget` is a pure function of the task's settings and the input's size. The pipeline computes
the plan when a run starts, stores it in the run store, and never recomputes it, so a resumed run
spends exactly what the first one planned; every routing step takes its share from it and no step
can spend past `total`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import TaskError
from .stats import Z95
from .task import AuditSize, ContinualSpec, ReviewSpec

MAX_STAGES = 16  # more stages measured no better (BENCHMARKS.md), and each one refits every head
MIN_STAGE_REVIEWS = 25
BOOTSTRAP_CAP = 200  # the default bootstrap sample: 25% of the budget, 4 rows a label .. this many
# The default audit: AUDIT_SHARE of the budget, at most AUDIT_CAP rows, and none when that would be
# fewer than AUDIT_MIN rows (too few to measure anything). The interval's half-width falls as one over
# the square root of the audit: a third of a 20% budget on financial-sentiment (636 rows) gives about
# +-2.4 points, 1,000 rows about +-2; past that, a review teaches more as a hard row (BENCHMARKS.md).
AUDIT_SHARE = 1 / 3
AUDIT_CAP = 1000
AUDIT_MIN = 30


@dataclass(frozen=True)
class BudgetPlan:
    """Reviews allowed in all (`total`), for the bootstrap sample, and for each stage, in order.
    `audit + bootstrap + sum(stages) <= total` always holds."""

    total: int
    bootstrap: int
    stages: tuple[int, ...]
    audit: int = 0

    @property
    def hard(self) -> int:
        """Reviews for the rows the specialists find hard: every stage's share."""
        return sum(self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stages": list(self.stages)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BudgetPlan:
        return cls(total=int(d["total"]), bootstrap=int(d["bootstrap"]), stages=tuple(int(x) for x in d["stages"]),
                   audit=int(d.get("audit", 0)))


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


def sized_audit(half_width: float) -> int:
    """Audit rows for a 95% interval of +- `half_width` at worst: a share measured on n rows has a standard
    error of at most 1/(2 sqrt(n)). The estimate's correction is such a share on the rows no reviewer
    decided (a part of the output), with the calibrated confidences taking out much of its variance: its
    interval comes out no wider (measured: BENCHMARKS.md, section 13)."""
    return math.ceil((Z95 / half_width) ** 2 / 4)


def audit_rows(review: ReviewSpec, n_rows: int) -> int:
    """Rows of the audit sample, within the budget (see AUDIT_SHARE); an audit sized for an
    interval that the budget cannot hold is refused (`TaskError`), not shrunk."""
    budget = budget_rows(review, n_rows)
    if review.audit is None:
        want = min(AUDIT_CAP, int(AUDIT_SHARE * budget))
        return want if want >= AUDIT_MIN else 0
    if isinstance(review.audit, AuditSize):
        want = min(sized_audit(review.audit.half_width), n_rows)
        if want > budget:
            raise TaskError(f"review.audit: an interval of +-{review.audit.half_width:g} needs up to {want} audit rows, "
                            f"more than the review budget ({budget} rows); raise review.budget, or ask for a wider "
                            f"half_width (+-{Z95 / (2 * math.sqrt(budget)):.3f} fits the whole budget)")
        return want
    want = int(review.audit * n_rows) if isinstance(review.audit, float) else review.audit
    return max(0, min(want, budget))


def no_audit_reason(review: ReviewSpec, n_rows: int) -> str | None:
    """Why a run over `n_rows` rows has no audit sample, and what to set for one; None when it has one."""
    if audit_rows(review, n_rows) > 0:
        return None
    budget = budget_rows(review, n_rows)
    if review.audit is not None:
        return (f"review.audit is {review.audit!r}: no audit sample, so nothing measures the output; set review.audit: "
                f"{min(AUDIT_MIN, budget) or AUDIT_MIN} (rows, inside the budget) for an estimate")
    if budget < AUDIT_MIN:
        return (f"the review budget ({budget} rows) is under the {AUDIT_MIN} rows an audit needs; raise "
                f"review.budget to at least {AUDIT_MIN} rows for an estimate")
    return (f"the default audit, a third of the review budget, would be {int(AUDIT_SHARE * budget)} of its {budget} "
            f"rows, under the {AUDIT_MIN} an estimate needs, so it is off; set review.audit: {AUDIT_MIN} (it costs "
            f"{AUDIT_MIN} of the {budget} reviews, which then measure instead of train) or raise review.budget to "
            f"{math.ceil(AUDIT_MIN / AUDIT_SHARE)} rows")


def plan_budget(review: ReviewSpec, continual: ContinualSpec | None, *, n_rows: int, n_texts: int,
                n_labels: int, trainable: bool) -> BudgetPlan:
    """The budget of a run over `n_rows` input rows holding `n_texts` unique texts.

    The audit takes `audit_rows`, then the bootstrap sample `bootstrap_rows`, of what is left (at most
    one review a text). With continual learning
    (enabled, and some specialist `trainable`), the rest is split into `continual.stage_size` reviews
    a stage, or by default into up to MAX_STAGES stages of at least MIN_STAGE_REVIEWS; without, it is
    one stage. The split is even, earlier stages taking the remainder."""
    continual = continual or ContinualSpec()
    total = budget_rows(review, n_rows)
    audit = min(audit_rows(review, n_rows), n_texts)
    bootstrap = min(bootstrap_rows(review, n_rows, n_labels), n_texts - audit, total - audit)
    hard = max(0, total - audit - bootstrap)
    if not (continual.enabled and trainable) or n_texts == 0:
        n_stages = 1
    elif continual.stage_size:
        n_stages = math.ceil(hard / continual.stage_size)
    else:
        n_stages = min(MAX_STAGES, hard // MIN_STAGE_REVIEWS)
    n_stages = int(min(max(1, n_stages), max(1, n_texts)))
    base, extra = divmod(hard, n_stages)
    return BudgetPlan(total=total, bootstrap=bootstrap, stages=tuple(base + (i < extra) for i in range(n_stages)),
                      audit=audit)


def resize_plan(plan: BudgetPlan, total: int, routed_stages: int) -> BudgetPlan:
    """The plan of a resumed run whose budget is now `total`. The audit, the bootstrap and the stages
    already routed (`routed_stages` of them) keep their shares; what is left of the new budget is split
    over the stages still to come, in stages as large as the plan's were (more of them when the budget
    grew). Raises ValueError when `total` is below what the run has already sent for review."""
    kept = plan.stages[:routed_stages]
    spent = plan.audit + plan.bootstrap + sum(kept)
    if total < spent:
        raise ValueError(f"the run has already sent {spent} rows for review; the budget cannot go below that")
    left = total - spent
    size = max(1, round(plan.hard / max(1, len(plan.stages))))
    n = 0 if left == 0 else max(1, round(left / size))
    base, extra = divmod(left, n) if n else (0, 0)
    return BudgetPlan(total=total, bootstrap=plan.bootstrap, audit=plan.audit,
                      stages=kept + tuple(base + (i < extra) for i in range(n)))
