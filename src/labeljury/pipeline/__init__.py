"""The annotation pipeline: a short list of steps, data flowing one way through them and the run store.

    ingest -> encode -> bootstrap (route, review, validate, fit v1)
           -> stages (continual learning: query -> review -> update, gated) -> final refit
           -> finalize -> plan -> export

Each step reads its inputs from the `RunStore` and writes its results there before the next step
starts, marking itself done; rerunning the same command skips what is done, so a run killed at any
moment resumes to the same output. A reviewer that must wait for a person stops the run with
status "waiting"; rerunning resumes it.

The steps share one `context.RunContext`, built once in `Annotator._run`: the store, the features, the
registry, the vote (`scoring`), the trainer, the review desk and the weighing (`weighing`), the budget
plan. Below the steps, each in one module: `scoring` (features and the vote tensor), `registry`
(specialist versions), `budget` (the review budget plan), `review.desk` (asking the reviewer),
`weighing` (a reviewer's answers against the vote), `training` (fitting), `continual` (the stage
loop) — all on top of `store`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import data
from ..budget import BudgetPlan, budget_rows, no_audit_reason, plan_budget, resize_plan
from ..context import RunContext, Tuning
from ..continual import NoImprovement, StageLoop, StoppingCriterion
from ..engine import Engine, make_engine
from ..errors import InputError, RunStoreError, SpecialistError, TaskError
from ..progress import Progress, SilentProgress
from ..registry import Registry, read_registry
from ..review.base import Checked, Closeable, Queued, Reviewer
from ..review.desk import ReviewDesk
from ..routing import HardestFirst
from ..scoring import Features
from ..sources import AUDIT, BOOTSTRAP, FINAL_UPDATE, FINALIZE, FROM_RUN, ROUTE_BOOTSTRAP, route_hard
from ..specialists import Specialist, build_specialist
from ..specialists.catalog import auto_specialists, specialist_names
from ..store import RunStore, check_run_dir, storage_errors
from ..task import ContinualSpec, ReviewerSpec, SpecialistSpec, Task
from .bootstrap import fit_first_versions, route_audit, route_audit_by_hardness, route_bootstrap, validate
from .carry import carry, check_earlier, compare_estimates, selected_specialists, test_drift, without_bootstrap
from .encode import bootstrap_encoder, encode, encoders_needed
from .export import DETAIL_COLUMNS, OUTPUT_COLUMNS, export
from .finalize import finalize
from .ingest import ingest
from .plan import write_plan

SPILL_DIR = "feature-cache"  # feature blocks memory could not keep, for this process only (see scoring)

__all__ = ["Annotator", "DETAIL_COLUMNS", "OUTPUT_COLUMNS", "RunReport", "default_run_dir", "export",
           "input_fingerprint", "make_reviewer", "run"]


@dataclass
class RunReport:
    """What a call to `run` did. `status` is "complete" or "waiting" (for reviews in `queue`)."""

    status: str
    run_dir: Path
    output: Path | None
    rows: int
    texts: int
    sources: dict[str, int] = field(default_factory=dict)
    reviews: int = 0
    budget: int = 0
    pending: int = 0
    queue: Path | None = None
    specialists: list[dict[str, Any]] = field(default_factory=list)
    waiting_for: str = "file"  # who the pending reviews wait for: "file" (the queue file) or "human" (the page)
    unspent: int = 0  # reviews of the budget left unspent when the stages stopped early (`review.stop_early`)

    def summary(self) -> str:
        if self.status == "waiting":
            if self.waiting_for == "human":
                return (f"waiting for {self.pending} review(s) by people: open the review page with "
                        f"`labeljury review {self.run_dir}` (or answer them in Label Studio: `labeljury export-queue`), "
                        "then rerun the same command (or add --finish to go on without them)")
            return (f"waiting for {self.pending} review(s) in {self.queue}: set \"label\" on each line, "
                    "then rerun the same command (or add --finish to go on without them)")
        waiting = f"; {self.pending} row(s) still wait for people" if self.pending else ""
        stopped = (f" (stopped early: the stages no longer helped; {self.unspent} unspent)" if self.unspent else "")
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.sources.items()))
        return (f"labeled {self.rows} rows ({parts}); {self.reviews}/{self.budget} reviews{stopped}{waiting}; "
                f"output {self.output}")


def default_run_dir(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".run")


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size and the sha256 of the whole content: an edit anywhere in the input is caught (hashing
    reads the file at disk speed, cheap next to encoding it)."""
    return {"size": path.stat().st_size, "sha256": data.file_digest(path)}


