"""The stage loop's stopping criterion: off by default, and when given, it ends the stages early, says so,
leaves the rest of the budget unspent, and stays stopped when the run resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labeljury import load_task, run
from labeljury.continual import NeverStop, NoImprovement
from labeljury.store import RunStore

from .conftest import write_task


def stage(acc: float | None, final: bool = False) -> dict[str, Any]:
    return {"audit_vote_accuracy": acc, "final": final}


def test_no_improvement_waits_for_its_patience_then_stops_on_a_plateau() -> None:
    rule = NoImprovement(patience=2, min_delta=0.01)
    assert not rule.stop([stage(0.70), stage(0.72)])  # too few stages to judge
    assert not rule.stop([stage(0.70), stage(0.72), stage(0.75)])  # the last two beat the best before them
    assert rule.stop([stage(0.70), stage(0.80), stage(0.805), stage(0.79)])  # +0.005 <= min_delta
    assert not rule.stop([stage(0.70), stage(0.80), stage(0.79), stage(0.82)])
    assert not rule.stop([stage(None), stage(None), stage(None)])  # no audit: nothing to judge by
    assert not NeverStop().stop([stage(0.7)] * 10)


class AfterStages:
    """Stops once `n` stages have run (whatever they measured)."""

    def __init__(self, n: int):
        self.n = n

    def stop(self, stages: list[dict[str, Any]]) -> bool:
        return len([m for m in stages if not m.get("final")]) >= self.n


def test_a_stopping_criterion_ends_the_stages_and_the_run_stays_stopped(tmp_path: Path, toy_csv: Path) -> None:
    task = load_task(write_task(tmp_path / "t.yaml", budget=0.3))
    full = run(task, toy_csv, tmp_path / "full.csv")
    stopped = run(task, toy_csv, tmp_path / "stopped.csv", stopping=AfterStages(1))
    assert stopped.status == full.status == "complete"
    assert full.reviews == full.budget and stopped.reviews < full.reviews  # the rest of the budget unspent
    with RunStore.existing(stopped.run_dir) as s:
        assert s.get_meta("stopped_after_stage") == 0
        plan_stages = len(s.get_meta("budget_plan")["stages"])
        assert plan_stages > 1 and s.routed("hard", stage=0) and not s.routed("hard", stage=1)
        assert [m["final"] for m in s.stages()] == [False, True]  # one stage, then the final refit
    again = run(task, toy_csv, tmp_path / "stopped.csv", stopping=AfterStages(1))  # resumed: still stopped
    assert again.reviews == stopped.reviews
