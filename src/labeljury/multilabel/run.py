"""The run of a multi-label task (`multi_label: true`): the pipeline's steps, for label sets.

    ingest -> encode -> audit (uniform) + first sample (by the labels' names, and at random) -> review
           -> stages (fit the heads, route the hardest rows, review) -> final fit -> finalize -> export

The same run store, budget, reviewers and resume as a single-label run: each step records what it
finished, every answer is stored as it arrives, and a rerun skips what is done. A set is stored as the
task's label names joined by its separator (`LabelSets.text`).

What differs: the specialists give every label its own probability (`multilabel.specialists`: by default
two one-vs-rest heads, `multilabel.heads`), which the task's vote combines per label (`multilabel.vote`);
a hub model's scores are computed once per text after the encoder pass; the first sample seeds every label by rows that resemble its name
or description, so a rare label has positives from the start; every stage and the final heads learn from
every answered row, the audit's included, while each row is ranked by heads that did not learn from it; the
trust layer (`multilabel.trust`) calibrates and estimates on the audit rows no stage picked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..budget import audit_rows, bootstrap_rows, budget_rows
from ..engine import Engine, make_engine
from ..errors import TaskError
from ..labelsets import LabelSets
from ..progress import Progress, SilentProgress
from ..review.base import Checked, Closeable, Queued, Reviewer
from ..sources import (
    AUDIT,
    BOOTSTRAP,
    FINALIZE,
    HARD,
    ROUTE_AUDIT,
    ROUTE_BOOTSTRAP,
    VOTE,
    route_hard,
)
from ..specialists import DEFAULT_ENCODER
from ..store import RunStore, check_run_dir, storage_errors
from ..task import ContinualSpec, Task
from . import trust, vote
from .batches import compare_with_earlier, drifted
from .export import SCRIPT, SetModel, annotate_script, save_set_model, score_of
from .review import SetDesk, make_set_reviewer
from .routing import route_first
from .specialists import (
    AUTO,
    AUTO_BEFORE_ZEROSHOT,
    Head,
    SetSpecialist,
    score_hub_models,
    set_specialists,
)
from .trust import ESTIMATE
from .views import Views

if TYPE_CHECKING:
    from ..pipeline import RunReport

STAGES = 8  # rounds of routing (BENCHMARKS.md, section 19: the baseline's eight)
MIN_STAGE_REVIEWS = 25
FIRST_SHARE = 0.1  # the first sample: a tenth of the reviews not in the audit, half of it by the labels' names
PLAN = "budget_plan"
AUTO_META = "set_specialists_auto"  # the specialists `auto` stood for when the run began
SHOWN_LABEL_CONFIDENCE = 0.01  # `--details` lists each label whose calibrated probability reaches this
FOLDS = 5  # the audit's parts: an audit row is scored by heads that did not learn from its part


@dataclass(frozen=True)
class SetPlan:
    total: int
    audit: int
    bootstrap: int
    stages: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stages": list(self.stages), "kind": "multi-label"}


def plan_sets(task: Task, n_rows: int, n_texts: int, first_sample: bool = True) -> SetPlan:
    """The budget's rows: the audit, the first sample (none for a batch that continues an earlier one without
    drifting: the heads start from its reviewed rows), the stages."""
    review, continual = task.review, task.continual or ContinualSpec()
    total = min(budget_rows(review, n_rows), n_texts)
    audit = min(audit_rows(review, n_rows), total)
    if audit < trust.MIN_AUDIT:
        audit = 0
    rest = total - audit
    first = bootstrap_rows(review, n_rows, 0) if review.bootstrap is not None else max(min(10, rest), int(FIRST_SHARE * rest))
    first = min(first, rest) if first_sample else 0
    hard = rest - first
    if not continual.enabled:
        n = 1
    elif continual.stage_size:
        n = math.ceil(hard / continual.stage_size)
    else:
        n = min(STAGES, hard // MIN_STAGE_REVIEWS)
    n = max(1, n) if hard else 0
    base, extra = divmod(hard, n) if n else (0, 0)
    return SetPlan(total, audit, first, tuple(base + (i < extra) for i in range(n)))


def unused_settings(task: Task) -> list[str]:
    """The task file's settings, given with other than their default values, that a multi-label run does not use
    (refused rather than ignored)."""
    top = ["continual"] if "continual" in task.model_fields_set and task.continual != Task.model_fields[
        "continual"].default else []
    review = task.review
    fields = type(review).model_fields
    return top + [f"review.{k}" for k in ("policy", "threshold", "bootstrap", "audit_sampling", "stop_early")
                  if k in review.model_fields_set and getattr(review, k) != fields[k].default]


class _Ensemble:
    """The specialists' fitted heads and the vote over them: probabilities per label for any rows' views."""

    def __init__(self, heads: list[tuple[SetSpecialist, Head]], vote: vote.SetVote):
        self.heads = heads
        self.vote = vote

    def each(self, X: dict[str, Any]) -> list[np.ndarray]:  # noqa: N803
        return [head.predict_proba(X[s.view]) for s, head in self.heads]

    def __call__(self, X: dict[str, Any]) -> np.ndarray:  # noqa: N803
        return self.vote(self.each(X))


class SetAnnotator:
    """One run of a multi-label task over one input, backed by one run directory."""

    def __init__(self, task: Task, input_path: str | Path, run_dir: str | Path, reviewer: Reviewer | None = None,
                 progress: Progress | None = None, engine: Engine | None = None, combine: str | None = None,
                 set_calibration: str = "platt", from_run: str | Path | None = None):
        if not task.multi_label:
            raise TaskError("SetAnnotator labels multi-label tasks; this task is single-label (use `pipeline.run`)")
        self.task = task
        self.sets: LabelSets = task.label_sets  # type: ignore[assignment]
        self.input_path = Path(input_path)
        self.run_dir = Path(run_dir)
        self.reviewer = reviewer
        self.progress = progress or SilentProgress()
        self.engine = engine
        self.combine = combine or task.set_voting  # the vote (`multilabel.vote.VOTES`): the task's unless given
        vote.SetVote(self.combine)  # an unknown name fails here, before anything is written
        self.specialists: list[SetSpecialist] = []
        self._blind: dict[str, tuple[Any, Any]] = {}  # an audit-blind specialist's last fit, by its training rows
        self.set_calibration = set_calibration  # `trust.Calibration`'s map of the row's confidence
        self.from_run = None if from_run is None else Path(from_run)  # the earlier batch's run this one continues

    def run(self, output: str | Path | None = None, details: bool = False, finish: bool = False) -> RunReport:
        """Run (or resume) to the end, or until reviews must wait for a person (status "waiting"); as
        `pipeline.Annotator.run`."""
        with storage_errors(self.run_dir):
            return self._run(output, details, finish)

    # -- the steps -------------------------------------------------------------------------------------
    def _run(self, output: str | Path | None, details: bool, finish: bool) -> RunReport:
        from ..pipeline import check_input_and_output, export, open_run_store
        from ..pipeline.encode import encode
        from ..pipeline.ingest import ingest

        task, progress = self.task, self.progress
        unused = unused_settings(task)
        if unused:
            raise TaskError(f"a multi-label run does not use {', '.join(f'`{k}`' for k in unused)}: its stages are "
                            "fixed (eight, ranking rows by the labels they may get wrong), and its audit is drawn "
                            "uniformly; remove them from the task file")
        self.specialists = set_specialists(task, progress.log)
        check_input_and_output(self.input_path, task.text_column, output)
        check_run_dir(self.run_dir)
        reviewer = self.reviewer or make_set_reviewer(task, self.input_path, self.run_dir)
        self.reviewer = reviewer
        self.desk = SetDesk(task, self.sets, reviewer, progress)
        if isinstance(reviewer, Checked):
            reviewer.check()
        if self.from_run is not None:
            from ..pipeline.carry import check_earlier

            earlier = check_earlier(self.from_run, task)
            if not earlier.get("multi_label") or earlier.get("label_separator") != task.model_dump(
                    mode="json").get("label_separator"):
                raise TaskError(f"--from {str(self.from_run)!r} was not a multi-label run with this task's label_separator; "
                                "a multi-label run continues a multi-label run of the same task")
        store = open_run_store(self.run_dir, task, self.input_path, output, self.from_run)
        engine = self.engine or make_engine(task.engine)
        try:
            if task.specialists == "auto":  # a run keeps the `auto` it began with (a run made before goes on)
                began = store.get_meta(AUTO_META)
                if began is None:
                    began = list(AUTO_BEFORE_ZEROSHOT if store.is_done(ROUTE_AUDIT) else AUTO)
                    store.set_meta(AUTO_META, began)
                if tuple(began) != AUTO:
                    self.specialists = set_specialists(task, progress.log, auto=began)
            ingest(store, self.input_path, task.text_column, progress)
            if self.from_run is not None:
                from ..pipeline.carry import carry
                from ..task import MAX_TRAIN_ROWS

                carry(store, self.from_run, progress, task.seed, cap=MAX_TRAIN_ROWS)
            encode(store, [DEFAULT_ENCODER], progress, engine)
            score_hub_models(store, self.specialists, progress)
            fresh = drifted(store, task.seed, progress) if self.from_run is not None else True
            plan = self._plan(store, first_sample=fresh)
            rng = np.random.default_rng(task.seed)
            if not store.is_done(ROUTE_AUDIT):
                n = store.n_input_texts
                audit = np.sort(rng.choice(n, plan.audit, replace=False)) if plan.audit else np.zeros(0, np.int64)
                store.add_routing(audit.tolist(), AUDIT, None, 0, done_step=ROUTE_AUDIT)
            views = Views(store, task.seed, self.specialists)
            if not store.is_done(ROUTE_BOOTSTRAP):
                route_first(store, views, task, plan.bootstrap)
            if not self.desk.review(store, store.routed(AUDIT) + store.routed(BOOTSTRAP), finish):
                return self._report(store, "waiting", None)
            for i, k in enumerate(plan.stages):
                if not store.is_done(route_hard(i)):
                    self._route_stage(store, views, i, k)
                    found = store.stages()[-1]
                    progress.log(f"stage {i + 1}/{len(plan.stages)}: {found['routed']} hardest rows to review"
                                 + (f" ({found['audit_rows_found_hard']} audit rows among them, not asked again)"
                                    if found["audit_rows_found_hard"] else ""))
                self.desk.measure_first_reviewer(store, i)
                if not self.desk.review(store, store.routed(HARD, stage=i), finish):
                    return self._report(store, "waiting", None)
            if not store.is_done(FINALIZE):
                self._finalize(store, views)
            said = store.get_meta(ESTIMATE) or {}
            for e in said.get("estimates") or []:
                progress.log("estimated " + trust.Estimate(**e).line())
            if said.get("estimates"):
                progress.log(f"measured against {said.get('against')}")
            else:
                progress.log(f"no estimate: {said.get('why')}")
            if self.from_run is not None:
                compare_with_earlier(store, progress)
            if output is not None:
                export(store, self.input_path, output, details=details, progress=progress, sets=self.sets)
            return self._report(store, "complete", None if output is None else Path(output))
        finally:
            store.close()
            if self.engine is None:
                engine.close()
            if isinstance(reviewer, Closeable):
                reviewer.close()

    def _plan(self, store: RunStore, first_sample: bool = True) -> SetPlan:
        saved = store.get_meta(PLAN)
        if saved is not None:
            plan = SetPlan(int(saved["total"]), int(saved["audit"]), int(saved["bootstrap"]), tuple(saved["stages"]))
            if plan.total != min(budget_rows(self.task.review, store.n_rows), store.n_input_texts):
                raise TaskError("review.budget changed since this multi-label run started; put it back, or pass a new "
                                "--run-dir (a multi-label run cannot be resized yet)")
            return plan
        plan = plan_sets(self.task, store.n_rows, store.n_input_texts, first_sample=first_sample)
        store.set_meta(PLAN, plan.to_dict())
        if not plan.audit and plan.total:
            self.progress.log(f"no audit sample (review.audit gives {audit_rows(self.task.review, store.n_rows)} rows, "
                              f"under the {trust.MIN_AUDIT} an estimate needs): the output's accuracy is not estimated")
        return plan

    def _train_rows(self, store: RunStore) -> tuple[np.ndarray, np.ndarray]:
        """The text ids to learn from, every answered review (the audit's included; an earlier batch's, `--from`,
        unless this one drifted from it), and their sets."""
        reviews = store.reviews()
        n_input, carried = store.n_input_texts, store.learns_from_carried
        ids = np.array(sorted(t for t, r in reviews.items() if r.label is not None and (carried or t < n_input)),
                       np.int64)
        return ids, self._indicators([reviews[int(t)].label for t in ids])

    def _measuring(self, store: RunStore) -> set[int]:
        """The audit rows no step found hard: a uniform sample of the rows the vote labels."""
        marked = set(store.audit_hard())
        return {t for t in store.routed(AUDIT) if t not in marked}

    def _indicators(self, labels: Sequence[str | None]) -> np.ndarray:
        index = {name: j for j, name in enumerate(self.task.label_names)}
        Y = np.zeros((len(labels), len(index)), np.int8)  # noqa: N806
        for i, text in enumerate(labels):
            for name in self.sets.parse(text) or () if text is not None else ():
                Y[i, index[name]] = 1
        return Y

    def _fit(self, store: RunStore, views: Views, leave_out: Sequence[int] = ()) -> _Ensemble | None:
        """Every specialist's head fitted on the answered rows but `leave_out`, and the vote over them (a
        Dawid-Skene vote learns on a seeded sample of the run's rows); None with nothing to learn from."""
        ids, Y = self._train_rows(store)  # noqa: N806
        keep = ~np.isin(ids, np.asarray(leave_out, np.int64))
        ids, Y = ids[keep], Y[keep]  # noqa: N806
        if not len(ids):
            return None
        X = views.of(ids)  # noqa: N806
        audit = np.isin(ids, np.asarray(store.routed(AUDIT), np.int64))
        heads = []
        for s in self.specialists:
            if not s.audit_blind:
                heads.append((s, s.make().fit(X[s.view], Y)))
                continue
            # one fit on the answered rows but the audit serves every fold, and the output, of this stage
            key = (s.name, tuple(ids[~audit].tolist()))
            if self._blind.get(s.name, (None,))[0] != key:
                self.progress.log(f"fine-tuning {s.name} on {int((~audit).sum())} reviewed rows (the audit's left out)")
                self._blind[s.name] = (key, s.make().fit(X[s.view][~audit], Y[~audit]))
            heads.append((s, self._blind[s.name][1]))
        fitted = _Ensemble(heads, vote.SetVote(self.combine))
        if fitted.vote.how == "dawid-skene":
            fitted.vote.fit(fitted.each(views.sample(self.task.seed)))
        return fitted

    def _audit_folds(self, store: RunStore) -> dict[int, int]:
        """Each audit row's part (of FOLDS), fixed for the run: the heads that score an audit row never
        learned from its part."""
        audit = sorted(store.routed(AUDIT))
        fold = np.random.default_rng(self.task.seed + 7).permutation(len(audit)) % FOLDS
        return {t: int(f) for t, f in zip(audit, fold, strict=True)}

    def _fold_heads(self, store: RunStore, views: Views) -> list[_Ensemble | None]:
        """The heads fitted FOLDS times, each on every answered row but one part of the audit."""
        folds = self._audit_folds(store)
        parts = FOLDS if folds else 1
        return [self._fit(store, views, leave_out=[t for t, f in folds.items() if f == j]) for j in range(parts)]

    def _cross_fitted(self, store: RunStore, views: Views, ids: Sequence[int],
                      heads: list[_Ensemble | None] | None = None) -> np.ndarray:
        """The vote's probabilities on audit rows `ids`, each from heads trained on every answered row but
        its part of the audit (`_audit_folds`)."""
        vote_p, _ = self._cross_fitted_each(store, views, ids, heads)
        return vote_p

    def _cross_fitted_each(self, store: RunStore, views: Views, ids: Sequence[int],
                           heads: list[_Ensemble | None] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """`_cross_fitted`'s vote, and each specialist's own probabilities (NaN where it scores no label)."""
        folds = self._audit_folds(store)
        heads = heads if heads is not None else self._fold_heads(store, views)
        ids = np.asarray(ids, np.int64)
        part = np.array([folds[int(t)] for t in ids], np.int64)
        shape = (len(ids), len(self.task.label_names))
        P = np.zeros(shape)  # noqa: N806
        each = [np.full(shape, np.nan) for _ in self.specialists]
        for k in np.unique(part):
            fitted = heads[k]
            if fitted is not None:
                own = fitted.each(views.of(ids[part == k]))
                P[part == k] = fitted.vote(own)
                for e, p in zip(each, own, strict=True):
                    e[part == k] = p
        return P, each

    def _route_stage(self, store: RunStore, views: Views, stage: int, k: int) -> None:
        """The stage's `k` hardest rows among those no one reviewed; audit rows as hard as those count as
        found (marked), not asked twice.

        Every stage learns from the audit, yet the audit rows no stage picks stay a uniform sample of the rows
        the vote labels: every row in the ranking is scored by heads that did not learn from it, of one kind for
        all. The heads are fitted FOLDS times, each without one part of the audit; an audit row is scored by the
        heads without its part, any other row by the heads of a part drawn at random."""
        folds = self._audit_folds(store)
        heads = self._fold_heads(store, views)
        parts = len(heads)
        n = store.n_texts
        part = np.random.default_rng(self.task.seed + 11 + stage).integers(parts, size=n)
        for t, f in folds.items():
            part[t] = f
        measuring = self._measuring(store)
        routed = np.zeros(n, bool)
        routed[store.routed()] = True
        routed[sorted(measuring)] = False  # an audit row not found hard yet stays in the ranking
        hard = np.full(n, -np.inf)
        if heads[0] is not None:
            for ids, X in views.chunks():
                for j in range(parts):
                    mine = ~routed[ids] & (part[ids] == j)
                    fitted = heads[j]
                    if mine.any() and fitted is not None:
                        hard[ids[mine]] = vote.hardness(fitted({h: X[h][mine] for h in X}))
        else:  # nothing answered yet to learn from: the stage's rows at random
            hard[~routed] = np.random.default_rng(self.task.seed + 2 + stage).random(int((~routed).sum()))
        order = np.argsort(-hard, kind="stable")
        taken, marked = [], []
        for t in order:
            if len(taken) >= k or hard[t] == -np.inf:
                break
            (marked if int(t) in measuring else taken).append(int(t))
        hinted = taken + (marked if self.desk.first_reviewer() is not None else [])
        if heads[0] is not None and hinted:  # the vote on each routed row before its review: the reviewer's hints
            rows = np.asarray(hinted, np.int64)
            for j in range(parts):
                mine = rows[part[rows] == j]
                fitted = heads[j]
                if len(mine) and fitted is not None:
                    P = fitted(views.of(mine))  # noqa: N806
                    store.put_priors({int(t): [round(float(x), 4) for x in P[i]] for i, t in enumerate(mine)})
        store.add_routing(taken, HARD, [float(hard[t]) for t in taken], stage, done_step=route_hard(stage),
                          audit_hard=(marked, [float(hard[t]) for t in marked]))
        store.put_stage(stage, {"stage": stage, "routed": len(taken), "audit_rows_found_hard": len(marked),
                                "trained_on": int(len(self._train_rows(store)[0])), "marked": marked})

    def _finalize(self, store: RunStore, views: Views) -> None:
        """Every text's final label (the output's heads learn from every answered row), and the estimate of
        the output with the calibration (`multilabel.trust`), computed in the same pass over the rows."""
        heads = self._fit(store, views)
        reviews = store.reviews(include_pending=True)
        measuring = sorted(t for t in self._measuring(store) if t in reviews and reviews[t].label is not None)
        calibration = trust.Calibration(self.set_calibration)
        allow_empty = bool(self.task.allow_empty)
        names = self.task.label_names
        measured = len(measuring) >= trust.MIN_AUDIT and heads is not None
        folds = self._fold_heads(store, views) if measured else []
        audit: dict[str, Any] = {}
        settled, settled_ids = self.desk.settled(store, reviews, self._indicators)
        settled_confidence = None if settled is None or len(settled.T) < trust.MIN_SETTLED else \
            float(np.average((settled.T == settled.L).all(axis=1), weights=settled.weights))
        if measured:
            P, each = self._cross_fitted_each(store, views, measuring, folds)  # noqa: N806
            T = self._indicators([reviews[t].label for t in measuring])  # noqa: N806
            S = vote.decide(P, allow_empty)  # noqa: N806
            calibration.fit(P, T, S)
            audit = {"P": P, "T": T, "S": S, "each": trust.specialist_scores([s.name for s in self.specialists], each, T, allow_empty)}
        # the rows the vote labels, each also scored by the heads of a random part (of the audit's kind): the
        # estimate's proxies
        part = np.random.default_rng(self.task.seed + 13).integers(max(1, len(folds)), size=store.n_texts)
        rest_proxy = np.zeros(3)

        def records() -> Iterator[tuple[int, str | None, float | None, str, str | None, float | None, str]]:
            for ids, X in views.chunks():
                reviewed = store.reviews(ids.tolist(), include_pending=True)
                if heads is not None:
                    P = heads(X)  # noqa: N806
                    S = vote.decide(P, allow_empty)  # noqa: N806
                    conf = calibration.sets(vote.set_probability(P, S))
                    C = calibration.labels(P)  # noqa: N806
                if folds:
                    rest = np.array([t not in reviewed for t in ids.tolist()])
                    weights = store.row_counts_of(ids)
                    for j, fold in enumerate(folds):
                        mine = rest & (part[ids] == j)
                        if mine.any() and fold is not None:
                            Pj = fold({h: X[h][mine] for h in X})  # noqa: N806
                            rest_proxy[:] += trust.proxy_counts(Pj, vote.decide(Pj, allow_empty), weights[mine]).sum(0)
                for i, t in enumerate(ids.tolist()):
                    if heads is not None:
                        voted = self.sets.text(names[j] for j in np.flatnonzero(S[i]))
                        shown = json.dumps({names[j]: round(float(C[i, j]), 4) for j in np.argsort(-C[i])
                                            if C[i, j] >= SHOWN_LABEL_CONFIDENCE})
                        vc: float | None = float(conf[i])
                    else:
                        voted, shown, vc = None, "{}", None
                    r = reviewed.get(t)
                    if r is not None and r.label is not None:
                        # a row the LLM decided: as sure as its sets were right on the audit rows that measure it;
                        # too few of them: no confidence (its own is no measure of how often it is right)
                        sure = settled_confidence if t in settled_ids else r.confidence
                        yield t, r.label, sure, r.source, voted, vc, shown
                    elif r is not None:  # asked, not answered: the vote, and the source says why
                        yield t, voted, vc, r.source, voted, vc, shown
                    else:
                        yield t, voted, vc, VOTE if voted is not None else "skipped:no-vote", voted, vc, shown

        def estimates() -> dict[str, Any]:
            meta: dict[str, Any] = {"why": None, "estimates": None, "calibration": None}
            if heads is None:
                meta["why"] = "no reviewed row to learn from: nothing labels the rest"
            elif not measured:
                meta["why"] = (f"{len(measuring)} answered audit rows, under the {trust.MIN_AUDIT} an estimate needs "
                               "(set review.audit)")
            elif settled is not None and settled.texts and len(settled.T) < trust.MIN_SETTLED:
                meta["why"] = (f"the LLM decided {settled.texts} rows, and {len(settled.T)} audit rows a stage picked "
                               f"measure how often it is right, under the {trust.MIN_SETTLED} needed (raise review.audit, "
                               "or its min_confidence)")
            else:
                answered = [t for t, r in reviews.items() if r.label is not None and t not in settled_ids]
                n_rest = store.n_input_texts - sum(t < store.n_input_texts for t in reviews)
                rest_rows = int(store.n_rows - store.n_skipped
                                - store.row_counts_of(np.array(sorted(reviews), np.int64)).sum())
                ests = trust.estimate(audit["T"], audit["S"], audit["P"], store.row_counts_of(np.array(measuring, np.int64)),
                                      self._indicators([reviews[t].label for t in answered]).sum(axis=1),
                                      store.row_counts_of(np.array(answered, np.int64)), n_rest, rest_rows, rest_proxy,
                                      settled if settled is not None and settled.texts else None)
                meta.update(estimates=[e.to_dict() for e in ests], calibration=calibration.to_dict(),
                            calibrated_on=f"{len(measuring)} audit rows", against=self.desk.against(),
                            specialists=audit["each"])
            return {ESTIMATE: meta}

        store.put_final(records(), meta=estimates)
        if heads is not None:  # the model `labeljury export-model` writes
            kind = self.task.trusted_reviewer.kind
            score = (score_of(audit["P"], audit["T"], allow_empty, kind, self.desk.against() if kind == "llm" else None)
                     if measured else None)
            trained = len(self._train_rows(store)[0])
            folder = save_set_model(self.run_dir, names, heads.heads, views.tfidf, allow_empty, heads.vote, trained,
                                    calibration.to_dict(), score)
            script = self.run_dir / SCRIPT  # labels new texts as this vote does (written whole, then renamed)
            script.with_suffix(".tmp").write_text(annotate_script(SetModel.load(folder).meta, self.sets.separator))
            script.with_suffix(".tmp").replace(script)

    def _report(self, store: RunStore, status: str, output: Path | None) -> RunReport:
        from ..pipeline import RunReport, _members

        members = _members(self.reviewer) if self.reviewer is not None else []  # a cascade's reviewers too
        return RunReport(status=status, run_dir=self.run_dir, output=output, rows=store.n_rows,
                         texts=store.n_input_texts,
                         sources=store.source_counts() if status == "complete" else {},
                         reviews=store.count_reviews(), budget=budget_rows(self.task.review, store.n_rows),
                         pending=store.count_reviews(pending=True),
                         queue=next((r.path for r in members if isinstance(r, Queued)), None),
                         waiting_for="human" if any(r.kind == "human" for r in members) else "file")
