"""The annotation pipeline: data flows one way through the layers, and through the run store.

    ingest -> encode -> bootstrap review -> fit + validate specialists
           -> for each stage: predict -> vote -> route -> review -> continual update (gated)
           -> final refit -> finalize (re-score) -> export

Every step reads its inputs from the `RunStore` and writes its results there before the next step
starts, marking itself done; rerunning the same command skips what is done, so a run killed at any
moment resumes to the same output. A reviewer that must wait for a person stops the run with
status "waiting"; rerunning resumes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import data, routing, voting
from .errors import InputError, RunStoreError, SpecialistError
from .progress import Progress, SilentProgress
from .review.base import Reviewer, ReviewItem
from .specialists import DEFAULT_ENCODER, TextsWithEmbeddings, build_specialist, get_encoder
from .specialists.catalog import auto_specialists, specialist_names
from .store import CHUNK, RunStore
from .task import ContinualSpec, SpecialistSpec, Task

OUTPUT_COLUMNS = ("annotation", "annotation_confidence", "annotation_source")
DETAIL_COLUMNS = ("annotation_vote", "annotation_vote_confidence", "annotation_votes")
BOOTSTRAP_SAMPLE = 50_000  # k-means for the bootstrap runs on at most this many embeddings
POOL_SAMPLE = 50_000  # n-gram vocabularies are fitted on at most this many unlabeled texts
MAX_STAGES = 16  # more stages measured no better (BENCHMARKS.md), and each one refits every head
MIN_STAGE_REVIEWS = 25
CANDIDATES = 50_000  # each stage scores at most this many texts to pick its hard rows
_READS_EMBEDDINGS = ("embedding", "text+embedding")


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

    def summary(self) -> str:
        if self.status == "waiting":
            return (f"waiting for {self.pending} review(s) in {self.queue}: set \"label\" on each line, "
                    "then rerun the same command")
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.sources.items()))
        return f"labeled {self.rows} rows ({parts}); {self.reviews}/{self.budget} reviews; output {self.output}"


def default_run_dir(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".run")


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size plus a hash of the first and last MiB: cheap, and catches a changed input."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return {"size": size, "sha256_ends": h.hexdigest()}


class Annotator:
    """One run of a task over one input, backed by one run directory."""

    def __init__(self, task: Task, input_path: str | Path, run_dir: str | Path,
                 reviewer: Reviewer | None = None, progress: Progress | None = None):
        self.task = task
        self.input_path = Path(input_path)
        self.run_dir = Path(run_dir)
        self.progress = progress or SilentProgress()
        self.labels = task.label_names
        self.k = len(self.labels)
        self._reviewer = reviewer
        self.store: RunStore | None = None
        self.models: dict[str, Any] = {}  # active specialists by name
        self.versions: dict[str, int] = {}
        self._selected: list[SpecialistSpec] | None = None  # chosen by the LLM meta-controller

    # -- set-up -----------------------------------------------------------------------------------
    def _check_input(self) -> None:
        cols = data.check_input(self.input_path, self.task.text_column)
        taken = [c for c in (*OUTPUT_COLUMNS, *DETAIL_COLUMNS) if c in cols]
        if taken:
            raise InputError(f"{self.input_path.name} already has a column {taken[0]!r}; rename or drop it "
                             "so labeljury can add its own")

    def _open_store(self) -> RunStore:
        store = RunStore(self.run_dir)
        fp = {"task": self.task.fingerprint(), "input": input_fingerprint(self.input_path)}
        old = store.get_meta("fingerprint")
        if old is None:
            store.set_meta("fingerprint", fp)
            store.set_meta("task", self.task.model_dump(mode="json"))
            store.set_meta("input_path", str(self.input_path.resolve()))
        elif old != fp:
            what = "task file" if old["task"] != fp["task"] else "input file"
            store.close()
            raise RunStoreError(f"run directory {str(self.run_dir)!r} belongs to a run with another {what}; "
                                "pass a new --run-dir (or delete that one) to start afresh")
        return store

    def reviewer(self) -> Reviewer:
        if self._reviewer is None:
            self._reviewer = make_reviewer(self.task, self.input_path, self.run_dir)
        return self._reviewer

    def _specs(self) -> list[SpecialistSpec]:
        if self._selected is not None:
            return self._selected
        return auto_specialists(self.task) if self.task.specialists == "auto" else list(self.task.specialists)

    def _select_with_llm(self) -> None:
        """`specialists: auto` with an `llm:` section: the LLM picks specialists among the catalog and
        the hub's text classifiers (the paper's "select SLMs"); the trainable heads always join them.
        The choice is saved in the run store, so a resumed run keeps it even if the hub changed."""
        if self.task.specialists != "auto" or self.task.llm is None:
            return
        saved = None
        if (self.run_dir / "run.db").exists():
            with RunStore(self.run_dir) as store:
                saved = store.get_meta("selected_specialists")
        if saved is None:
            from .controller.select import select
            from .llm import LLMClient, Ledger, SQLiteCallCache

            self.run_dir.mkdir(parents=True, exist_ok=True)
            cache = SQLiteCallCache(self.run_dir / "run.db")
            usd, tok = cache.totals()
            result = select(self.task, LLMClient(self.task.llm), hub=True, cache=cache,
                            ledger=Ledger.for_spec(self.task.llm, spent_usd=usd, spent_tokens=tok))
            picked = list(result.specs)
            ids = {sp.id for sp in picked}
            picked += [sp for sp in auto_specialists(self.task) if sp.id.endswith("-head") and sp.id not in ids]
            saved = [sp.model_dump(mode="json") for sp in picked]
            self.progress.log(f"LLM selected specialists: {', '.join(sp.id for sp in picked)}"
                              + (f" (fallback: {result.why})" if result.fallback else ""))
        self._selected = [SpecialistSpec.model_validate(sp) for sp in saved]

    # -- the run -------------------------------------------------------------------------------------
    def run(self, output: str | Path | None = None, details: bool = False) -> RunReport:
        self._check_input()
        if output is not None:
            data.check_output(output, self.input_path)
        reviewer = self.reviewer()
        if hasattr(reviewer, "check"):
            reviewer.check()
        self._select_with_llm()
        built = self._construct_specialists()  # an unknown specialist fails before anything is written
        self.store = self._open_store()
        if self._selected is not None:
            self.store.set_meta("selected_specialists", [sp.model_dump(mode="json") for sp in self._selected])
        try:
            self._ingest()
            self._build_specialists(built)
            self._encode()
            if not self._bootstrap():
                return self._waiting()
            self._validate_and_fit()
            stages = self._stages()
            for stage, budget in enumerate(stages):
                if not self._route_and_review(stage, budget):
                    return self._waiting()
                self._update(stage)
            if self._cont.rescore:
                self._update(len(stages), final=True)
            self._finalize()
            self._write_plan()
            if output is not None:
                export(self.store, self.input_path, output, details=details, progress=self.progress)
            return self._report("complete", None if output is None else Path(output))
        finally:
            self.store.close()
            if hasattr(reviewer, "close"):
                reviewer.close()

    def _report(self, status: str, output: Path | None, pending: int = 0) -> RunReport:
        s = self.store
        n_rows = s.n_rows
        return RunReport(
            status=status, run_dir=self.run_dir, output=output, rows=n_rows, texts=s.n_texts,
            sources=s.source_counts() if status == "complete" else {},
            reviews=len(s.reviews()), budget=self.task.review.budget_rows(n_rows), pending=pending,
            queue=getattr(self.reviewer(), "path", None), specialists=s.specialists())

    def _waiting(self) -> RunReport:
        pending = len(self.store.reviews(include_pending=True)) - len(self.store.reviews())
        return self._report("waiting", None, pending)

    # -- ingest ----------------------------------------------------------------------------------------
    def _ingest(self) -> None:
        s = self.store
        if s.is_done("ingest"):
            return
        done = s.get_meta("ingested_rows", 0)
        col = self.task.text_column
        with self.progress.bar("reading rows", None) as bar:
            for chunk in data.iter_chunks(self.input_path, columns=[col]):
                start = int(chunk.index.start) if hasattr(chunk.index, "start") else int(chunk.index[0])
                stop = start + len(chunk)
                if stop <= done:
                    bar.advance(stop - start)
                    continue
                values = chunk[col].tolist()[max(0, done - start):]
                first = max(start, done)
                texts = [v if data.is_text(v) else None for v in values]
                s.add_rows(first, texts, [None if t is not None else "empty" for t in texts])
                bar.advance(stop - start)
        s.mark_done("ingest")

    # -- specialists ------------------------------------------------------------------------------------
    def _construct_specialists(self) -> list[tuple[Any, SpecialistSpec]]:
        specs = self._specs()
        built = []
        for spec, n in zip(specs, specialist_names(specs), strict=True):
            try:
                built.append((build_specialist(spec, self.task, name=n), spec))
            except SpecialistError as err:
                if self._selected is None:  # the user's own list: a mistake to fix
                    raise
                self.progress.log(f"skipped LLM-selected specialist {n}: {err}")  # e.g. hub unreachable
        return built

    def _build_specialists(self, built: list[tuple[Any, SpecialistSpec]]) -> None:
        if not self.store.specialists():
            self.store.save_specialists([{"name": m.name, "spec": spec.model_dump(mode="json")} for m, spec in built])
        status = {e["name"]: e for e in self.store.specialists()}
        for model, spec in built:
            entry = status.get(model.name)
            if entry is None or entry["spec"] != spec.model_dump(mode="json"):
                raise RunStoreError(f"specialist {model.name!r} differs from the one this run started with; "
                                    "pass a new --run-dir")
            if entry["status"] == "active":
                mapping = self.store.get_meta(f"label_map:{model.name}")
                if mapping is not None:
                    from .specialists.base import LabelMap

                    lm = model.label_map
                    model.label_map = LabelMap.build(lm.source, lm.target, mapping, specialist=model.name)
                self.models[model.name] = model
                self.versions[model.name] = entry["version"]
                if model.trainable and entry["version"] > 0:
                    self._restore(model, entry["version"])

    def _encoders(self) -> list[str]:
        encs = {m.encoder for m in self.models.values() if m.input_kind in _READS_EMBEDDINGS and m.encoder}
        if self.task.review.bootstrap_rows(self.store.n_rows, self.k) > 0:
            encs.add(next(iter(encs)) if encs else DEFAULT_ENCODER)
        return sorted(encs)

    def _encode(self) -> None:
        """One encoder pass over the unique texts, cached per chunk: every embedding-based
        specialist and the bootstrap sampler read it from the store."""
        s = self.store
        for enc_id in self._encoders():
            todo = [(c, a, b) for c, a, b in s.chunks() if not s.has_embeddings(enc_id, c)]
            if not todo:
                continue
            encoder = get_encoder(enc_id)
            with self.progress.bar(f"encoding ({enc_id})", sum(b - a for _, a, b in todo)) as bar:
                for c, a, b in todo:
                    s.put_embeddings(enc_id, c, encoder.encode(s.texts(a, b)))
                    bar.advance(b - a)

    def _embeddings(self, encoder: str, start: int, stop: int) -> np.ndarray:
        parts = []
        for c in range(start // CHUNK, (stop - 1) // CHUNK + 1):
            emb = self.store.get_embeddings(encoder, c)
            lo = c * CHUNK
            parts.append(emb[max(start, lo) - lo: min(stop, lo + len(emb)) - lo])
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _embeddings_for_ids(self, encoder: str, ids: np.ndarray) -> np.ndarray:
        out = None
        for c in np.unique(ids // CHUNK):
            emb = self.store.get_embeddings(encoder, int(c))
            mask = ids // CHUNK == c
            if out is None:
                out = np.zeros((len(ids), emb.shape[1]), np.float32)
            out[mask] = emb[ids[mask] - c * CHUNK]
        return out if out is not None else np.zeros((0, 0), np.float32)

    def _features(self, model: Any, start: int, stop: int) -> Any:
        """The input `model` reads for text ids [start, stop): texts, cached embeddings, or both."""
        if model.input_kind == "embedding":
            return self._embeddings(model.encoder, start, stop)
        texts = self.store.texts(start, stop)
        if model.input_kind == "text+embedding":
            return TextsWithEmbeddings(texts, self._embeddings(model.encoder, start, stop))
        return texts

    def _features_for_ids(self, model: Any, ids: np.ndarray) -> Any:
        ids = np.asarray(ids, dtype=np.int64)
        if model.input_kind == "embedding":
            return self._embeddings_for_ids(model.encoder, ids)
        by_id = self.store.texts_by_id(ids.tolist())
        texts = [by_id[int(i)][0] for i in ids]
        if model.input_kind == "text+embedding":
            return TextsWithEmbeddings(texts, self._embeddings_for_ids(model.encoder, ids))
        return texts

    # -- bootstrap -------------------------------------------------------------------------------------
    def _bootstrap(self) -> bool:
        """Review a small diverse sample first. Returns False while reviews are pending."""
        s = self.store
        if not s.is_done("route:bootstrap"):
            n = min(self.task.review.bootstrap_rows(s.n_rows, self.k), s.n_texts)
            ids = self._diverse_sample(n) if n else np.zeros(0, np.int64)
            s.add_routing(ids.tolist(), "bootstrap", None, stage=0, done_step="route:bootstrap")
        return self._review(s.routed("bootstrap"), "bootstrap")

    def _diverse_sample(self, n: int) -> np.ndarray:
        s = self.store
        rng = np.random.default_rng(self.task.seed)
        pool = np.arange(s.n_texts)
        if len(pool) > BOOTSTRAP_SAMPLE:
            pool = np.sort(rng.choice(pool, BOOTSTRAP_SAMPLE, replace=False))
        encs = self._encoders()
        emb = None
        if encs:
            emb = self._embeddings_for_ids(encs[0], pool)
        picked = routing.select_bootstrap(emb, n, seed=self.task.seed, n_rows=len(pool))
        return pool[picked]

    # -- fit and validate -------------------------------------------------------------------------------
    def _checkpoint(self, name: str, version: int) -> Path:
        return self.run_dir / "checkpoints" / f"{name}-v{version}"

    def _restore(self, model: Any, version: int) -> None:
        """Load the promoted checkpoint `version` of a trainable specialist (refit if it is missing)."""
        path = self._checkpoint(model.name, version)
        inner = getattr(model, "inner", model)
        if path.exists() and hasattr(type(inner), "load"):
            self._load_into(model, path)
        else:  # a specialist without save/load: refit on the rows that version was trained on
            self._fit(model, version, np.array(self.store.get_meta(f"train_ids:{model.name}:{version}", []), np.int64))

    def _labeled(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, list[str]]:
        reviews = self.store.labeled_reviews()
        keep = reviews.keys() if ids is None else [i for i in ids if i in reviews]
        keys = np.array(sorted(keep), dtype=np.int64)
        return keys, [reviews[int(k)] for k in keys]

    def _pool_texts(self) -> list[str]:
        """A fixed random sample of the unlabeled texts, for unsupervised feature fitting."""
        if not hasattr(self, "_pool"):
            n = self.store.n_texts
            ids = np.arange(n)
            if n > POOL_SAMPLE:
                ids = np.sort(np.random.default_rng(self.task.seed).choice(n, POOL_SAMPLE, replace=False))
            by_id = self.store.texts_by_id(ids.tolist())
            self._pool = [by_id[int(i)][0] for i in ids]
        return self._pool

    def _new(self, name: str) -> Any:
        """A fresh, unfitted copy of specialist `name`, with its unsupervised features fitted."""
        model = self._fresh(name)
        inner = getattr(model, "inner", model)
        if hasattr(inner, "fit_unsupervised"):
            with self.progress.bar(f"{name}: features from unlabeled rows", None):
                inner.fit_unsupervised(self._pool_texts())
        return model

    def _fit(self, model: Any, version: int, ids: np.ndarray, update: bool = False) -> Any:
        """Fit `model` on the reviewed rows `ids` (or, with `update`, continue training it on them)
        and write checkpoint `version` (atomically)."""
        reviews = self.store.labeled_reviews()
        train = model.inner.update if update and hasattr(model, "inner") else model.update if update else model.fit
        train(self._features_for_ids(model, ids), [reviews[int(i)] for i in ids])
        inner = getattr(model, "inner", model)
        if hasattr(inner, "save"):
            path = self._checkpoint(model.name, version)
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            inner.save(tmp)
            shutil.rmtree(path, ignore_errors=True)  # left by a run killed before it was promoted
            os.replace(tmp, path)
        return model

    def _validate_and_fit(self) -> None:
        """Score every specialist on the reviewed bootstrap rows (trainable ones by cross-validation),
        drop those worse than chance, then fit the trainable ones on the bootstrap (version 1)."""
        s = self.store
        if not s.is_done("validate"):
            ids, y = self._labeled(s.routed("bootstrap"))
            chance = 1.0 / self.k
            for name, model in list(self.models.items()):
                self._recheck_label_map(name, model, ids, y)
                acc = self._validation_accuracy(model, ids, y)
                if acc is None:
                    s.update_specialist(name, validation_rows=0, note="not validated: too few reviewed rows")
                    continue
                if acc < chance:
                    s.update_specialist(name, status="dropped", validation_accuracy=acc, validation_rows=len(ids),
                                        note=f"dropped: accuracy {acc:.3f} on the bootstrap sample is below chance {chance:.3f}")
                    self.progress.log(f"dropped specialist {name}: bootstrap accuracy {acc:.1%} < chance {chance:.1%}")
                    del self.models[name]
                else:
                    s.update_specialist(name, validation_accuracy=acc, validation_rows=len(ids))
            s.mark_done("validate")
        ids, _ = self._labeled()
        for name in list(self.models):
            model = self.models[name]
            if model.trainable and self.versions[name] == 0 and ids.size:
                fitted = self._fit(self._new(name), 1, ids)
                with s.transaction() as c:
                    s.set_meta(f"train_ids:{name}:1", ids.tolist(), c)
                    s.update_specialist(name, version=1, conn=c)
                self.models[name], self.versions[name] = fitted, 1

    def _recheck_label_map(self, name: str, model: Any, ids: np.ndarray, y: list[str]) -> None:
        """A model with labels of its own: keep its label map only if it agrees with the reviewed
        bootstrap rows about as well as the best possible map; else switch to the best one."""
        if not hasattr(model, "label_map") or len(ids) < 2 * self.k:
            return
        from .controller.validate import recheck_label_map

        check = recheck_label_map(model, self._features_for_ids(model, ids), y)
        if check is not None and not check.accepted:
            self.store.set_meta(f"label_map:{name}", dict(model.label_map.mapping))
            self.progress.log(f"specialist {name}: {check.note()}")

    def _validation_accuracy(self, model: Any, ids: np.ndarray, y: list[str]) -> float | None:
        if len(ids) < 2 * self.k:
            return None
        y_idx = np.array([self.labels.index(v) for v in y])
        if model.trainable and hasattr(getattr(model, "inner", model), "update"):
            return None  # cross-validating a fine-tuned transformer costs k fine-tunes: the stages validate it
        if model.trainable:
            pred = self._cross_val_predict(model, ids, y)
        else:
            pred = _hard(model.predict_proba(self._features_for_ids(model, ids)))
        voted = pred >= 0
        if voted.sum() < 2 * self.k:
            return None
        return float((pred[voted] == y_idx[voted]).mean())

    def _cross_val_predict(self, model: Any, ids: np.ndarray, y: list[str]) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold

        y_arr = np.array(y)
        counts = np.unique(y_arr, return_counts=True)[1]
        folds = int(min(5, counts.min())) if len(counts) > 1 else 0
        pred = np.full(len(ids), -1)
        if folds < 2:
            return pred
        X = self._features_for_ids(model, ids)
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=self.task.seed).split(ids, y_arr):
            clone = self._new(model.name)
            clone.fit(_take(X, train), y_arr[train].tolist())
            pred[test] = _hard(clone.predict_proba(_take(X, test)))
        return pred

    def _fresh(self, name: str) -> Any:
        specs = self._specs()
        for spec, n in zip(specs, specialist_names(specs), strict=True):
            if n == name:
                return build_specialist(spec, self.task, name=n)
        raise KeyError(name)

    # -- stages ------------------------------------------------------------------------------------------
    @property
    def _cont(self) -> ContinualSpec:
        """The task's continual-learning settings, or the defaults when the task has none."""
        return self.task.continual or ContinualSpec()

    @property
    def _continual(self) -> bool:
        c = self._cont
        return (c is None or c.enabled) and any(m.trainable for m in self.models.values())

    def _stages(self) -> list[int]:
        """The review budget of each stage, fixed when first computed.

        Each stage picks its rows from the whole input (a random candidate sample of at most
        CANDIDATES texts on larger inputs), scored by the current specialists, rather than from
        its own slice of the stream: on financial-sentiment at 20% reviewed, 89.3% accuracy against
        84.8% for slices, because rows scored by an early, weak model are revisited later. With
        continual learning, each stage brings `stage_size` reviews; by default the hard-row budget
        is split into up to 16 stages of at least 25 reviews."""
        s = self.store
        plan = s.get_meta("stage_plan")
        if plan is None:
            n = s.n_texts
            hard_budget = max(0, self.task.review.budget_rows(s.n_rows) - len(s.routed("bootstrap")))
            size = self._cont.stage_size
            if not self._continual or n == 0:
                n_stages = 1
            elif size:
                n_stages = math.ceil(hard_budget / size)
            else:
                n_stages = min(MAX_STAGES, hard_budget // MIN_STAGE_REVIEWS)
            n_stages = int(min(max(1, n_stages), max(1, n)))
            base, extra = divmod(hard_budget, n_stages)
            plan = [base + (i < extra) for i in range(n_stages)]
            s.set_meta("stage_plan", plan)
        return list(plan)

    def _candidates(self, stage: int) -> np.ndarray:
        n = self.store.n_texts
        if n <= CANDIDATES:
            return np.arange(n)
        rng = np.random.default_rng(self.task.seed * 1_000_003 + 7919 * (stage + 1))
        return np.sort(rng.choice(n, CANDIDATES, replace=False))

    def aggregate_ids(self, ids: np.ndarray) -> tuple[voting.VoteResult, np.ndarray, list[str]]:
        """Vote of the current specialists on the texts `ids`, computed now (not cached)."""
        names = [n for n, m in self.models.items() if self.versions[n] > 0 or not m.trainable]
        P = np.full((len(ids), len(names), self.k), np.nan, np.float32)
        for j, name in enumerate(names):
            m = self.models[name]
            if not len(ids):
                continue
            if m.trainable:
                P[:, j] = m.predict_proba(self._features_for_ids(m, ids))
            else:  # a fixed specialist: its cached per-chunk predictions serve every stage
                chunks = np.unique(ids // CHUNK)
                spans = {c: (a, b) for c, a, b in self.store.chunks() if c in set(chunks.tolist())}
                for c in chunks:
                    a, b = spans[int(c)]
                    self._predict(a, b, only=name)
                    pr = self.store.get_predictions(name, 0, int(c))
                    mask = ids // CHUNK == c
                    P[mask, j] = pr[ids[mask] - a]
        return self._vote(P, names, ids), P, names

    def _predict(self, start: int, stop: int, only: str | None = None) -> None:
        s = self.store
        todo = [(name, m, c, a, b) for name, m in self.models.items()
                if (self.versions[name] > 0 or not m.trainable) and only in (None, name)
                for c, a, b in s.chunks() if b > start and a < stop
                and s.get_predictions(name, self.versions[name], c) is None]
        if not todo:
            return
        with self.progress.bar("specialists voting", sum(b - a for *_, a, b in todo)) as bar:
            for name, m, c, a, b in todo:
                proba = np.asarray(m.predict_proba(self._features(m, a, b)), dtype=np.float32)
                s.put_predictions(name, self.versions[name], c, proba)
                bar.advance(b - a)

    def vote_tensor(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        """(stop-start, m, k) probabilities of the active fitted specialists; NaN = abstain."""
        versions = self.versions
        names = [n for n in self.models if versions[n] > 0 or not self.models[n].trainable]
        P = np.full((stop - start, len(names), self.k), np.nan, np.float32)
        for j, name in enumerate(names):
            for c, a, b in self.store.chunks():
                if b <= start or a >= stop:
                    continue
                pr = self.store.get_predictions(name, versions[name], c)
                lo, hi = max(a, start), min(b, stop)
                P[lo - start: hi - start, j] = pr[lo - a: hi - a]
        return P, names

    def _known(self, ids: np.ndarray) -> np.ndarray:
        reviews = self.store.labeled_reviews()
        return np.array([self.labels.index(reviews[int(t)]) if int(t) in reviews else -1 for t in ids], np.int64)

    def vote_weights(self, names: list[str]) -> np.ndarray:
        """Soft-vote weights: the log-odds of each specialist's accuracy on rows it was not trained on
        (bootstrap cross-validation and each stage's held-out rows); 1 where never validated."""
        info = {e["name"]: e for e in self.store.specialists()}
        acc = np.array([info[n]["validation_accuracy"] if info[n]["validation_rows"] else np.nan for n in names])
        seen = np.array([info[n]["validation_rows"] or 0 for n in names], dtype=float)
        return voting.log_odds_weights(acc, seen, self.k)

    def aggregate(self, start: int, stop: int) -> tuple[voting.VoteResult, np.ndarray, list[str]]:
        P, names = self.vote_tensor(start, stop)
        return self._vote(P, names, np.arange(start, stop)), P, names

    def _vote(self, P: np.ndarray, names: list[str], ids: np.ndarray) -> voting.VoteResult:
        if self.task.voting == "dawid-skene":
            return voting.aggregate(P, "dawid-skene", known=self._known(ids))
        if self.task.voting == "soft":
            return voting.aggregate(P, "soft", weights=self.vote_weights(names))
        return voting.aggregate(P, self.task.voting)

    def _route_and_review(self, stage: int, stage_budget: int) -> bool:
        s = self.store
        step = f"route:hard:{stage}"
        if not s.is_done(step):
            ids = self._candidates(stage)
            result, P, names = self.aggregate_ids(ids)
            budget_left = min(stage_budget, max(0, self.task.review.budget_rows(s.n_rows) - s.n_routed))
            routed = np.isin(ids, np.array(s.routed(), np.int64))
            h = routing.hardness(result, P, self.task.review.policy)
            sel = routing.select_for_review(h, budget_left, threshold=self.task.review.threshold,
                                            policy=self.task.review.policy, exclude=routed,
                                            unanimous=result.unanimous)
            s.add_routing(ids[sel].tolist(), "hard", h[sel].tolist(), stage, done_step=step)
        return self._review(s.routed("hard", stage), "hard", with_votes=True)

    # -- continual learning -------------------------------------------------------------------------
    def _update(self, stage: int, final: bool = False) -> None:
        """Refit each trainable specialist on every reviewed row so far, except a held-out slice of
        this stage's reviews; promote the new version only if it is not worse than the current one
        on that slice, else keep (roll back to) the current one. Every specialist's accuracy on the
        slice also feeds its vote weight. The slice joins the training rows of the next stage.

        The `final` refit, after the last stage, trains on every reviewed row; with nothing left to
        hold out it is promoted as is: it sees a superset of the rows of the version it replaces."""
        s = self.store
        step = "update:final" if final else f"update:{stage}"
        if s.is_done(step) or not self._continual:
            return
        t0 = time.perf_counter()
        all_ids, _ = self._labeled()
        stage_ids, _ = self._labeled(s.routed("hard", stage)) if not final else (np.zeros(0, np.int64), [])
        n_hold = int(round(self._cont.holdout * len(stage_ids)))
        rng = np.random.default_rng(self.task.seed * 1_000_003 + stage)
        hold = np.sort(rng.choice(stage_ids, n_hold, replace=False)) if n_hold else np.zeros(0, np.int64)
        train = np.setdiff1d(all_ids, hold)
        reviews = s.labeled_reviews()
        y_hold = np.array([self.labels.index(reviews[int(t)]) for t in hold], dtype=np.int64)
        info = {e["name"]: e for e in s.specialists()}
        metrics: dict[str, Any] = {"stage": stage, "final": final, "train_rows": int(len(train)),
                                   "holdout_rows": int(len(hold)), "specialists": {}}
        updates: dict[str, dict[str, Any]] = {}
        fitted: dict[str, tuple[Any, int]] = {}
        for name, model in self.models.items():
            entry: dict[str, Any] = {}
            before = self._accuracy(model, hold, y_hold) if (self.versions[name] or not model.trainable) else None
            same_rows = s.get_meta(f"train_ids:{name}:{self.versions[name]}") == train.tolist()
            if model.trainable and len(train) and not same_rows:
                t1 = time.perf_counter()
                new_version = self.versions[name] + 1
                cand = self._candidate(name, model, new_version, train, stage)
                after = self._accuracy(cand, hold, y_hold)
                promote = final or before is None or after is None or after >= before
                entry.update(version_before=self.versions[name], accuracy_after=after, promoted=promote,
                             fit_seconds=round(time.perf_counter() - t1, 3))
                if promote:
                    fitted[name] = (cand, new_version)
                else:
                    shutil.rmtree(self._checkpoint(name, new_version), ignore_errors=True)
                scored = after if promote else before
            else:
                scored = before
            entry["accuracy_before"] = before
            if scored is not None and len(hold):  # accumulate held-out accuracy for the vote weights
                seen = (info[name]["validation_rows"] or 0)
                acc0 = info[name]["validation_accuracy"] or 0.0
                total = seen + len(hold)
                updates[name] = {"validation_accuracy": (acc0 * seen + scored * len(hold)) / total,
                                 "validation_rows": total}
            metrics["specialists"][name] = entry
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        with s.transaction() as c:
            for name, (_, version) in fitted.items():
                s.set_meta(f"train_ids:{name}:{version}", train.tolist(), c)
                s.update_specialist(name, version=version, conn=c)
            for name, fields in updates.items():
                s.update_specialist(name, conn=c, **fields)
            s.put_stage(stage, metrics, conn=c)
            s.mark_done(step, c)
        for name, (cand, version) in fitted.items():
            self.models[name], self.versions[name] = cand, version

    def _candidate(self, name: str, model: Any, version: int, train: np.ndarray, stage: int) -> Any:
        """The next version of a trainable specialist. Cheap heads are refitted from scratch on every
        reviewed row (the complete replay). A model with `update` (a fine-tuned transformer, minutes
        per fit) continues from its current weights on the rows new since its last version plus a
        replay sample of `continual.replay` earlier rows, so it neither forgets nor retrains all."""
        inner = getattr(model, "inner", model)
        if not (hasattr(inner, "update") and self.versions[name] > 0):
            return self._fit(self._new(name), version, train)
        cand = self._fresh(name)
        self._load_into(cand, self._checkpoint(name, self.versions[name]))
        before = np.array(self.store.get_meta(f"train_ids:{name}:{self.versions[name]}", []), np.int64)
        new = np.setdiff1d(train, before)
        old = np.intersect1d(train, before)
        replay = self._cont.replay
        rng = np.random.default_rng(self.task.seed * 1_000_003 + 31 * (stage + 1))
        old = rng.choice(old, min(replay, len(old)), replace=False) if len(old) else old
        return self._fit(cand, version, np.union1d(new, old), update=True)

    def _load_into(self, model: Any, path: Path) -> None:
        inner = getattr(model, "inner", model)
        loaded = type(inner).load(path)
        loaded.name = model.name
        if hasattr(model, "inner"):
            model.inner = loaded
        else:
            model.__dict__.update(loaded.__dict__)

    def _accuracy(self, model: Any, ids: np.ndarray, y: np.ndarray) -> float | None:
        if not len(ids):
            return None
        pred = _hard(model.predict_proba(self._features_for_ids(model, ids)))
        return float((pred == y).mean())

    # -- review -----------------------------------------------------------------------------------------
    def _review(self, ids: list[int], why: str, with_votes: bool = False) -> bool:
        """Ask the reviewer for the routed ids that have no answer yet; store each answer at once.
        Returns False while some answers are pending (a person has to fill in the queue)."""
        s = self.store
        done = s.reviews()
        todo = [t for t in ids if t not in done]
        if not todo:
            return True
        texts = s.texts_by_id(todo)
        votes: dict[int, dict[str, Any]] = {}
        if with_votes:
            result, P, names = self.aggregate_ids(np.array(todo, np.int64))
            for i, t in enumerate(todo):
                votes[t] = {
                    "vote": None if result.label[i] < 0 else self.labels[result.label[i]],
                    "confidence": float(result.confidence[i]),
                    "votes": {n: None if np.isnan(P[i, j]).any() else self.labels[int(P[i, j].argmax())]
                              for j, n in enumerate(names)},
                    "probabilities": {n: [] if np.isnan(P[i, j]).any() else [round(float(x), 4) for x in P[i, j]]
                                      for j, n in enumerate(names)},
                }
        items = [ReviewItem(key=t, text=texts[t][0], row=texts[t][1], reason=why, **votes.get(t, {})) for t in todo]
        pending = 0
        with self.progress.bar(f"review ({why}, {self.reviewer().kind})", len(items)) as bar:
            for res in self.reviewer().review(items):
                s.put_review(res)
                pending += res.pending
                bar.advance()
        return pending == 0

    # -- plan ------------------------------------------------------------------------------------------
    def _write_plan(self) -> None:
        """plan.json (specialists, label maps, checkpoints, fitted vote parameters, routing) and the
        standalone annotate.py rendered from it by templates, in the run directory."""
        from .controller.codegen import write_annotate_script
        from .controller.plan import build_plan, specialist_entry, write_plan

        n = self.store.n_texts
        # soft-vote weights do not depend on the rows; Dawid-Skene's parameters come from all of them
        result, _, names = self.aggregate(0, n if self.task.voting == "dawid-skene" else min(1, n))
        info = {e["name"]: e for e in self.store.specialists()}
        try:
            entries = [specialist_entry(
                n, SpecialistSpec.model_validate(info[n]["spec"]), self.models[n], run_dir=self.run_dir,
                checkpoint=self._checkpoint(n, self.versions[n]) if self.models[n].trainable else None,
                validation_accuracy=info[n]["validation_accuracy"]) for n in names]
            plan = build_plan(self.task, entries, result)
        except SpecialistError as err:
            self.progress.log(f"no plan.json / annotate.py for this run: {err}")
            return
        write_plan(self.run_dir, plan)
        write_annotate_script(self.run_dir, plan)

    # -- finalize ---------------------------------------------------------------------------------------
    def _finalize(self) -> None:
        """One label per text: the reviewer's where there is one, else the vote — of the final
        specialists, in one cached pass over every text."""
        s = self.store
        if s.is_done("finalize"):
            return
        reviews = s.reviews()
        n = s.n_texts
        self._predict(0, n)
        parts = [(0, n, *self.aggregate(0, n))]

        def records():
            for a, b, result, P, names in parts:
                for t in range(a, b):
                    i = t - a
                    lab = int(result.label[i])
                    vote = None if lab < 0 else self.labels[lab]
                    vconf = None if lab < 0 else round(float(result.confidence[i]), 6)
                    votes = json.dumps({nm: None if np.isnan(P[i, j]).any() else self.labels[int(P[i, j].argmax())]
                                        for j, nm in enumerate(names)})
                    r = reviews.get(t)
                    if r is not None and r.label is not None:
                        yield (t, r.label, r.confidence, r.source, vote, vconf, votes)
                    elif vote is None:
                        yield (t, None, None, r.source if r is not None else "skipped:no-vote", None, None, votes)
                    else:
                        source = r.source if r is not None else (
                            "consensus" if result.unanimous[i] and result.n_votes[i] == len(names) else "vote")
                        yield (t, vote, vconf, source, vote, vconf, votes)

        s.put_final(records())


def _hard(proba: np.ndarray) -> np.ndarray:
    """Argmax per row, -1 where the specialist abstained (NaN row)."""
    proba = np.asarray(proba)
    voted = ~np.isnan(proba).any(axis=1)
    return np.where(voted, np.nan_to_num(proba).argmax(axis=1), -1)


def _take(X: Any, idx: np.ndarray) -> Any:
    if isinstance(X, (np.ndarray, TextsWithEmbeddings)):
        return X[idx] if isinstance(X, np.ndarray) else X.take(idx)
    return [X[i] for i in idx]


def make_reviewer(task: Task, input_path: Path, run_dir: Path) -> Reviewer:
    from .review import FileReviewer, GoldReviewer

    spec = task.reviewer
    if spec.kind == "gold":
        return GoldReviewer(input_path, spec.column or "label", task.label_names)
    if spec.kind == "file":
        return FileReviewer(spec.path or (run_dir / "review_queue.jsonl"), task.label_names)
    from .review.llm import make_llm_reviewer  # the LLM layer is only imported when used

    return make_llm_reviewer(task, run_dir)


def export(store: RunStore, input_path: str | Path, output: str | Path, details: bool = False,
           progress: Progress | None = None) -> Path:
    """Write every input row, its columns in order, plus the annotation columns. Atomic."""
    progress = progress or SilentProgress()
    output = Path(output)
    if not store.is_done("finalize"):
        raise RunStoreError(f"run {str(store.run_dir)!r} has not finished labeling; rerun `labeljury run` first")
    data.check_output(output, input_path)
    with data.ChunkWriter(output) as writer, progress.bar("writing output", store.n_rows) as bar:
        for chunk in data.iter_chunks(input_path):
            start = int(chunk.index.start) if hasattr(chunk.index, "start") else int(chunk.index[0])
            stop = start + len(chunk)
            ids, skips = store.row_text_ids(start, stop)
            fin = store.final_for(ids)
            rows = [fin.get(int(t)) if t >= 0 else None for t in ids]
            chunk = chunk.copy()
            chunk["annotation"] = [r[0] if r else None for r in rows]
            chunk["annotation_confidence"] = np.array([r[1] if r and r[1] is not None else np.nan for r in rows],
                                                     dtype=np.float64)
            chunk["annotation_source"] = [r[2] if r else f"skipped:{why}" for r, why in zip(rows, skips)]
            if details:
                chunk["annotation_vote"] = [r[3] if r else None for r in rows]
                chunk["annotation_vote_confidence"] = np.array(
                    [r[4] if r and r[4] is not None else np.nan for r in rows], dtype=np.float64)
                chunk["annotation_votes"] = [r[5] if r else None for r in rows]
            writer.write(chunk)
            bar.advance(stop - start)
    return output


def run(task: Task, input_path: str | Path, output: str | Path, run_dir: str | Path | None = None, *,
        reviewer: Reviewer | None = None, progress: Progress | None = None, details: bool = False) -> RunReport:
    """Label `input_path` with `task` and write `output`. Resumes the run in `run_dir` if it exists."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(output)
    return Annotator(task, input_path, run_dir, reviewer=reviewer, progress=progress).run(output, details=details)
