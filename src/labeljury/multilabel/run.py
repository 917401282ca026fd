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
from ..review.base import Checked, Closeable, Queued, Reviewer, ReviewItem
from ..sources import (
    AUDIT,
    BOOTSTRAP,
    FINALIZE,
    HARD,
    ROUTE_AUDIT,
    ROUTE_BOOTSTRAP,
    VOTE,
    reviewed,
    reviewer_of,
    route_hard,
)
from ..specialists import DEFAULT_ENCODER
from ..store import CHUNK, RunStore, check_run_dir, storage_errors
from ..task import ContinualSpec, ReviewerSpec, Task
from . import trust, vote
from .export import SCRIPT, SetModel, annotate_script, save_set_model, score_of
from .heads import fit_tfidf
from .specialists import AUTO, AUTO_BEFORE_ZEROSHOT, Head, SetSpecialist, set_specialists

if TYPE_CHECKING:
    from ..pipeline import RunReport

STAGES = 8  # rounds of routing (BENCHMARKS.md, section 19: the baseline's eight)
MIN_STAGE_REVIEWS = 25
FIRST_SHARE = 0.1  # the first sample: a tenth of the reviews not in the audit, half of it by the labels' names
ESTIMATE = "set_estimate"  # meta: the estimates, the calibration, what they rest on
PLAN = "budget_plan"
AUTO_META = "set_specialists_auto"  # the specialists `auto` stood for when the run began
SHOWN_LABEL_CONFIDENCE = 0.01  # `--details` lists each label whose calibrated probability reaches this
FOLDS = 5  # the audit's parts: an audit row is scored by heads that did not learn from its part
VOTE_SAMPLE = 20_000  # rows a Dawid-Skene vote learns its specialists' sensitivities and specificities on


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


TRUSTED = ("gold", "file", "human")  # reviewers whose sets are taken as right


def make_set_reviewer(task: Task, input_path: Path, run_dir: Path) -> Reviewer:
    """The task's reviewer of sets: one of `gold`, `file`, `llm`, `human`, or a cascade of an LLM then a trusted
    reviewer (`gold`, `file` or `human`), which answers the audit, the first sample and what the LLM does not
    settle (no answer, or one under the LLM's `min_confidence`)."""
    from ..review.cascade import CascadeReviewer

    specs = task.reviewer
    kinds = [r.kind for r in specs]
    if len(specs) == 2 and kinds[0] == "llm" and kinds[1] in TRUSTED:
        return CascadeReviewer([(_one_set_reviewer(specs[0], task, input_path, run_dir), specs[0].min_confidence),
                                (_one_set_reviewer(specs[1], task, input_path, run_dir), None)])
    if len(specs) != 1:
        raise TaskError(f"a multi-label task is reviewed by one reviewer, or by an LLM then a trusted reviewer (gold, "
                        f"file or human), not {', '.join(kinds)}; reorder or shorten the `reviewer:` list")
    return _one_set_reviewer(specs[0], task, input_path, run_dir)


def _one_set_reviewer(spec: ReviewerSpec, task: Task, input_path: Path, run_dir: Path) -> Reviewer:
    from ..review import FileReviewer, GoldReviewer

    sets = task.label_sets
    if spec.kind == "human":  # people on the review page (`labeljury review`), its API or Label Studio
        from ..review.human import HumanReviewer

        return HumanReviewer(run_dir)
    if spec.kind == "gold":
        return GoldReviewer(input_path, spec.column or "label", task.label_names, sets)
    if spec.kind == "llm":
        from ..review.llm import make_llm_reviewer

        return make_llm_reviewer(task, run_dir)
    path = Path(spec.path).expanduser() if spec.path else Path("review_queue.jsonl")
    return FileReviewer(path if path.is_absolute() else run_dir / path, task.label_names, sets)


