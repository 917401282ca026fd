"""The one scoring path: what each specialist reads for any set of rows, each specialist version's
predictions per chunk (computed once, kept in the run store), and the vote tensor built from them.

Routing, the review prompts, the continual-learning gate, finalize and the plan all read the vote
through the `Scorer` (`votes`: every row, a chunk at a time; `vote`: any few rows), under one label
model fitted on every row, so they can never disagree about what the specialists said. The vote
tensor (rows x specialists x labels, NaN = abstain) is the boundary with `voting`: the label model
never sees a specialist. No pass holds more than a chunk of it.

`Features` serves texts, embeddings and memoised feature blocks (n-grams, lexicon scores) by chunk of
`store.CHUNK` text ids, through a cache bounded in bytes: a run re-reads the same rows every stage.
Feature blocks pushed out of memory go to files in a spill folder (when given) instead of being
lost: at a million rows the n-grams alone are ~1.5 GB, and computing them again each stage would
cost more than the stage; reading them back costs a second. The folder lives as long as the
`Features` (emptied when made and on `close`): a new process computes its blocks afresh.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import voting
from .engine import ChunkJob, Engine, LocalEngine, ScoreWorker
from .progress import Progress, SilentProgress
from .registry import Registry
from .sources import AUDIT_OOF
from .specialists.base import bounded, model_input, reads
from .store import CHUNK, RunStore, ids_hash

CACHE_BYTES = 256 << 20  # feature chunks kept in memory (embeddings, n-grams, lexicon scores, texts)
KEPT = 4  # values fitted on many rows (vocabularies) kept besides the chunks


def _nbytes(value: Any) -> int:
    import scipy.sparse as sp

    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if sp.issparse(value):
        m = value.tocsr()
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)
    if isinstance(value, list):  # texts: each string object (header and characters) and a pointer to it
        return sys.getsizeof(value) + sum(map(sys.getsizeof, value))
    return 1024


def _stack(parts: list[Any]) -> Any:
    import scipy.sparse as sp

    if sp.issparse(parts[0]):
        return sp.vstack(parts, format="csr")
    if isinstance(parts[0], list):
        return [x for p in parts for x in p]
    return np.concatenate(parts)


def _take(value: Any, idx: np.ndarray) -> Any:
    return [value[i] for i in idx] if isinstance(value, list) else value[idx]


class Features:
    """What specialists read, for any text ids, from the run store, through a bounded chunk cache
    (and, with `spill_dir`, a folder that keeps the feature blocks memory could not)."""

    def __init__(self, store: RunStore, cache_bytes: int | None = None, spill_dir: str | Path | None = None):
        self.store = store
        self.cache_bytes = CACHE_BYTES if cache_bytes is None else cache_bytes
        self._cache: OrderedDict[Hashable, tuple[Any, int, bool]] = OrderedDict()
        self._used = 0
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self._spilled: set[Hashable] = set()
        self._kept: OrderedDict[Hashable, Any] = OrderedDict()
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)  # a block's key is only unique in one process

    def close(self) -> None:
        """Delete the spill folder (the cache in memory goes with the object)."""
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            self._spilled.clear()

    # -- the cache -----------------------------------------------------------------------------------
    def cached(self, key: Hashable, compute: Callable[[], Any], spill: bool = False) -> Any:
        """The value under `key`, computed once. With `spill` (and a spill folder), a value evicted
        from memory is written there and read back instead of computed again."""
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0]
        value = self._read_spilled(key) if key in self._spilled else None
        if value is None:
            value = compute()
        size = _nbytes(value)
        if size > self.cache_bytes:
            if spill and key not in self._spilled:
                self._write_spilled(key, value)
            return value
        self._cache[key] = (value, size, spill)
        self._used += size
        while self._used > self.cache_bytes:
            old_key, (old, old_size, old_spill) = self._cache.popitem(last=False)
            self._used -= old_size
            if old_spill and old_key not in self._spilled:
                self._write_spilled(old_key, old)
        return value

    def kept(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A value computed once from many rows (an n-gram vocabulary), kept apart from the chunk cache
        so that a pass over more rows than memory holds does not push it out (the last KEPT of them)."""
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        value = self._kept[key] = compute()
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return value

    def _spill_path(self, key: Hashable) -> Path:
        assert self.spill_dir is not None
        return self.spill_dir / (hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest() + ".npy")

    # A block is its arrays saved one after the other in one .npy file (a sparse one: data, indices,
    # indptr, shape), not an .npz: a zip member is CRC-checked on every read, which cost a third of
    # the reading time, and every stage reads every block back.
    def _write_spilled(self, key: Hashable, value: Any) -> None:
        import scipy.sparse as sp

        if self.spill_dir is None or not (isinstance(value, np.ndarray) or sp.issparse(value)):
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        if sp.issparse(value):
            m = value.tocsr()
            arrays = [m.data, m.indices, m.indptr, np.array(m.shape, np.int64)]
        else:
            arrays = [value]
        with open(self._spill_path(key), "wb") as f:
            np.save(f, np.array(len(arrays), np.int64))
            for a in arrays:
                np.save(f, a, allow_pickle=False)
        self._spilled.add(key)

    def _read_spilled(self, key: Hashable) -> Any:
        import scipy.sparse as sp

        with open(self._spill_path(key), "rb") as f:
            arrays = [np.load(f) for _ in range(int(np.load(f)))]
        if len(arrays) == 1:
            return arrays[0]
        data, indices, indptr, shape = arrays
        return sp.csr_matrix((data, indices, indptr), shape=tuple(int(x) for x in shape))

    def span(self, chunk: int) -> tuple[int, int]:
        start = chunk * CHUNK
        return start, min(start + CHUNK, self.store.n_texts)

    def by_chunk(self, ids: np.ndarray, chunk_value: Callable[[int], Any]) -> Any:
        """Rows `ids` (in any order) of a value computed per chunk, in the order of `ids`."""
        ids = np.asarray(ids, dtype=np.int64)
        chunks = ids // CHUNK
        order = np.argsort(chunks, kind="stable")
        uniq, starts = np.unique(chunks[order], return_index=True)
        parts = []
        for c, lo, hi in zip(uniq.tolist(), starts.tolist(), [*starts[1:].tolist(), len(ids)], strict=True):
            parts.append(_take(chunk_value(c), ids[order[lo:hi]] - c * CHUNK))
        stacked = _stack(parts)
        if np.all(order[1:] > order[:-1]):  # ids already grouped by chunk: no reordering
            return stacked
        return _take(stacked, np.argsort(order, kind="stable"))

    # -- texts and embeddings ------------------------------------------------------------------------
    def chunk_texts(self, chunk: int) -> list[str]:
        return self.cached(("texts", chunk), lambda: [bounded(t) for t in self.store.texts(*self.span(chunk))])

    def chunk_embeddings(self, encoder: str, chunk: int) -> np.ndarray:
        def read() -> np.ndarray:
            emb = self.store.get_embeddings(encoder, chunk)
            if emb is None:
                raise KeyError(f"no {encoder} embeddings for chunk {chunk}: the encode step has not run")
            return emb

        return self.cached(("embeddings", encoder, chunk), read)

    def texts(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        ids = np.asarray(ids, dtype=np.int64)
        return self.by_chunk(ids, self.chunk_texts) if len(ids) else []

    def embeddings(self, encoder: str, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros((0, 0), np.float32)
        return self.by_chunk(ids, lambda c: self.chunk_embeddings(encoder, c))

    # -- what a specialist reads -------------------------------------------------------------------
    def rows(self, model: Any, ids: Sequence[int] | np.ndarray) -> Any:
        """The input `model` reads for text ids `ids`: an embedding array, or `Rows` (texts, and
        embeddings for a text+embedding model) whose feature blocks are memoised per chunk."""
        ids = np.asarray(ids, dtype=np.int64)
        texts, embeddings = reads(model)
        emb = self.embeddings(model.encoder, ids) if embeddings else None
        return model_input(model, LazyTexts(self, ids) if texts else None, emb, ChunkMemo(self, ids))


class LazyTexts(Sequence[str]):
    """The texts of rows `ids`, read from the run store when first used: a head whose feature blocks
    are memoised never needs them, and reading a million texts every stage costs seconds."""

    def __init__(self, features: Features, ids: np.ndarray):
        self.features = features
        self.ids = ids
        self._texts: list[str] | None = None

    def _all(self) -> list[str]:
        if self._texts is None:
            self._texts = self.features.texts(self.ids)
        return self._texts

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return self._all()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def take(self, idx: np.ndarray) -> LazyTexts:
        return LazyTexts(self.features, self.ids[np.asarray(idx, dtype=np.int64)])


@dataclass
class ChunkMemo:
    """The `FeatureMemo` of rows `ids`: a block is computed per whole chunk, once per run, and sliced."""

    features: Features
    ids: np.ndarray

    def block(self, key: Hashable, compute: Callable[[list[str]], Any]) -> Any:
        f = self.features
        if not len(self.ids):
            return compute([])
        return f.by_chunk(self.ids, lambda c: f.cached(("block", key, c), lambda: compute(f.chunk_texts(c)),
                                                       spill=True))

    def value(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        return self.features.kept(("value", key, ids_hash(np.sort(self.ids))), compute)

    def take(self, idx: np.ndarray) -> ChunkMemo:
        return ChunkMemo(self.features, self.ids[np.asarray(idx, dtype=np.int64)])


@dataclass
class Vote:
    """The aggregated vote of rows `ids` with the tensor it came from."""

    ids: np.ndarray
    result: voting.VoteResult
    P: np.ndarray  # (n, m, k)
    names: list[str]


class Scorer:
    """Predictions of every voting specialist version, per chunk, stored once; the vote of any rows.

    The label model is fitted on every row (Dawid-Skene: its pattern counts, gathered chunk by chunk)
    and kept until a voter's version or a reviewed label changes; `votes` streams the vote of every
    row a chunk at a time, `vote` gives it for any rows. Nothing here holds the whole input."""

    def __init__(self, store: RunStore, features: Features, registry: Registry, labels: Sequence[str],
                 method: voting.Method, progress: Progress | None = None, engine: Engine | None = None):
        self.engine = engine or LocalEngine()
        self.store = store
        self.features = features
        self.registry = registry
        self.labels = list(labels)
        self.k = len(self.labels)
        self.method = method
        self.progress = progress or SilentProgress()
        self._fitted: tuple[Hashable, voting.LabelModel] | None = None

    def proba(self, model: Any, ids: np.ndarray) -> np.ndarray:
        """(len(ids), k) task-ordered probabilities of `model` (any version, even one not promoted)."""
        if not len(ids):
            return np.zeros((0, self.k), np.float32)
        return np.asarray(model.predict_proba(self.features.rows(model, ids)), dtype=np.float32)

    def ensure(self, chunks: Sequence[int] | None = None) -> None:
        """Compute and store the predictions of the current voters that are missing for `chunks`
        (default: every chunk)."""
        s, reg = self.store, self.registry
        chunks = range(self.n_chunks) if chunks is None else chunks
        todo = []
        for name in reg.voters():
            have = s.prediction_chunks(name, reg.versions[name])
            todo += [(name, c) for c in chunks if c not in have]
        if not todo:
            return
        todo.sort(key=lambda job: job[1])  # chunk by chunk: specialists that read the same block share it
        with self.progress.bar("specialists voting", sum(len(range(*self.features.span(c))) for _, c in todo)) as bar:
            worker = ScoreWorker({name: reg.models[name] for name in {n for n, _ in todo}})
            for (name, c), proba in self.engine.map(worker, (self._job(name, c) for name, c in todo)):
                s.put_predictions(name, reg.versions[name], c, proba)
                bar.advance(len(range(*self.features.span(c))))

    def _job(self, name: str, chunk: int) -> ChunkJob:
        """What specialist `name` reads of `chunk`, for an engine's worker: in this process, the rows as the
        features give them (their feature blocks shared through the memo); elsewhere, texts and embeddings."""
        model = self.registry.models[name]
        if self.engine.in_process:
            return ChunkJob((name, chunk), rows=self.features.rows(model, np.arange(*self.features.span(chunk))))
        texts, embeddings = reads(model)
        emb = self.features.chunk_embeddings(model.encoder, chunk) if embeddings else None
        return ChunkJob((name, chunk), self.features.chunk_texts(chunk) if texts else None, emb)

    @property
    def n_chunks(self) -> int:
        return -(-self.store.n_texts // CHUNK)

    def tensor(self, ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(len(ids), m, k) stored probabilities of the current voters; NaN = abstain."""
        ids = np.asarray(ids, dtype=np.int64)
        names = self.registry.voters()
        P = np.full((len(ids), len(names), self.k), np.nan, np.float32)
        if not len(ids):
            return P, names
        chunks = np.unique(ids // CHUNK)
        self.ensure(chunks.tolist())
        for j, name in enumerate(names):
            version = self.registry.versions[name]
            P[:, j] = self.features.by_chunk(ids, lambda c: self.store.get_predictions(name, version, c))
        return P, names

    def chunk_tensor(self, chunk: int) -> tuple[np.ndarray, list[str]]:
        """The stored tensor of every row of `chunk` (its predictions must exist: `ensure`)."""
        names = self.registry.voters()
        a, b = self.features.span(chunk)
        P = np.full((b - a, len(names), self.k), np.nan, np.float32)
        for j, name in enumerate(names):
            P[:, j] = self.store.get_predictions(name, self.registry.versions[name], chunk)
        return P, names

    def weights(self, names: list[str]) -> np.ndarray:
        """Soft-vote weights: the log-odds of each specialist's accuracy on rows it was not trained on
        (bootstrap cross-validation and each stage's held-out rows); 1 where never validated."""
        info = self.registry.weights_source()
        acc = np.array([info[n]["validation_accuracy"] if info[n]["validation_rows"] else np.nan for n in names])
        seen = np.array([info[n]["validation_rows"] or 0 for n in names], dtype=float)
        return voting.log_odds_weights(acc, seen, self.k)

    def known(self, ids: np.ndarray) -> np.ndarray:
        """Reviewed labels of `ids` as label indices, -1 where unreviewed or audited (the vote on an
        audit row must never see its label: it is what the audit measures)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros(0, np.int64)
        return self.features.by_chunk(ids, lambda c: self._known_chunk(*self.features.span(c)))

    def _known_chunk(self, start: int, stop: int) -> np.ndarray:
        out = np.full(stop - start, -1, np.int64)
        index = {lab: i for i, lab in enumerate(self.labels)}
        t, lab = self.store.learned_labels(start, stop)
        out[t - start] = [index[x] for x in lab]
        return out

    @property
    def _uses_known(self) -> bool:
        return self.method == "dawid-skene"

    def label_model(self) -> voting.LabelModel:
        """The run's label model over the current voters, fitted on every row where it learns from
        them (Dawid-Skene, with the reviewed labels clamped): refitted only when a voter's version or
        a reviewed label changed since the last fit."""
        names = self.registry.voters()
        if not names:  # only trainable specialists, none fitted yet: nobody votes, every row stays unlabeled
            return voting.NoVoters()
        if self.method != "dawid-skene":  # nothing to fit: the soft vote's weights are the registry's
            return voting.label_model(self.method, self.weights(names) if self.method == "soft" else None)
        key = (tuple((n, self.registry.versions[n]) for n in names), self.store.labels_signature())
        if self._fitted is None or self._fitted[0] != key:
            self.ensure()
            with self.progress.bar("voting: fitting Dawid-Skene", self.store.n_texts) as bar:
                def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                    for c in range(self.n_chunks):
                        P, _ = self.chunk_tensor(c)
                        yield P, self._known_chunk(*self.features.span(c))
                        bar.advance(len(P))

                self._fitted = (key, voting.DawidSkene().fit(batches()))
        return self._fitted[1]

    def votes(self, what: str) -> Iterator[Vote]:
        """The vote of every row, a chunk at a time, in text id order, under a progress bar for the
        pass `what` is."""
        self.ensure()
        model = self.label_model()
        with self.progress.bar(f"voting: {what}", self.store.n_texts) as bar:
            for c in range(self.n_chunks):
                a, b = self.features.span(c)
                P, names = self.chunk_tensor(c)
                known = self._known_chunk(a, b) if self._uses_known else None
                yield Vote(np.arange(a, b, dtype=np.int64), model.predict(P, known), P, names)
                bar.advance(b - a)

    def vote(self, ids: np.ndarray) -> Vote:
        """The vote of rows `ids`, by the label model fitted on every row."""
        ids = np.asarray(ids, dtype=np.int64)
        model = self.label_model()
        P, names = self.tensor(ids)
        return Vote(ids, model.predict(P, self.known(ids) if self._uses_known else None), P, names)

    def audit_vote(self, ids: np.ndarray) -> Vote:
        """The vote of audit rows `ids` as the audit measures it: where the final refit of a specialist
        also learned from the audit, its column holds the out-of-fold predictions of copies fitted
        without each row (`sources.AUDIT_OOF`); the other columns are the stored ones."""
        ids = np.asarray(ids, dtype=np.int64)
        oof = self.store.get_meta(AUDIT_OOF) or {}
        if not oof.get("specialists"):
            return self.vote(ids)
        P, names = self.tensor(ids)
        at = {int(t): i for i, t in enumerate(oof["ids"])}
        rows = np.array([at.get(int(t), -1) for t in ids], np.int64)
        has = rows >= 0
        for j, name in enumerate(names):
            entry = oof["specialists"].get(name)
            if entry is not None and entry["version"] == self.registry.versions[name] and has.any():
                P[has, j] = np.asarray(entry["probs"], dtype=np.float32)[rows[has]]
        return Vote(ids, self.predict(P), P, names)

    def predict(self, P: np.ndarray) -> voting.VoteResult:
        """The run's label model applied to a tensor of the current voters computed elsewhere (e.g.
        by cross-fitted copies), without clamping any row to its reviewed label."""
        return self.label_model().predict(P)

    def opinions(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """What the specialists said about each row, for a reviewer: the vote, its confidence, each
        specialist's label and probabilities."""
        v = self.vote(np.asarray(list(ids), dtype=np.int64))
        out = {}
        for i, t in enumerate(v.ids.tolist()):
            lab = int(v.result.label[i])
            out[t] = {
                "vote": None if lab < 0 else self.labels[lab],
                "confidence": float(v.result.confidence[i]),
                "votes": {n: None if np.isnan(v.P[i, j]).any() else self.labels[int(v.P[i, j].argmax())]
                          for j, n in enumerate(v.names)},
                "probabilities": {n: [] if np.isnan(v.P[i, j]).any() else [round(float(x), 4) for x in v.P[i, j]]
                                  for j, n in enumerate(v.names)},
                "prior": None if lab < 0 else [round(float(x), 5) for x in v.result.posterior[i]],
            }
        return out