def make_reviewer(task: Task, input_path: Path, run_dir: Path) -> Reviewer:
    """The task's reviewer; a cascade when it lists several (tried in order)."""
    from ..review.cascade import CascadeReviewer

    built = [(_one_reviewer(spec, task, input_path, run_dir), spec.min_confidence) for spec in task.reviewer]
    return built[0][0] if len(built) == 1 and built[0][1] is None else CascadeReviewer(built)


def _one_reviewer(spec: ReviewerSpec, task: Task, input_path: Path, run_dir: Path) -> Reviewer:
    from ..review import FileReviewer, GoldReviewer

    if spec.kind == "gold":
        return GoldReviewer(input_path, spec.column or "label", task.label_names)
    if spec.kind == "file":
        # a relative path is inside the run directory; the reviewer refuses to replace a file that
        # is not a labeljury queue
        path = Path(spec.path).expanduser() if spec.path else Path("review_queue.jsonl")
        return FileReviewer(path if path.is_absolute() else run_dir / path, task.label_names)
    if spec.kind == "human":
        from ..review.human import HumanReviewer

        return HumanReviewer(run_dir)
    from ..review.llm import make_llm_reviewer  # the LLM layer is only imported when used

    return make_llm_reviewer(task, run_dir)


class Annotator:
    """One run of a task over one input, backed by one run directory."""

    def __init__(self, task: Task, input_path: str | Path, run_dir: str | Path,
                 reviewer: Reviewer | None = None, progress: Progress | None = None, engine: Engine | None = None,
                 tuning: Tuning | None = None, stopping: StoppingCriterion | None = None,
                 from_run: str | Path | None = None):
        task.require_single_label("`labeljury run`")
        self.task = task
        self.from_run = None if from_run is None else Path(from_run)  # the earlier batch's run this one continues
        self.tuning = tuning or Tuning()
        self.stopping = stopping  # None: every stage of the budget plan runs
        self.engine = engine
        self.input_path = Path(input_path)
        self.run_dir = Path(run_dir)
        self.progress = progress or SilentProgress()
        self.reviewer = reviewer
        self._specs: list[SpecialistSpec] = []
        self._selected: list[SpecialistSpec] | None = None  # chosen by the LLM meta-controller
        self._unbuilt: dict[str, str] = {}  # LLM-chosen specialists that could not be built, and why
        self._output: str | Path | None = None

    # -- the run: its steps, in order ----------------------------------------------------------------
    def run(self, output: str | Path | None = None, details: bool = False, finish: bool = False) -> RunReport:
        """Run (or resume) to the end, or until reviews must wait for a person (status "waiting").
        With `finish`, the run does not wait: rows without an answer keep the vote, stay in the queue,
        and their source says so; rerun when the answers arrive to use them."""
        with storage_errors(self.run_dir):
            return self._run(output, details, finish)

    def _run(self, output: str | Path | None, details: bool, finish: bool) -> RunReport:
        task, progress = self.task, self.progress
        self._output = output
        self._check_input(output)
        check_run_dir(self.run_dir)  # before the reviewer or the LLM selection writes there
        self._check_from()
        reviewer = self.reviewer or make_reviewer(task, self.input_path, self.run_dir)
        self.reviewer = reviewer
        if isinstance(reviewer, Checked):
            reviewer.check()
        self._specs = self._choose_specialists()
        built = self._build_specialists()  # an unknown specialist fails before anything is written
        store = self._open_store()
        engine = self.engine or make_engine(task.engine)
        features: Features | None = None
        try:
            ingest(store, self.input_path, task.text_column, progress)
            if self.from_run is not None:
                carry(store, self.from_run, progress, task.seed, cap=(task.continual or ContinualSpec()).max_train_rows)
            plan = self._budget_plan(store, built)
            registry = Registry(store, self._fresh, (task.continual or ContinualSpec()).keep_checkpoints)
            registry.open(built, self._unbuilt)
            features = Features(store, spill_dir=self.run_dir / SPILL_DIR)
            ctx = RunContext.open(task=task, store=store, features=features, registry=registry, reviewer=reviewer,
                                  plan=plan, progress=progress, engine=engine, tuning=self.tuning)
            desk = ctx.desk

            encoders = encoders_needed(registry.models.values())
            encode(store, encoders, progress, engine)
            if self.from_run is not None:
                self._continue_plan(ctx, bootstrap_encoder(encoders))
            store.set_meta("run_started_at", time.time())  # answers given before now may have been used
            by_hardness = task.review.audit_sampling != "uniform"
            if not by_hardness:
                route_audit(store, ctx.plan.audit, task.seed)
            route_bootstrap(store, ctx.plan.bootstrap, features, bootstrap_encoder(encoders), task.seed, progress, engine)
            first = {t: BOOTSTRAP for t in store.routed(BOOTSTRAP)} | {t: AUDIT for t in store.routed(AUDIT)}
            if not ctx.review(sorted(first), first) and not finish:
                return self._report(store, "waiting", None, desk)
            validate(ctx)
            fit_first_versions(ctx)
            if by_hardness:  # once the first versions can say which rows are hard
                route_audit_by_hardness(ctx, ctx.plan.audit)
                audit = store.routed(AUDIT)
                if not ctx.review(audit, {t: AUDIT for t in audit}) and not finish:
                    return self._report(store, "waiting", None, desk)
            stages = StageLoop(ctx, strategy=HardestFirst(task.review.policy, task.review.threshold),
                               stopping=self._stopping())
            if not stages.run(wait=not finish):
                return self._report(store, "waiting", None, desk)
            # the audit rows, which no version learns from, get the final vote as their prior; then
            # every answer is weighed again (answers people gave since the last stage count too)
            ctx.weigher.audit_priors(ctx.scorer)
            ctx.weigher.weigh()
            ctx.second_look()  # the rows flagged by that last weighing go on to the next reviewer
            finalize(ctx)
            if self.from_run is not None:
                compare_estimates(store, progress)
            if not store.n_texts:
                progress.log(f"nothing to label: no row of {self.input_path.name} has a text in column "
                             f"{task.text_column!r} (every one is empty or not text: skipped:empty); check text_column")
            elif not registry.voters():
                trainable = ", ".join(registry.trainable()) or "none"
                progress.log(f"no specialist could vote: the trainable ones ({trainable}) learn from reviewed rows and "
                             "none has an answer yet; every row not reviewed is unlabeled (skipped:no-vote). Raise "
                             "review.budget, answer the queued rows, or add a specialist that needs no training")
            write_plan(task, registry, ctx.scorer, progress)
            if output is not None:
                export(store, self.input_path, output, details=details, progress=progress)
            return self._report(store, "complete", None if output is None else Path(output), desk)
        finally:
            if features is not None:
                features.close()
            store.close()
            if self.engine is None:  # an engine passed in is the caller's to close
                engine.close()
            if isinstance(reviewer, Closeable):
                reviewer.close()

    # -- set-up --------------------------------------------------------------------------------------
    def _check_input(self, output: str | Path | None) -> None:
        check_input_and_output(self.input_path, self.task.text_column, output)

    def _stopping(self) -> StoppingCriterion | None:
        """The caller's stopping criterion, else `review.stop_early`'s (by default on for a later batch)."""
        if self.stopping is not None:
            return self.stopping
        on = self.task.review.stop_early
        return NoImprovement() if (on if on is not None else self.from_run is not None) else None

    def _check_from(self) -> None:
        """A run that continues an earlier one: that run must be finished and of the same task; a resumed
        run keeps the earlier run it started from."""
        given = None if self.from_run is None else str(self.from_run.resolve())
        if given is not None and Path(given) == self.run_dir.resolve():
            raise RunStoreError("--from names this run's own run directory; pass the earlier batch's run directory, "
                                "and a new --run-dir (or --output) for this batch")
        if (self.run_dir / "run.db").is_file():
            with RunStore.existing(self.run_dir) as s:
                started, saved = s.get_meta("fingerprint") is not None, s.get_meta(FROM_RUN)
            if started and saved != given:
                raise RunStoreError(f"run directory {str(self.run_dir)!r} " + (
                    f"continues {saved!r}: rerun it with --from {saved}" if saved is not None else
                    "was started without --from: rerun it without --from") + " (or pass a new --run-dir)")
        if self.from_run is None:
            return
        check_earlier(self.from_run, self.task)

    def _continue_plan(self, ctx: RunContext, encoder: str) -> None:
        """The drift test of a run that continues an earlier one; without drift, the bootstrap sample's
        reviews go to the stages (decided once, before anything is routed)."""
        store = ctx.store
        drift = test_drift(store, ctx.features, encoder, self.task.seed, self.progress, ctx.engine)
        if drift.get("drifted") or store.is_done(ROUTE_BOOTSTRAP) or not ctx.plan.bootstrap:
            return
        if not ctx.registry.trainable():
            return  # nothing trainable: the bootstrap sample is what validates the fixed specialists
        ctx.plan = without_bootstrap(ctx.plan)
        store.set_meta("budget_plan", ctx.plan.to_dict())

    def _open_store(self) -> RunStore:
        return open_run_store(self.run_dir, self.task, self.input_path, self._output, self.from_run, self._selected)

    def _choose_specialists(self) -> list[SpecialistSpec]:
        """The task's specialists; with `specialists: auto` and an `llm:` section, the ones the LLM
        meta-controller picks (saved in the run store, so a resumed run keeps them)."""
        task = self.task
        if task.specialists != "auto":
            return list(task.specialists)
        chosen = None if self.from_run is None else selected_specialists(self.from_run)
        if chosen is not None:  # the earlier run's choice: a chain keeps its specialists
            self._selected = [SpecialistSpec.model_validate(sp) for sp in chosen]
            return self._selected
        if task.llm is None:
            return auto_specialists(task)
        from ..controller.select import select_for_run

        self._selected = select_for_run(task, self.run_dir, self.progress)
        return self._selected

    def _build_specialists(self) -> list[tuple[Specialist, dict[str, Any]]]:
        built = []
        for spec, name in zip(self._specs, specialist_names(self._specs), strict=True):
            try:
                built.append((build_specialist(spec, self.task, name=name), spec.model_dump(mode="json")))
            except SpecialistError as err:
                if self._selected is None:  # the user's own list: a mistake to fix
                    raise
                self._unbuilt[name] = str(err)
                self.progress.log(f"skipped LLM-selected specialist {name}: {err}")  # e.g. hub unreachable
        return built

    def _fresh(self, name: str) -> Specialist:
        for spec, n in zip(self._specs, specialist_names(self._specs), strict=True):
            if n == name:
                return build_specialist(spec, self.task, name=n)
        raise KeyError(name)

    def _budget_plan(self, store: RunStore, built: list[tuple[Specialist, dict[str, Any]]]) -> BudgetPlan:
        """The run's budget plan, computed once after ingest and kept in the run store."""
        saved = store.get_meta("budget_plan")
        if saved is not None:
            plan = BudgetPlan.from_dict(saved)
            total = budget_rows(self.task.review, store.n_rows)
            if total == plan.total:
                return plan
            routed = sum(1 for i in range(len(plan.stages)) if store.is_done(route_hard(i)))
            try:
                resized = resize_plan(plan, total, routed)
            except ValueError as err:
                raise RunStoreError(f"review.budget of {total} rows is too small for this run: {err}; "
                                    "raise it, or pass a new --run-dir") from None
            with store.transaction() as c:
                store.set_meta("budget_plan", resized.to_dict(), c)
                store.undo_steps([FINAL_UPDATE, FINALIZE], c)
            self.progress.log(f"review budget {plan.total} -> {total} rows: {len(resized.stages) - routed} stage(s) "
                              "still to come")
            return resized
        try:
            plan = plan_budget(self.task.review, self.task.continual, n_rows=store.n_rows,
                               n_texts=store.n_input_texts - store.carried_totals()[1],
                               n_labels=len(self.task.labels), trainable=any(m.trainable for m, _ in built))
        except TaskError as err:  # nothing reviewed yet; this run directory belongs to this task file
            raise TaskError(f"{err}; then rerun with a new --run-dir (or delete {str(self.run_dir)!r}: nothing was "
                            "reviewed in it yet)") from None
        store.set_meta("budget_plan", plan.to_dict())
        why = no_audit_reason(self.task.review, store.n_rows) if plan.total else None
        if why is not None:  # the run's own accuracy will not be estimated: say so before anything is spent
            self.progress.log(f"no audit sample: {why}")
        return plan

    def _report(self, store: RunStore, status: str, output: Path | None, desk: ReviewDesk) -> RunReport:
        n_rows = store.n_rows
        return RunReport(
            status=status, run_dir=self.run_dir, output=output, rows=n_rows, texts=store.n_input_texts,
            sources=store.source_counts() if status == "complete" else {},
            reviews=store.count_reviews(), budget=budget_rows(self.task.review, n_rows),
            pending=desk.pending(),
            queue=next((r.path for r in _members(self.reviewer) if isinstance(r, Queued)), None),
            waiting_for="human" if any(r.kind == "human" for r in _members(self.reviewer)) else "file",
            specialists=[r.to_dict() for r in read_registry(store)],
            unspent=int(store.get_meta("unspent_reviews") or 0) if status == "complete" else 0)