class _Views:
    """The views of a text the specialists read: the run store's embeddings, TF-IDF of the texts (fitted only
    when a specialist reads it), each zero-shot specialist's cosines to its label prototypes, and each hub
    model's stored scores."""

    def __init__(self, store: RunStore, seed: int, specialists: Sequence[SetSpecialist]):
        self.store = store
        self.specialists = list(specialists)
        self.tfidf: Any = None
        if any(s.view == "tfidf" for s in self.specialists):
            n = store.n_texts
            sample = np.arange(n) if n <= 50_000 else np.sort(np.random.default_rng(seed).choice(n, 50_000,
                                                                                              replace=False))
            texts = store.texts_by_id(sample.tolist())
            self.tfidf = fit_tfidf([texts[int(t)][0] for t in sample], seed)

    def _stored(self, ids: np.ndarray, get: Any) -> np.ndarray:
        """Rows `ids` of a per-chunk array in the run store (`get(chunk)`)."""
        parts, where = [], []
        for c in np.unique(ids // CHUNK):
            mine = np.flatnonzero(ids // CHUNK == c)
            block = get(int(c))
            assert block is not None  # the encode and score steps stored every chunk
            parts.append(block[ids[mine] - c * CHUNK])
            where.append(mine)
        out = np.empty((len(ids), parts[0].shape[1]), parts[0].dtype)
        for p, w in zip(parts, where, strict=True):
            out[w] = p
        return out

    def sample(self, seed: int) -> dict[str, Any]:
        """The views of a seeded sample of VOTE_SAMPLE rows (all, when fewer), kept: a vote learns on it."""
        if not hasattr(self, "_sample"):
            n = self.store.n_input_texts
            ids = np.arange(n) if n <= VOTE_SAMPLE else np.sort(
                np.random.default_rng(seed + 17).choice(n, VOTE_SAMPLE, replace=False))
            self._sample = self.of(ids)
        return self._sample

    def of(self, ids: Sequence[int]) -> dict[str, Any]:
        ids = np.asarray(ids, dtype=np.int64)
        E = np.zeros((len(ids), 0), np.float32)  # noqa: N806
        if len(ids):
            E = self._stored(ids, lambda c: self.store.get_embeddings(DEFAULT_ENCODER, c))  # noqa: N806
        out: dict[str, Any] = {"embedding": E}
        if self.tfidf is not None or any(s.view == "text" for s in self.specialists):
            by_id = self.store.texts_by_id(ids.tolist())
            texts = [by_id[int(t)][0] for t in ids]
            out["text"] = _Texts(texts)
            if self.tfidf is not None:
                out["tfidf"] = self.tfidf.transform(texts)
        for s in self.specialists:
            if s.prototypes is not None:
                En = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)  # noqa: N806
                out[s.view] = En @ s.prototypes.T if len(ids) else np.zeros((0, len(s.prototypes)))
            elif s.scorer is not None:
                k = len(s.scorer.labels)
                out[s.view] = (self._stored(ids, lambda c, n=s.name: self.store.get_predictions(n, 0, c))
                               if len(ids) else np.zeros((0, k), np.float32))
        return out

    def chunks(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """The input's texts, a chunk at a time (not those an earlier batch brought: they only train)."""
        n = self.store.n_input_texts
        for start in range(0, n, CHUNK):
            ids = np.arange(start, min(n, start + CHUNK))
            yield ids, self.of(ids)


class _Texts(list):  # type: ignore[type-arg]
    """The texts of some rows: `X[mask]` selects rows, as for the other views' arrays."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, np.ndarray):
            picked = np.flatnonzero(key) if key.dtype == bool else key
            return _Texts(list.__getitem__(self, int(i)) for i in picked)
        return list.__getitem__(self, key)


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
            self._score_hub_models(store)
            drifted = self._drift(store) if self.from_run is not None else True
            plan = self._plan(store, first_sample=drifted)
            rng = np.random.default_rng(task.seed)
            if not store.is_done(ROUTE_AUDIT):
                n = store.n_input_texts
                audit = np.sort(rng.choice(n, plan.audit, replace=False)) if plan.audit else np.zeros(0, np.int64)
                store.add_routing(audit.tolist(), AUDIT, None, 0, done_step=ROUTE_AUDIT)
            views = _Views(store, task.seed, self.specialists)
            if not store.is_done(ROUTE_BOOTSTRAP):
                self._route_first(store, views, plan.bootstrap)
            if not self._review(store, store.routed(AUDIT) + store.routed(BOOTSTRAP), finish):
                return self._report(store, "waiting", None)
            for i, k in enumerate(plan.stages):
                if not store.is_done(route_hard(i)):
                    self._route_stage(store, views, i, k)
                    found = store.stages()[-1]
                    progress.log(f"stage {i + 1}/{len(plan.stages)}: {found['routed']} hardest rows to review"
                                 + (f" ({found['audit_rows_found_hard']} audit rows among them, not asked again)"
                                    if found["audit_rows_found_hard"] else ""))
                self._measure_first_reviewer(store, i)
                if not self._review(store, store.routed(HARD, stage=i), finish):
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
                self._compare_with_earlier(store)
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

    def _drift(self, store: RunStore) -> bool:
        """Whether this batch drifted from the earlier one it continues (`pipeline.carry.test_drift`, on the
        stored embeddings): then the heads do not learn from the earlier rows and the first sample is kept."""
        from ..pipeline.carry import test_drift

        class Stored:  # the embeddings `test_drift` reads, from the run store
            def embeddings(self, encoder: str, ids: np.ndarray) -> np.ndarray:
                return _Views(store, 0, [])._stored(np.asarray(ids, np.int64),
                                                    lambda c: store.get_embeddings(encoder, c))

        drift = test_drift(store, Stored(), DEFAULT_ENCODER, self.task.seed, self.progress)
        return bool(drift.get("drifted")) or not store.carried_totals()[0]

    def _compare_with_earlier(self, store: RunStore) -> None:
        """This batch's estimated micro-F1 against the earlier batch's: a drop beyond both intervals is said."""
        from ..sources import DRIFT, FROM_RUN

        def micro(s: RunStore) -> dict[str, Any] | None:
            return next((e for e in (s.get_meta(ESTIMATE) or {}).get("estimates") or []
                         if e["metric"] == "micro_f1"), None)

        where = store.get_meta(FROM_RUN)
        ours = micro(store)
        if where is None or ours is None or not (Path(where) / "run.db").is_file():
            return
        with RunStore.existing(where) as s:
            theirs = micro(s)
        if theirs is None:
            return
        dropped = ours["high"] < theirs["low"]
        drift = dict(store.get_meta(DRIFT) or {})
        drift["estimate"] = {"metric": "micro_f1", "earlier": theirs["value"], "earlier_low": theirs["low"],
                             "earlier_high": theirs["high"], "now": ours["value"], "dropped": dropped}
        store.set_meta(DRIFT, drift)
        if dropped:
            self.progress.log(f"WARNING: this batch's sets are less right than the earlier batch's beyond doubt: "
                              f"estimated micro-F1 {ours['value']:.1%} [{ours['low']:.1%}, {ours['high']:.1%}] against "
                              f"{theirs['value']:.1%} [{theirs['low']:.1%}, {theirs['high']:.1%}]. Check the batch "
                              "(labeljury report), or give it more reviews")

    def _score_hub_models(self, store: RunStore) -> None:
        """Each hub model's logits for every text, once, chunk by chunk into the run store (a resumed run
        scores only the chunks it had not)."""
        n = store.n_texts
        for s in self.specialists:
            if s.scorer is None:
                continue
            done = store.prediction_chunks(s.name, 0)
            todo = [c for c in range((n + CHUNK - 1) // CHUNK) if c not in done]
            if not todo:
                continue
            rows = sum(min(n, (c + 1) * CHUNK) - c * CHUNK for c in todo)
            with self.progress.bar(f"scoring ({s.name})", rows) as bar:
                for c in todo:
                    ids = list(range(c * CHUNK, min(n, (c + 1) * CHUNK)))
                    texts = store.texts_by_id(ids)
                    store.put_predictions(s.name, 0, c, s.scorer([texts[t][0] for t in ids]))
                    bar.advance(len(ids))

    def _route_first(self, store: RunStore, views: _Views, m: int) -> None:
        """Half of the first sample by the labels' names (each label in turn, the texts most like its name or
        description), half uniformly at random. Audit rows met on the way count as found, not asked twice."""
        from ..specialists import get_encoder

        task = self.task
        audit = set(store.routed(AUDIT))
        taken: list[int] = []
        marked: list[int] = []
        by_names = m // 2
        n = store.n_input_texts
        if by_names and n:
            prompts = [(d or name).replace("_", " ").replace("-", " ") for name, d in task.labels.items()]
            L = get_encoder(DEFAULT_ENCODER).encode(prompts)  # noqa: N806
            L = L / np.maximum(np.linalg.norm(L, axis=1, keepdims=True), 1e-12)  # noqa: N806
            depth = min(n, by_names + len(audit) + 1)  # deep enough for every label's turn
            best = np.zeros((0, len(prompts)), np.int64)
            scores = np.zeros((0, len(prompts)), np.float32)
            for ids, v in views.chunks():
                E = v["embedding"]  # noqa: N806
                s = (E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)) @ L.T
                scores = np.concatenate([scores, s])
                best = np.concatenate([best, np.repeat(ids[:, None], len(prompts), axis=1)])
                keep = np.argsort(-scores, axis=0, kind="stable")[:depth]
                scores = np.take_along_axis(scores, keep, axis=0)
                best = np.take_along_axis(best, keep, axis=0)
            seen: set[int] = set()
            for row in best:
                for t in row:
                    t = int(t)
                    if len(taken) >= by_names:
                        break
                    if t in seen:
                        continue
                    seen.add(t)
                    (marked if t in audit else taken).append(t)
        rest = np.setdiff1d(np.arange(n), np.array(sorted(audit | set(taken) | set(marked)), dtype=np.int64))
        rng = np.random.default_rng(task.seed + 1)
        extra = rng.choice(rest, min(len(rest), m - len(taken)), replace=False) if len(rest) else rest
        taken += [int(t) for t in extra]
        store.add_routing(sorted(taken), BOOTSTRAP, None, 0, done_step=ROUTE_BOOTSTRAP,
                          audit_hard=(marked, [0.0] * len(marked)))

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

    def _fit(self, store: RunStore, views: _Views, leave_out: Sequence[int] = ()) -> _Ensemble | None:
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

    def _fold_heads(self, store: RunStore, views: _Views) -> list[_Ensemble | None]:
        """The heads fitted FOLDS times, each on every answered row but one part of the audit."""
        folds = self._audit_folds(store)
        parts = FOLDS if folds else 1
        return [self._fit(store, views, leave_out=[t for t, f in folds.items() if f == j]) for j in range(parts)]

    def _cross_fitted(self, store: RunStore, views: _Views, ids: Sequence[int],
                      heads: list[_Ensemble | None] | None = None) -> np.ndarray:
        """The vote's probabilities on audit rows `ids`, each from heads trained on every answered row but
        its part of the audit (`_audit_folds`)."""
        vote_p, _ = self._cross_fitted_each(store, views, ids, heads)
        return vote_p

    def _cross_fitted_each(self, store: RunStore, views: _Views, ids: Sequence[int],
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

    def _route_stage(self, store: RunStore, views: _Views, stage: int, k: int) -> None:
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
        hinted = taken + (marked if self._first_reviewer() is not None else [])
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

    def _first_reviewer(self) -> Reviewer | None:
        """The LLM first in a cascade (it decides the hard rows it settles), else None."""
        from ..review.cascade import CascadeReviewer

        return self.reviewer.reviewers[0][0] if isinstance(self.reviewer, CascadeReviewer) else None

    def _measure_first_reviewer(self, store: RunStore, stage: int) -> None:
        """In a cascade: ask the LLM about the audit rows stage `stage` would have picked, as it is asked about
        the stage's hard rows (the vote in context), and keep its answers beside the trusted reviewer's: they
        measure how often the rows it decides are right (`trust.Settled`). Each is asked once (a failed answer
        too: a row it would not have settled)."""
        llm = self._first_reviewer()
        if llm is None:
            return
        marked = store.stages()[stage].get("marked") or []
        asked = store.answered_by(llm.kind)
        todo = [t for t in marked if t not in asked]
        if not todo:
            return
        texts, priors = store.texts_by_id(todo), store.priors(todo)
        items = [self._item(t, texts[t], HARD, priors.get(t)) for t in todo]
        with self.progress.bar(f"reviewing (audit rows the stage picked, answered by {llm.kind} to measure it)",
                               len(items)) as bar:
            for r in llm.review(items):
                if not r.pending:
                    store.put_answer(llm.kind, r)
                bar.advance(1)

    def _review(self, store: RunStore, ids: Sequence[int], finish: bool) -> bool:
        """Ask the reviewer for the rows of `ids` without an answer; False while some wait for a person."""
        answered = store.reviews(ids)
        todo = [t for t in ids if t not in answered]
        if not todo:
            return True
        texts = store.texts_by_id(todo)
        reasons = dict.fromkeys(store.routed(HARD), HARD) | dict.fromkeys(store.routed(BOOTSTRAP), BOOTSTRAP) | \
            dict.fromkeys(store.routed(AUDIT), AUDIT)
        priors = store.priors(todo)  # the vote's per-label probabilities, for the rows routed as hard
        items = [self._item(t, texts[t], reasons.get(t, HARD), priors.get(t)) for t in todo]
        waiting = 0
        assert self.reviewer is not None
        from ..review.cascade import CascadeReviewer

        # in a cascade the trusted reviewer answers the audit and the first sample (they measure and seed); the LLM
        # decides only hard rows, on which the audit rows a stage picks measure it
        cascade = isinstance(self.reviewer, CascadeReviewer)
        batches = [(self.reviewer.last, [it for it in items if it.reason != HARD]),
                   (self.reviewer, [it for it in items if it.reason == HARD])] if cascade else [(self.reviewer, items)]
        with self.progress.bar(f"reviewing ({self.reviewer.kind})", len(items)) as bar:
            for reviewer, batch in batches:
                for r in reviewer.review(batch) if batch else ():
                    store.put_review(r)
                    for said in (*r.trail, r) if cascade and not r.pending else ():
                        store.put_answer(reviewer_of(said.source), said)
                    waiting += r.pending
                    bar.advance(1)
        return waiting == 0 or finish

    def _item(self, key: int, text: tuple[str, int], reason: str, prior: list[float] | None) -> ReviewItem:
        if prior is None or reason == AUDIT:  # the audit and the first sample are asked blind
            return ReviewItem(key=key, text=text[0], row=text[1], reason=reason)
        P = np.asarray([prior])  # noqa: N806
        S = vote.decide(P, bool(self.task.allow_empty))  # noqa: N806
        voted = self.sets.text(name for j, name in enumerate(self.task.label_names) if S[0, j])
        return ReviewItem(key=key, text=text[0], row=text[1], reason=reason, vote=voted,
                          confidence=float(vote.set_probability(P, S)[0]), prior=list(prior))

    def _finalize(self, store: RunStore, views: _Views) -> None:
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
        settled, settled_ids = self._settled(store, reviews)
        settled_confidence = None if settled is None or len(settled.T) < trust.MIN_SETTLED else \
            float(np.average((settled.T == settled.L).all(axis=1), weights=settled.weights))
        if measured:
            P, each = self._cross_fitted_each(store, views, measuring, folds)  # noqa: N806
            T = self._indicators([reviews[t].label for t in measuring])  # noqa: N806
            S = vote.decide(P, allow_empty)  # noqa: N806
            calibration.fit(P, T, S)
            audit = {"P": P, "T": T, "S": S, "each": self._specialist_scores(each, T)}
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
                            calibrated_on=f"{len(measuring)} audit rows", against=self._against(),
                            specialists=audit["each"])
            return {ESTIMATE: meta}

        store.put_final(records(), meta=estimates)
        if heads is not None:  # the model `labeljury export-model` writes
            kind = self.task.trusted_reviewer.kind
            score = (score_of(audit["P"], audit["T"], allow_empty, kind, self._against() if kind == "llm" else None)
                     if measured else None)
            trained = len(self._train_rows(store)[0])
            folder = save_set_model(self.run_dir, names, heads.heads, views.tfidf, allow_empty, heads.vote, trained,
                                    calibration.to_dict(), score)
            script = self.run_dir / SCRIPT  # labels new texts as this vote does (written whole, then renamed)
            script.with_suffix(".tmp").write_text(annotate_script(SetModel.load(folder).meta, self.sets.separator))
            script.with_suffix(".tmp").replace(script)

    def _specialist_scores(self, each: list[np.ndarray], T: np.ndarray) -> list[dict[str, Any]]:  # noqa: N803
        """Each specialist's own sets on the audit rows no stage picked (out of fold, as the vote's), scored on the
        labels it scores: how much each brings, measured where none of them learned."""
        from ..labelsets import multilabel_scores

        out = []
        allow_empty = bool(self.task.allow_empty)
        for s, P in zip(self.specialists, each, strict=True):  # noqa: N806
            scored = ~np.isnan(P).all(axis=0)
            S = vote.decide(np.nan_to_num(P[:, scored]), allow_empty)  # noqa: N806
            sc = multilabel_scores(T[:, scored], S)
            out.append({"name": s.name, "micro_f1": float(sc["micro_f1"]), "macro_f1": float(sc["macro_f1"]),
                        "labels": int(scored.sum()), "rows": int(len(T))})
        return out

    def _settled(self, store: RunStore, reviews: dict[int, Any]) -> tuple[trust.Settled | None, set[int]]:
        """In a cascade: the rows the LLM decided, and the audit rows that measure it (`trust.Settled`)."""
        llm = self._first_reviewer()
        if llm is None:
            return None, set()
        audit = set(store.routed(AUDIT))
        decided = sorted(t for t, r in reviews.items() if r.source == reviewed(llm.kind) and t not in audit)
        min_confidence = self.task.reviewer[0].min_confidence
        said = store.answers(sorted(audit))
        rows = []
        for t in sorted(audit):
            mine, truth = said.get(t, {}).get(llm.kind), reviews.get(t)
            if mine is None or mine.label is None or truth is None or truth.label is None:
                continue
            if min_confidence is not None and (mine.confidence is None or mine.confidence < min_confidence):
                continue  # it would have sent the row on: the trusted reviewer decides such rows
            rows.append((t, mine.label, truth.label))
        ids = np.array([t for t, _, _ in rows], np.int64)
        settled = trust.Settled(self._indicators([truth for _, _, truth in rows]),
                                self._indicators([mine for _, mine, _ in rows]),
                                store.row_counts_of(ids).astype(np.float64), len(decided),
                                int(store.row_counts_of(np.array(decided, np.int64)).sum()), llm.kind)
        return settled, set(decided)

    def _against(self) -> str:
        """What the estimate measures against: the reviewer's answers, taken as right."""
        if self._first_reviewer() is not None:
            return (f"the {self.task.trusted_reviewer.kind} reviewer's sets, taken as right; the rows the LLM decided "
                    "count as often right as its sets were on the audit rows a stage picked (answered by both)")
        kind = self.task.reviewer[0].kind
        if kind == "llm":
            return ("the LLM reviewer's sets, taken as right: its own mistakes are not counted (no person checked "
                    "them), so this is agreement with the LLM, not accuracy")
        return f"the {kind} reviewer's sets, taken as right"

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
