"""The review budget plan: one function decides the bootstrap sample and every stage's share."""

from __future__ import annotations

import numpy as np
import pytest

from labeljury.budget import BudgetPlan, bootstrap_rows, budget_rows, plan_budget
from labeljury.task import ContinualSpec, ReviewSpec


def test_budget_rows_fraction_or_count() -> None:
    assert budget_rows(ReviewSpec(budget=0.2), 9543) == 1908
    assert budget_rows(ReviewSpec(budget=1.0), 10) == 10
    assert budget_rows(ReviewSpec(budget=500), 9543) == 500
    assert budget_rows(ReviewSpec(budget=0), 100) == 0


def test_bootstrap_default_is_a_quarter_of_the_budget_within_limits() -> None:
    assert bootstrap_rows(ReviewSpec(budget=0.2), 9543, 3) == 200  # 25% of 1908, capped at 200
    assert bootstrap_rows(ReviewSpec(budget=0.1), 1000, 3) == 25  # 25% of 100
    assert bootstrap_rows(ReviewSpec(budget=0.01), 1000, 3) == 10  # 4 a label, but never past the budget
    assert bootstrap_rows(ReviewSpec(budget=0.2, bootstrap=30), 1000, 3) == 30
    assert bootstrap_rows(ReviewSpec(budget=0.2, bootstrap=0.05), 1000, 3) == 50
    assert bootstrap_rows(ReviewSpec(budget=0.02, bootstrap=500), 1000, 3) == 20


def test_plan_splits_the_hard_budget_into_stages() -> None:
    plan = plan_budget(ReviewSpec(budget=0.2, audit=0), None, n_rows=9543, n_texts=9543, n_labels=3, trainable=True)
    assert plan.total == 1908 and plan.bootstrap == 200 and plan.audit == 0
    assert len(plan.stages) == 16 and plan.hard == 1708
    audited = plan_budget(ReviewSpec(budget=0.2), None, n_rows=9543, n_texts=9543, n_labels=3, trainable=True)
    assert audited.audit == 636 and audited.bootstrap == 200 and audited.hard == 1908 - 636 - 200
    assert max(plan.stages) - min(plan.stages) <= 1 and plan.stages[0] >= plan.stages[-1]
    # stage_size sets the stage count; a plan without learning is one stage
    sized = plan_budget(ReviewSpec(budget=0.2, audit=0), ContinualSpec(stage_size=500), n_rows=9543, n_texts=9543,
                        n_labels=3, trainable=True)
    assert sized.stages == (427, 427, 427, 427)
    off = plan_budget(ReviewSpec(budget=0.2, audit=0), ContinualSpec(enabled=False), n_rows=9543, n_texts=9543,
                      n_labels=3, trainable=True)
    assert off.stages == (1708,)
    fixed = plan_budget(ReviewSpec(budget=0.2, audit=0), None, n_rows=9543, n_texts=9543, n_labels=3, trainable=False)
    assert fixed.stages == (1708,)
    # few reviews: stages of at least 25
    small = plan_budget(ReviewSpec(budget=100, audit=0), None, n_rows=1000, n_texts=1000, n_labels=3, trainable=True)
    assert small.bootstrap == 25 and small.stages == (25, 25, 25)


def test_plan_never_exceeds_the_budget_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_rows = int(rng.integers(0, 50_000))
        n_texts = int(rng.integers(0, n_rows + 1))
        budget = float(rng.uniform(0.001, 1.0)) if rng.random() < 0.5 else int(rng.integers(0, 5000))
        review = ReviewSpec(budget=budget)
        plan = plan_budget(review, ContinualSpec(stage_size=int(rng.integers(1, 900)) if rng.random() < 0.5 else None),
                           n_rows=n_rows, n_texts=n_texts, n_labels=int(rng.integers(2, 20)),
                           trainable=bool(rng.random() < 0.8))
        assert plan.audit + plan.bootstrap + plan.hard <= plan.total == budget_rows(review, n_rows)
        assert plan.bootstrap <= n_texts and all(s >= 0 for s in plan.stages) and len(plan.stages) >= 1
        assert BudgetPlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("n_texts", [0, 1])
def test_tiny_inputs(n_texts: int) -> None:
    plan = plan_budget(ReviewSpec(budget=1.0), None, n_rows=n_texts, n_texts=n_texts, n_labels=3, trainable=True)
    assert plan.total == n_texts and plan.bootstrap + plan.hard == n_texts and len(plan.stages) == 1


def test_an_audit_sized_for_an_interval_takes_the_rows_that_interval_needs_at_worst() -> None:
    from labeljury.budget import audit_rows, sized_audit
    from labeljury.errors import TaskError
    from labeljury.task import AuditSize, ReviewSpec

    review = ReviewSpec.model_validate({"budget": 0.2, "audit": {"half_width": 0.05}})
    assert review.audit == AuditSize(half_width=0.05)
    assert sized_audit(0.05) == 385 and sized_audit(0.025) == 1537  # (1.96 / h)^2 / 4, rounded up
    assert audit_rows(review, 9543) == 385
    plan = plan_budget(review, None, n_rows=9543, n_texts=9543, n_labels=3, trainable=True)
    assert plan.audit == 385 and plan.audit + plan.bootstrap + plan.hard == plan.total
    with pytest.raises(TaskError, match=r"needs up to 1537 audit rows, more than the review budget \(477 rows\).*0\.045"):
        audit_rows(ReviewSpec.model_validate({"budget": 0.05, "audit": {"half_width": 0.025}}), 9543)
    for bad in ({"half_width": 0.7}, {"half_width": 0}, {"half_wdth": 0.1}, {"half_width": 0.1, "rows": 3}):
        with pytest.raises(ValueError, match="is not an audit size"):
            ReviewSpec.model_validate({"audit": bad})