def check_input_and_output(input_path: Path, text_column: str, output: str | Path | None) -> None:
    """Before anything is written: the input has the text column and none of the columns labeljury adds, and
    the output can be written (and is not the input)."""
    cols = data.check_input(input_path, text_column)
    taken = [c for c in (*OUTPUT_COLUMNS, *DETAIL_COLUMNS) if c in cols]
    if taken:
        raise InputError(f"{input_path.name} already has a column {taken[0]!r}; rename or drop it "
                         "so labeljury can add its own")
    if output is not None:
        data.check_output(output, input_path)


def open_run_store(run_dir: Path, task: Task, input_path: Path, output: str | Path | None,
                   from_run: Path | None = None, selected: list[SpecialistSpec] | None = None) -> RunStore:
    """The run's store, locked; a new one records the task and the input, an existing one must belong to
    the same task file and input."""
    store = RunStore(run_dir)
    try:
        store.lock()
    except RunStoreError:
        store.close()
        raise
    fp = {"task": task.fingerprint(), "input": input_fingerprint(input_path)}
    old = store.get_meta("fingerprint")
    if old is None:
        if from_run is not None:  # before the fingerprint: a run that has one says whether it continues one
            store.set_meta(FROM_RUN, str(from_run.resolve()))
        store.set_meta("fingerprint", fp)
        store.set_meta("task", task.model_dump(mode="json"))
        store.set_meta("input_path", str(input_path.resolve()))
    elif old != fp:
        what = "task file" if old["task"] != fp["task"] else "input file"
        store.close()
        raise RunStoreError(f"run directory {str(run_dir)!r} belongs to a run with another {what}; "
                            "pass a new --run-dir (or delete that one) to start afresh")
    if output is not None:
        store.set_meta("output_path", str(Path(output).resolve()))
    if selected is not None:
        store.set_meta("selected_specialists", [sp.model_dump(mode="json") for sp in selected])
    return store


