"""A run's context: everything its steps share, built once (`RunContext.open`) and handed to each step
instead of a clump of six parameters. Where a run's collaborators are made, and how they are wired."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .budget import BudgetPlan
from .engine import Engine
from .progress import Progress
from .registry import Registry
from .review.base import Reviewer
from .review.desk import Opinions, ReviewDesk
from .scoring import Features, Scorer
from .store import RunStore
from .task import ContinualSpec, Task
from .training import Trainer
from .weighing import Weigher, weighed_kinds


@dataclass
class Tuning:
    """Settings that were measured (BENCHMARKS.md, sections 7 and 13), kept so that benchmarks can measure
    them again: typed fields passed to a run, never switches flipped from outside."""

    train_weights: bool = False  # a weighed reviewer's answers are learned from with the belief in each
    corrected_vote_weights: bool = False  # vote weights allow for a weighed reviewer's mistakes in their labels
    trust_correction: bool = True  # calibration and estimate correct for a weighed reviewer's confusion
    second_look: bool = True  # a flagged answer goes on to the next reviewer of a cascade
    audit_trains: bool = True  # the final refit learns from the audit too, which measures it by cross-fitting
    learn_measured: bool = False  # learn a measured weighed reviewer's decided labels, not its answers
    # the share of the audit's inclusion probabilities spread by hardness (`pipeline.bootstrap`, section 15)
    audit_tilt: float = 0.5
    # an audit row a stage picked as hard trains the next stages' versions (and stops gating them): measured
    # no better (BENCHMARKS.md, section 15), and worse on a toy set with a uniform audit: off
    picked_audit_trains: bool = False


@dataclass
class RunContext:
    """The collaborators of one run over one run store."""

    task: Task
    store: RunStore
    features: Features
    registry: Registry
    scorer: Scorer
    trainer: Trainer
    desk: ReviewDesk
    weigher: Weigher
    plan: BudgetPlan
    progress: Progress
    engine: Engine
    tuning: Tuning

    @classmethod
    def open(cls, *, task: Task, store: RunStore, features: Features, registry: Registry, reviewer: Reviewer,
             plan: BudgetPlan, progress: Progress, engine: Engine, tuning: Tuning | None = None) -> RunContext:
        tuning = tuning or Tuning()
        labels = task.label_names
        scorer = Scorer(store, features, registry, labels, task.voting, progress, engine)
        trainer = Trainer(store, registry, features, labels, task.seed, progress, train_weights=tuning.train_weights)
        desk = ReviewDesk(store, reviewer, progress, labels, second_look=tuning.second_look)
        weigher = Weigher(store, labels, weighed_kinds(task.reviewer, reviewer), tuning.learn_measured)
        return cls(task, store, features, registry, scorer, trainer, desk, weigher, plan, progress, engine, tuning)

    @property
    def labels(self) -> list[str]:
        return self.task.label_names

    @property
    def seed(self) -> int:
        return self.task.seed

    @property
    def continual(self) -> ContinualSpec:
        return self.task.continual or ContinualSpec()

    def review(self, ids: Sequence[int], why: str | Mapping[int, str], opinions: Opinions | None = None) -> bool:
        """One round of review, then the weighing of every answer so far (when the round asked anything).
        False while some of `ids` wait for an answer."""
        asked = self.desk.ask(ids, why, opinions)
        if asked.asked:
            self.weigher.weigh()
        return asked.settled

    @property
    def answers_blind(self) -> bool:
        """Whether a weighed reviewer also answers the audit rows a stage would have sent it (`ask_blind`)."""
        return bool(self.desk.blind_reviewers(self.weigher.weighed))

    def review_blind(self, ids: Sequence[int], opinions: Opinions | None = None) -> None:
        """The weighed reviewers' blind answers to audit rows `ids`, then the weighing (when it asked)."""
        if self.desk.ask_blind(ids, self.weigher.weighed, opinions):
            self.weigher.weigh()

    def second_look(self) -> None:
        """Send the rows the last weighing flagged on to the next reviewer of a cascade."""
        if self.desk.second_look().asked:
            self.weigher.weigh()

    def close(self) -> Any:
        self.features.close()
