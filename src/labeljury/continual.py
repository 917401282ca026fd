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
A stopping criterion (small-text's role of the same name) may end the stages early; by default none does.

Stages pick their rows from the whole input, not from their own slice of the stream: on
financial-sentiment at 20% reviewed, 89.3% accuracy against 84.8% for slices, because rows scored by
an early, weak version are revisited by later ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import trust
from .registry import Measurement, Promotion
from .routing import HardestFirst
from .sources import AUDIT, AUDIT_OOF, FINAL_UPDATE, HARD, route_hard
from .sources import update as update_step
from .specialists import Specialist, Updatable
from .training import audit_weights, audited, bounded_rows, reviewed
from .voting import hard_labels
from .weighing import answer_noise

if TYPE_CHECKING:
    from .context import RunContext


def holdout_split(stage_ids: np.ndarray, fraction: float, seed: int, stage: int) -> np.ndarray:
    """The held-out slice of a stage's reviewed rows: round(fraction * n) of them, drawn at random
    (reproducibly for `seed` and `stage`), sorted."""
    n_hold = int(round(fraction * len(stage_ids)))
    if not n_hold:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed * 1_000_003 + stage)
    return np.sort(rng.choice(stage_ids, n_hold, replace=False))


class StoppingCriterion(Protocol):
    """Decides, after each stage, whether the stages that remain are worth their reviews."""

    def stop(self, stages: list[dict[str, Any]]) -> bool:
        """`stages`: the metrics of every stage so far (the run store's `stages`), oldest first."""
        ...


@dataclass(frozen=True)
class NeverStop:
    """Every stage of the budget plan runs (the default)."""

    def stop(self, stages: list[dict[str, Any]]) -> bool:
        return False


@dataclass(frozen=True)
class NoImprovement:
    """Stop when the vote's accuracy on the audit rows has not risen by more than `min_delta` over its
    best before the last `patience` stages (small-text's `DeltaFScore` in spirit). Needs an audit."""

    patience: int = 2
    min_delta: float = 0.0

    def stop(self, stages: list[dict[str, Any]]) -> bool:
        acc = [m["audit_vote_accuracy"] for m in stages
               if not m.get("final") and m.get("audit_vote_accuracy") is not None]
        if len(acc) <= self.patience:
            return False
        return max(acc[-self.patience:]) <= max(acc[:-self.patience]) + self.min_delta


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


@dataclass(frozen=True)
class UpdateRows:
    """The rows of one update: what trains the candidates, what gates them, what measures the vote weights."""

    train: np.ndarray
    reviewed: int  # reviewed rows that could train (before `continual.max_train_rows`)
    basis: str  # "audit" (the gate's rows are the audit sample) or "holdout" (a slice of the stage's)
    gate_ids: np.ndarray
    y_gate: np.ndarray
    weight_ids: np.ndarray
    y_weight: np.ndarray
    # the final refit's: audit rows it also trains on (the gate's rows), measured by cross-fitting
    audit_train: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # each gate row's weight in an accuracy shown (audit rows: (1 - pi)/pi, `training.audit_weights`); None: equal
    w_gate: np.ndarray | None = None


@dataclass(frozen=True)
class CurrentVersions:
    """The current versions, measured before any candidate: row by row on the gate's rows, their accuracy
    as shown, and on the vote weights' rows; `noisy`: a weighed reviewer's confusion over the gate's rows."""

    noisy: list[tuple[np.ndarray, np.ndarray]]
    right: dict[str, np.ndarray]
    shown: dict[str, float]
    weight_acc: dict[str, float | None]