def _members(reviewer: Reviewer | None) -> list[Reviewer]:
    from ..review.cascade import CascadeReviewer

    if reviewer is None:
        return []
    return [r for r, _ in reviewer.reviewers] if isinstance(reviewer, CascadeReviewer) else [reviewer]


def run(task: Task, input_path: str | Path, output: str | Path, run_dir: str | Path | None = None, *,
        reviewer: Reviewer | None = None, progress: Progress | None = None, details: bool = False,
        finish: bool = False, engine: Engine | None = None, tuning: Tuning | None = None,
        stopping: StoppingCriterion | None = None, from_run: str | Path | None = None) -> RunReport:
    """Label `input_path` with `task` and write `output`. Resumes the run in `run_dir` if it exists.
    `from_run`: the run directory of an earlier batch this run continues (`pipeline.carry`).
    With `finish`, goes on without the answers people have not given yet (see `Annotator.run`).
    `engine` overrides the task's (`labeljury.engine`); `tuning` (`context.Tuning`) switches on settings
    that were measured and lost, for benchmarks; `stopping` (`continual.StoppingCriterion`) may end the
    stages before the budget is spent (default: none does)."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(output)
    if task.multi_label:  # label sets: their own steps (`multilabel.run`), on the same store and reviewers
        from ..multilabel import SetAnnotator

        return SetAnnotator(task, input_path, run_dir, reviewer=reviewer, progress=progress, engine=engine,
                            from_run=from_run).run(output, details=details, finish=finish)
    return Annotator(task, input_path, run_dir, reviewer=reviewer, progress=progress, engine=engine,
                     tuning=tuning, stopping=stopping, from_run=from_run).run(output, details=details, finish=finish)
