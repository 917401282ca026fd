"""Continual learning: the stage loop that makes later rows better labeled than earlier ones.

Each stage is a `query` then an `update` (the roles of small-text's pool-based active learner):
- `query(stage)`: score every text with the current specialist versions, send the hardest rows not yet
  reviewed (the query strategy, `routing.HardestFirst`) to the review desk, within the stage's share
  of the budget plan;
- `update(stage)`: hold out a random slice of this stage's reviews (`holdout_split`), fit a candidate
  version of each trainable specialist on every other reviewed row (`candidate`), and promote it only
  if the gate (`NotWorse`) finds it no worse than the current version on that slice, else roll it back.
  Promotions, the held-out measurements and the stage record are committed in one transaction by the
  registry. The slice joins the training rows of the next stage.
After the last stage a final refit on every reviewed row (`continual.rescore`) re-labels the rest.

Stages pick their rows from the whole input, not from their own slice of the stream: on
financial-sentiment at 20% reviewed, 89.3% accuracy against 84.8% for slices, because rows scored by
an early, weak version are revisited by later ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import trust
from .budget import BudgetPlan
from .progress import Progress, SilentProgress
from .registry import Measurement, Promotion, Registry
from .review.desk import ReviewDesk
from .review.weigh import answer_noise
from .routing import HardestFirst
from .scoring import Scorer
from .specialists import Specialist, Updatable
from .store import RunStore
from .task import ContinualSpec
from .training import Trainer, audited, bounded_rows, reviewed


def holdout_split(stage_ids: np.ndarray, fraction: float, seed: int, stage: int) -> np.ndarray:
    """The held-out slice of a stage's reviewed rows: round(fraction * n) of them, drawn at random
    (reproducibly for `seed` and `stage`), sorted."""
    n_hold = int(round(fraction * len(stage_ids)))
    if not n_hold:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed * 1_000_003 + stage)
    return np.sort(rng.choice(stage_ids, n_hold, replace=False))


# Whether the vote weights' accuracies on a stage's new rows allow for a weighed reviewer's mistakes
# in their labels, as the audit accuracies shown do (measured: BENCHMARKS.md section 7).
CORRECTED_VOTE_WEIGHTS = False


@dataclass(frozen=True)
class NotWorse:
    """The promotion gate: a candidate replaces the current version unless, on the same rows, it is
    worse beyond noise: McNemar's one-sided test on the rows only one of them gets right (the rows
    both get right or both get wrong say nothing). A plain "not lower accuracy" rule on a few hundred
    rows rolls back about half the candidates by chance alone. With nothing to compare (no rows, or
    no current version) the candidate is promoted."""

    z: float = 1.645  # one-sided 5%

    def promote(self, current_right: np.ndarray | None, candidate_right: np.ndarray | None) -> bool:
        if current_right is None or candidate_right is None or not len(current_right):
            return True
        lost = int((current_right & ~candidate_right).sum())  # the current one right, the candidate wrong
        won = int((candidate_right & ~current_right).sum())
        return bool(lost - won <= self.z * np.sqrt(lost + won))


class StageLoop:
    """Runs the stages of a run's budget plan, each a `query` and an `update`; see the module doc."""

    def __init__(self, *, store: RunStore, plan: BudgetPlan, registry: Registry, scorer: Scorer,
                 trainer: Trainer, desk: ReviewDesk, strategy: HardestFirst, settings: ContinualSpec | None,
                 labels: list[str], seed: int = 0, gate: NotWorse | None = None, progress: Progress | None = None):
        self.store = store
        self.plan = plan
        self.registry = registry
        self.scorer = scorer
        self.trainer = trainer
        self.desk = desk
        self.strategy = strategy
        self.settings = settings or ContinualSpec()
        self.labels = labels
        self.seed = seed
        self.gate = gate or NotWorse()
        self.progress = progress or SilentProgress()
        self._told_bounded = False

    @property
    def learning(self) -> bool:
        return self.settings.enabled and bool(self.registry.trainable())

    def run(self, wait: bool = True) -> bool:
        """Every stage, then the final refit. Returns False while reviews are pending (with `wait`;
        without, each stage goes on with the answers it has: the others stay in the people's queue)."""
        for stage, budget in enumerate(self.plan.stages):
            if not self.query(stage, budget) and wait:
                return False
            self.update(stage)
        self.cross_fit_priors()
        if self.settings.rescore:
            self.update(len(self.plan.stages), final=True)
        return True

    def cross_fit_priors(self) -> None:
        """Before the final refit, when some reviewer's answers are weighed: a better prior for every
        reviewed row than the vote it had when it was picked: the fixed voters' predictions and the
        out-of-fold probabilities of fresh copies of each refitted head (trained on the other reviewed
        rows), averaged. The answers are weighed again against it, so the final refit learns from the
        decided labels. (Fine-tuned transformers are left out: five fits each would cost too much.)"""
        s = self.store
        step = "cross-fit priors"
        if not self.desk.weighed or s.is_done(step):
            return
        audit = set(s.routed("audit"))
        answers = {t: lab for t, lab in s.labeled_reviews().items() if t not in audit}
        ids = np.array(sorted(answers), np.int64)
        if len(ids):
            y = [answers[int(t)] for t in ids]
            P, names = self.scorer.tensor(ids)
            columns = []
            with self.progress.bar("weighing the reviewers: cross-fitted priors", len(names)) as bar:
                for j, name in enumerate(names):
                    model = self.registry.models[name]
                    if not model.trainable:
                        columns.append(P[:, j])
                    elif not isinstance(model, Updatable):
                        oof = self.trainer.cross_val_proba(name, ids, y)
                        if oof is not None:
                            columns.append(oof)
                    bar.advance()
            if columns:
                stacked = np.stack(columns, axis=1)
                has = ~np.isnan(stacked).any(axis=2)
                mean = np.where(has[..., None], np.nan_to_num(stacked), 0).sum(axis=1)
                mean /= np.maximum(has.sum(axis=1, keepdims=True), 1)
                ok = has.any(axis=1)
                s.put_priors({int(t): mean[i] for i, t in enumerate(ids) if ok[i]}, replace=True)
                self.desk.weigh()
        s.mark_done(step)

    # -- query -------------------------------------------------------------------------------------------
    def query(self, stage: int, budget: int) -> bool:
        """Route this stage's hardest rows (once) and review them. False while answers are pending."""
        s = self.store
        step = f"route:hard:{stage}"
        if not s.is_done(step):
            left = min(budget, max(0, self.plan.total - s.n_routed))
            audit = np.array(s.routed("audit"), np.int64)
            waiting_audit = np.setdiff1d(audit, np.array(list(s.audit_hard()), np.int64))
            # audit rows compete for hardness like any row (so the audit rows never picked are a
            # uniform sample of the rows never reviewed as hard), but are not asked again
            exclude = np.setdiff1d(np.array(s.routed(), np.int64), waiting_audit)
            votes = self.scorer.votes(f"stage {stage + 1} of {len(self.plan.stages)}")
            sel, h = self.strategy.query_stream(votes, left + len(waiting_audit), exclude=exclude)
            is_audit = np.isin(sel, waiting_audit)
            n_take = int(np.searchsorted(np.cumsum(~is_audit), left, side="left")) + 1 if left else 0
            sel, h, is_audit = sel[:n_take], h[:n_take], is_audit[:n_take]
            s.add_routing(sel[~is_audit].tolist(), "hard", h[~is_audit].tolist(), stage, done_step=step,
                          audit_hard=(sel[is_audit].tolist(), h[is_audit].tolist()))
        return self.desk.ask(s.routed("hard", stage), "hard", opinions=self.scorer.opinions)

    # -- update ------------------------------------------------------------------------------------------
    def update(self, stage: int, final: bool = False) -> None:
        """Refit each trainable specialist on every reviewed row, gate, and commit (see the module
        doc). The gate compares a candidate with the current version on the audit sample, which no
        version trains on; the vote weights grow with each version's accuracy on the stage's new rows,
        measured before it trains on them. Without an audit, a random slice of the stage's rows is held
        out for both. The `final` refit is promoted as is: it sees a superset of the rows of the version
        it replaces (with an audit it is still measured on it)."""
        s, reg = self.store, self.registry
        step = "update:final" if final else f"update:{stage}"
        if s.is_done(step) or not self.learning:
            return
        t0 = time.perf_counter()
        all_ids, _ = reviewed(s)
        stage_ids, stage_y = (np.zeros(0, np.int64), []) if final else reviewed(s, s.routed("hard", stage))
        audit_ids, audit_y = audited(s)
        # the decided labels of the stage's rows; the audit's own answers (it measures)
        labels = {**dict(zip(stage_ids.tolist(), stage_y)), **dict(zip(audit_ids.tolist(), audit_y))}
        if len(audit_ids):
            gate_ids, train = audit_ids, all_ids
            weight_ids, basis = stage_ids, "audit"
        else:
            gate_ids = weight_ids = holdout_split(stage_ids, self.settings.holdout, self.seed, stage)
            train, basis = np.setdiff1d(all_ids, gate_ids), "holdout"
        reviewed_rows = len(train)
        train = bounded_rows(train, np.setdiff1d(stage_ids, gate_ids), self.settings.max_train_rows,
                             self.seed * 1_000_003 + 7919 * (stage + 1))
        if len(train) < reviewed_rows and not self._told_bounded:
            self._told_bounded = True
            self.progress.log(f"refits learn from {len(train):,} of the {reviewed_rows:,} reviewed rows (this stage's "
                              "first, then a uniform sample; continual.max_train_rows bounds their memory)")
        y_gate = np.array([self.labels.index(labels[int(t)]) for t in gate_ids], dtype=np.int64)
        y_weight = np.array([self.labels.index(labels[int(t)]) for t in weight_ids], dtype=np.int64)
        # what is shown as an audit accuracy allows for a weighed reviewer's mistakes in the audit's
        # answers (trust.accuracy_against); the gate compares agreement, row by row, which a reviewer
        # wrong at random leaves in the same order; by default the vote weights are left as measured
        noisy = answer_noise(s, gate_ids.tolist(), len(self.labels)) if basis == "audit" else []
        before_pred = self._current_pred(gate_ids)
        before_right = {n: p == y_gate for n, p in before_pred.items()}
        before_acc = {n: float(r.mean()) for n, r in before_right.items()}
        shown = {n: trust.accuracy_against(p, y_gate, noisy) for n, p in before_pred.items()} if noisy else before_acc
        if basis == "holdout":
            weight_acc = before_acc
        else:
            w_noisy = answer_noise(s, weight_ids.tolist(), len(self.labels)) if CORRECTED_VOTE_WEIGHTS else []
            weight_acc = {n: trust.accuracy_against(p, y_weight, w_noisy)
                          for n, p in self._current_pred(weight_ids).items()}
        metrics: dict[str, Any] = {"stage": stage, "final": final, "gate": basis, "train_rows": int(len(train)),
                                   "reviewed_rows": int(reviewed_rows),
                                   "holdout_rows": int(len(gate_ids)) if basis == "holdout" else 0,
                                   "audit_rows": int(len(gate_ids)) if basis == "audit" else 0,
                                   "specialists": {}}
        if basis == "audit":
            metrics["audit_vote_accuracy"] = self._vote_accuracy(gate_ids, y_gate, noisy)
            if noisy:
                metrics["audit_corrected_rows"] = int(sum(m.sum() for m, _ in noisy))
        promotions: list[Promotion] = []
        measurements: list[Measurement] = []
        for name, model in reg.models.items():
            entry: dict[str, Any] = {}
            before = shown.get(name)
            gated, version = before, reg.versions[name]
            if model.trainable and len(train) and not reg.same_rows(name, train):
                t1 = time.perf_counter()
                new_version = reg.versions[name] + 1
                cand = self.candidate(name, model, train, stage)
                reg.save_checkpoint(cand, new_version)  # type: ignore[arg-type]
                after_pred = self.trainer.predict(cand, gate_ids)
                after_right = None if after_pred is None else after_pred == y_gate
                after = None if after_pred is None else trust.accuracy_against(after_pred, y_gate, noisy)
                promote = final or self.gate.promote(before_right.get(name), after_right)
                entry.update(version_before=reg.versions[name], accuracy_after=after, promoted=promote,
                             fit_seconds=round(time.perf_counter() - t1, 3))
                if promote:
                    promotions.append(Promotion(name, cand, new_version, train,
                                                {"accuracy_after": after, "fit_seconds": entry["fit_seconds"]}))
                    gated, version = after, new_version
                else:
                    reg.discard(name, new_version)
            entry["accuracy_before"] = before
            if gated is not None and len(gate_ids):
                measurements.append(Measurement(name, version, gated, int(len(gate_ids)), stage, on=basis))
            if basis == "audit" and weight_acc.get(name) is not None and len(weight_ids):
                # the current version, on rows it had not seen (the stage's new ones): its vote weight
                measurements.append(Measurement(name, reg.versions[name], weight_acc[name], int(len(weight_ids)),
                                                stage, on="stage"))
            metrics["specialists"][name] = entry
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        reg.commit(promotions, measurements, stage=stage, stage_metrics=metrics, done_step=step)

    def _current_pred(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Each current voter's label index for rows `ids` (-1: abstained), from its stored predictions."""
        if not len(ids):
            return {}
        P, names = self.scorer.tensor(ids)
        return {name: np.where(np.isnan(P[:, j]).any(axis=1), -1, np.nan_to_num(P[:, j]).argmax(axis=1))
                for j, name in enumerate(names)}

    def _current_right(self, ids: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Which of rows `ids` (labels `y`) each current voter gets right, from its stored predictions."""
        return {name: pred == y for name, pred in self._current_pred(ids).items()}

    def _vote_accuracy(self, ids: np.ndarray, y: np.ndarray, noisy: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
        """The current vote's accuracy on rows `ids` (the audit: for the per-stage plot)."""
        if not len(ids) or not self.registry.voters():
            return None
        # the vote as routing and finalize see it (Dawid-Skene fitted on every row)
        return trust.accuracy_against(self.scorer.vote(ids).result.label, y, noisy)

    def candidate(self, name: str, model: Specialist, train: np.ndarray, stage: int) -> Specialist:
        """The next version of a trainable specialist. Cheap heads are refitted from scratch on every
        reviewed row (the complete replay). An `Updatable` one (a fine-tuned transformer, minutes per
        fit) continues from its current weights on the rows new since its last version plus a replay
        sample of `continual.replay` earlier rows, so it neither forgets nor retrains on everything."""
        reg = self.registry
        current = reg.versions[name]
        if not (isinstance(model, Updatable) and current > 0):
            return self.trainer.fit(self.trainer.new(name), train)
        cand = reg.load(name, current)
        before = reg.train_ids(name, current)
        new, old = np.setdiff1d(train, before), np.intersect1d(train, before)
        rng = np.random.default_rng(self.seed * 1_000_003 + 31 * (stage + 1))
        old = rng.choice(old, min(self.settings.replay, len(old)), replace=False) if len(old) else old
        return self.trainer.fit(cand, np.union1d(new, old), update=True)