class StageLoop:
    """Runs the stages of a run's budget plan, each a `query` and an `update`; see the module doc."""

    def __init__(self, ctx: RunContext, strategy: HardestFirst, gate: NotWorse | None = None,
                 stopping: StoppingCriterion | None = None):
        self.ctx = ctx
        self.store, self.plan, self.registry = ctx.store, ctx.plan, ctx.registry
        self.scorer, self.trainer, self.progress = ctx.scorer, ctx.trainer, ctx.progress
        self.settings, self.labels, self.seed = ctx.continual, ctx.labels, ctx.seed
        self.strategy = strategy  # the query strategy: which rows are hardest
        self.gate = gate or NotWorse()  # promote a candidate or roll it back
        self.stopping = stopping or NeverStop()  # whether the stages left are worth their reviews
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
            if stage + 1 < len(self.plan.stages) and self.stopping.stop(self.store.stages()):
                if self.store.get_meta("stopped_after_stage") is None:
                    unspent = sum(self.plan.stages[stage + 1:])
                    self.store.set_meta("stopped_after_stage", stage)
                    self.store.set_meta("unspent_reviews", unspent)
                    self.progress.log(f"stopped after stage {stage + 1} of {len(self.plan.stages)}: the stages no "
                                      f"longer raise the vote's accuracy on the audit (the stopping criterion); "
                                      f"{unspent} reviews of the budget are left unspent")
                break
        self.ctx.weigher.cross_fit_priors(self.scorer, self.trainer, self.progress)
        if self.settings.rescore:
            self.update(len(self.plan.stages), final=True)
        return True

    # -- query -------------------------------------------------------------------------------------------
    def query(self, stage: int, budget: int) -> bool:
        """Route this stage's hardest rows (once) and review them. False while answers are pending."""
        s = self.store
        step = route_hard(stage)
        blind = self.ctx.answers_blind
        if not s.is_done(step):
            audit_hard = s.audit_hard()
            # a weighed reviewer answering audit rows blind spends a review on each (within the budget)
            left = min(budget, max(0, self.plan.total - s.n_routed - (len(audit_hard) if blind else 0)))
            audit = np.array(s.routed(AUDIT), np.int64)
            waiting_audit = np.setdiff1d(audit, np.array(list(audit_hard), np.int64))
            # audit rows compete for hardness like any row (so the audit rows never picked are a
            # uniform sample of the rows never reviewed as hard), but are not asked again
            exclude = np.setdiff1d(np.array(s.routed(), np.int64), waiting_audit)
            votes = self.scorer.votes(f"stage {stage + 1} of {len(self.plan.stages)}")
            sel, h = self.strategy.query_stream(votes, left + len(waiting_audit), exclude=exclude)
            is_audit = np.isin(sel, waiting_audit)
            costs = np.ones(len(sel), bool) if blind else ~is_audit
            n_take = int(np.searchsorted(np.cumsum(costs), left, side="left")) + 1 if left else 0
            sel, h, is_audit = sel[:n_take], h[:n_take], is_audit[:n_take]
            s.add_routing(sel[~is_audit].tolist(), HARD, h[~is_audit].tolist(), stage, done_step=step,
                          audit_hard=(sel[is_audit].tolist(), h[is_audit].tolist()))
        if blind:  # the audit rows this stage would have sent: answered blind too, to measure the reviewer
            self.ctx.review_blind(sorted(t for t, st in s.audit_hard().items() if st == stage),
                                  opinions=self.scorer.opinions)
        return self.ctx.review(s.routed(HARD, stage), HARD, opinions=self.scorer.opinions)

    # -- update ------------------------------------------------------------------------------------------
    def update(self, stage: int, final: bool = False) -> None:
        """Refit each trainable specialist on every reviewed row, gate, and commit (see the module
        doc). The gate compares a candidate with the current version on the audit sample, which no
        version trains on; the vote weights grow with each version's accuracy on the stage's new rows,
        measured before it trains on them. Without an audit, a random slice of the stage's rows is held
        out for both. The `final` refit is promoted as is: it sees a superset of the rows of the version
        it replaces (with an audit it is still measured on it)."""
        s, reg = self.store, self.registry
        step = FINAL_UPDATE if final else update_step(stage)
        if s.is_done(step) or not self.learning:
            return
        t0 = time.perf_counter()
        rows = self._split(stage, final)
        before = self._measure_current(rows)
        metrics: dict[str, Any] = {"stage": stage, "final": final, "gate": rows.basis, "train_rows": int(len(rows.train) + len(rows.audit_train)),
                                   "reviewed_rows": int(rows.reviewed),
                                   "holdout_rows": int(len(rows.gate_ids)) if rows.basis == "holdout" else 0,
                                   "audit_rows": int(len(rows.gate_ids)) if rows.basis == "audit" else 0,
                                   "specialists": {}}
        if rows.basis == "audit":
            metrics["audit_vote_accuracy"] = self._vote_accuracy(rows.gate_ids, rows.y_gate, before.noisy, rows.w_gate)
            if before.noisy:
                metrics["audit_corrected_rows"] = int(sum(m.sum() for m, _ in before.noisy))
        promotions: list[Promotion] = []
        measurements: list[Measurement] = []
        self._audit_oof: dict[str, dict[str, Any]] = {}
        for name, model in reg.models.items():
            entry, promotion, measured = self._refit(name, model, stage, final, rows, before)
            promotions += [promotion] if promotion is not None else []
            measurements += measured
            metrics["specialists"][name] = entry
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        if len(rows.audit_train):
            metrics["audit_trained"] = int(len(rows.audit_train))
            # kept before the commit: a run killed in between refits again and overwrites it
            s.set_meta(AUDIT_OOF, {"ids": rows.audit_train.tolist(), "specialists": self._audit_oof})
        reg.commit(promotions, measurements, stage=stage, stage_metrics=metrics, done_step=step)

    def _split(self, stage: int, final: bool) -> UpdateRows:
        """Which reviewed rows train the candidates, which gate them, which measure the vote weights."""
        s = self.store
        all_ids, _ = reviewed(s)
        stage_ids, stage_y = (np.zeros(0, np.int64), []) if final else reviewed(s, s.routed(HARD, stage))
        audit_ids, audit_y = audited(s)
        # the decided labels of the stage's rows; the audit's own answers (it measures)
        labels = {**dict(zip(stage_ids.tolist(), stage_y)), **dict(zip(audit_ids.tolist(), audit_y))}
        # With `Tuning.picked_audit_trains` (off: measured no better), an audit row a stage picked as hard is
        # one of that stage's rows: the stages after it learn from it, and it gates nothing (the audit rows no
        # stage picked measure: `trust`). The final refit learns from every audit row, measured by cross-fitting.
        hard_audit = s.audit_hard() if len(audit_ids) and self.ctx.tuning.picked_audit_trains else {}
        picked = np.intersect1d(audit_ids, np.array(sorted(t for t, st in hard_audit.items() if st <= stage), np.int64))
        if len(audit_ids):
            gate_ids = np.setdiff1d(audit_ids, picked)
            train = all_ids if final else np.union1d(all_ids, picked)
            this_stage = np.intersect1d(picked, np.array(sorted(t for t, st in hard_audit.items() if st == stage),
                                                         np.int64))
            weight_ids = stage_ids = np.union1d(stage_ids, this_stage)
            basis = "audit"
        else:
            gate_ids = weight_ids = holdout_split(stage_ids, self.settings.holdout, self.seed, stage)
            train, basis = np.setdiff1d(all_ids, gate_ids), "holdout"
        reviewed_rows = len(train)
        cap = self.settings.max_train_rows
        audit_train = audit_ids if final and len(audit_ids) and self.ctx.tuning.audit_trains else np.zeros(0, np.int64)
        if cap is not None and len(audit_train):
            # the final refit's audit rows count toward continual.max_train_rows too: at most half of it (a
            # uniform sample; the audit rows it leaves out are measured by the final version itself)
            audit_train = bounded_rows(audit_train, np.zeros(0, np.int64), max(cap // 2, 1), self.seed + 7)
            cap -= len(audit_train)
            reviewed_rows += len(audit_ids)
        train = bounded_rows(train, np.setdiff1d(stage_ids, gate_ids), cap,
                             self.seed * 1_000_003 + 7919 * (stage + 1))
        if len(train) + len(audit_train) < reviewed_rows and not self._told_bounded:
            self._told_bounded = True
            self.progress.log(f"refits learn from {len(train) + len(audit_train):,} of the {reviewed_rows:,} reviewed rows (this stage's "
                              "first, then a uniform sample; continual.max_train_rows bounds their memory)")
        index = self.labels.index
        return UpdateRows(train, reviewed_rows, basis, gate_ids,
                          np.array([index(labels[int(t)]) for t in gate_ids], dtype=np.int64), weight_ids,
                          np.array([index(labels[int(t)]) for t in weight_ids], dtype=np.int64), audit_train,
                          audit_weights(s, gate_ids) if basis == "audit" else None)

    def _measure_current(self, rows: UpdateRows) -> CurrentVersions:
        """The current versions on the gate's rows and on the vote weights' rows. What is shown as an
        audit accuracy allows for a weighed reviewer's mistakes in the audit's answers
        (trust.accuracy_against); the gate compares agreement, row by row, which a reviewer wrong at
        random leaves in the same order; by default the vote weights are left as measured."""
        noisy = answer_noise(self.store, rows.gate_ids.tolist(), len(self.labels)) if rows.basis == "audit" else []
        before_pred = self._current_pred(rows.gate_ids)
        right = {n: p == rows.y_gate for n, p in before_pred.items()}
        acc = {n: float(np.average(r, weights=rows.w_gate)) for n, r in right.items()}
        shown = ({n: trust.accuracy_against(p, rows.y_gate, noisy, rows.w_gate) for n, p in before_pred.items()}
                 if noisy else acc)
        if rows.basis == "holdout":
            weight_acc = acc
        else:
            w_noisy = (answer_noise(self.store, rows.weight_ids.tolist(), len(self.labels))
                       if self.ctx.tuning.corrected_vote_weights else [])
            weight_acc = {n: trust.accuracy_against(p, rows.y_weight, w_noisy)
                          for n, p in self._current_pred(rows.weight_ids).items()}
        return CurrentVersions(noisy, right, shown, weight_acc)

    def _refit(self, name: str, model: Specialist, stage: int, final: bool, rows: UpdateRows,
               before: CurrentVersions) -> tuple[dict[str, Any], Promotion | None, list[Measurement]]:
        """One specialist's candidate (when it is trainable and has new rows), gated against its current
        version: (its stage record, the promotion or None, its measurements)."""
        reg = self.registry
        entry: dict[str, Any] = {}
        promotion = None
        shown = before.shown.get(name)
        gated, version = shown, reg.versions[name]
        # the final refit of a head also learns from the audit rows, which then measure it by cross-fitting
        # (a fine-tuned transformer is not refitted ten more times: it keeps off the audit)
        cross_fit = bool(len(rows.audit_train)) and not isinstance(model, Updatable)
        train = np.union1d(rows.train, rows.audit_train) if cross_fit else rows.train
        if model.trainable and len(train) and not reg.same_rows(name, train):
            t1 = time.perf_counter()
            new_version = reg.versions[name] + 1
            # `train` may hold audit rows: a stage's picked ones, the final refit's (`_split`)
            cand = self.candidate(name, model, train, stage, with_audit=True)
            reg.save_checkpoint(cand, new_version)  # type: ignore[arg-type]
            after_pred = self.trainer.predict(cand, rows.gate_ids)
            if cross_fit and after_pred is not None:
                # each audit row it learned from predicted by a copy fitted without it: what the audit measures
                oof = self.trainer.audit_cross_fit(name, rows.train, rows.audit_train)
                self._audit_oof[name] = {"version": new_version, "probs": np.round(oof, 5).tolist()}
                at = np.minimum(np.searchsorted(rows.audit_train, rows.gate_ids), len(rows.audit_train) - 1)
                learned = rows.audit_train[at] == rows.gate_ids
                after_pred[learned] = hard_labels(oof)[at[learned]]
            after_right = None if after_pred is None else after_pred == rows.y_gate
            after = None if after_pred is None else trust.accuracy_against(after_pred, rows.y_gate, before.noisy,
                                                                           rows.w_gate)
            promote = final or self.gate.promote(before.right.get(name), after_right)
            entry.update(version_before=reg.versions[name], accuracy_after=after, promoted=promote,
                         fit_seconds=round(time.perf_counter() - t1, 3))
            if promote:
                promotion = Promotion(name, cand, new_version, train,
                                      {"accuracy_after": after, "fit_seconds": entry["fit_seconds"]})
                gated, version = after, new_version
            else:
                reg.discard(name, new_version)
        entry["accuracy_before"] = shown
        measured = []
        if gated is not None and len(rows.gate_ids):
            measured.append(Measurement(name, version, gated, int(len(rows.gate_ids)), stage, on=rows.basis))
        if final and promotion is not None and rows.basis == "holdout" and not isinstance(model, Updatable):
            # no audit and nothing held out of the final refit: the version it makes (the one
            # `export-model` writes) is measured by cross-validation on the rows it trained on
            cv = self._cross_validated(name, rows.train)
            if cv is not None:
                measured.append(Measurement(name, promotion.version, cv[0], cv[1], stage, on="cv"))
        if rows.basis == "audit" and before.weight_acc.get(name) is not None and len(rows.weight_ids):
            # the current version, on rows it had not seen (the stage's new ones): its vote weight
            measured.append(Measurement(name, reg.versions[name], before.weight_acc[name], int(len(rows.weight_ids)),
                                        stage, on="stage"))
        return entry, promotion, measured

    def _cross_validated(self, name: str, ids: np.ndarray) -> tuple[float, int] | None:
        """(accuracy, rows) of out-of-fold copies of `name` on the reviewed rows `ids`; None when a
        label is too rare to fold."""
        all_ids, all_y = reviewed(self.store)
        label_of = dict(zip(all_ids.tolist(), all_y))
        y = [label_of[int(t)] for t in ids]
        pred = self.trainer.cross_val_predict(name, ids, y)
        scored = pred >= 0
        if not scored.any():
            return None
        truth = np.array([self.labels.index(v) for v in y])
        return float((pred[scored] == truth[scored]).mean()), int(scored.sum())

    def _current_pred(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Each current voter's label index for rows `ids` (-1: abstained), from its stored predictions."""
        if not len(ids):
            return {}
        P, names = self.scorer.tensor(ids)
        return {name: hard_labels(P[:, j]) for j, name in enumerate(names)}

    def _vote_accuracy(self, ids: np.ndarray, y: np.ndarray, noisy: list[tuple[np.ndarray, np.ndarray]],
                       weight: np.ndarray | None = None) -> float | None:
        """The current vote's accuracy on rows `ids` (the audit, each row weighing (1 - pi)/pi: for the per-stage plot)."""
        if not len(ids) or not self.registry.voters():
            return None
        # the vote as routing and finalize see it (Dawid-Skene fitted on every row)
        return trust.accuracy_against(self.scorer.vote(ids).result.label, y, noisy, weight)

    def candidate(self, name: str, model: Specialist, train: np.ndarray, stage: int,
                  with_audit: bool = False) -> Specialist:
        """The next version of a trainable specialist. Cheap heads are refitted from scratch on every
        reviewed row (the complete replay). An `Updatable` one (a fine-tuned transformer, minutes per
        fit) continues from its current weights on the rows new since its last version plus a replay
        sample of `continual.replay` earlier rows, so it neither forgets nor retrains on everything."""
        reg = self.registry
        current = reg.versions[name]
        if not (isinstance(model, Updatable) and current > 0):
            return self.trainer.fit(self.trainer.new(name), train, with_audit=with_audit)
        cand = reg.load(name, current)
        before = reg.train_ids(name, current)
        new, old = np.setdiff1d(train, before), np.intersect1d(train, before)
        rng = np.random.default_rng(self.seed * 1_000_003 + 31 * (stage + 1))
        old = rng.choice(old, min(self.settings.replay, len(old)), replace=False) if len(old) else old
        return self.trainer.fit(cand, np.union1d(new, old), update=True, with_audit=with_audit)
