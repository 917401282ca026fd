"""The specialist protocol: a small model that scores texts against the task's labels.

A specialist is a scikit-learn-like estimator. Its constructor only stores parameters; it exposes
`classes_` (the label names of its output columns) and `predict_proba(X) -> (n, len(classes_))`.
`X` is what its `input_kind` says: texts ("text": a list of texts or `Rows`), an (n, d) array of
sentence embeddings from the shared encoder named by `encoder` ("embedding"), or `Rows` carrying both
("text+embedding") — so every embedding-based specialist shares one encoder pass, which the pipeline
caches in the run store.

What else a specialist can do is declared by the small protocols below, never discovered by probing
attributes: `Trainable` (`fit`; an unfitted trainable specialist abstains), `Updatable` (`update`:
continue training from the current weights), `Persistent` (`save` / `load` a checkpoint folder) and
`LearnsFromUnlabeled` (`fit_unsupervised`: fit features, such as an n-gram vocabulary, on unlabeled
rows), `TrainsInBatches` (a long fit that reports its progress) and `RunsOnDevice` (moves to a GPU). The
class attributes `trainable` (whether the pipeline may train it) and `accepts_sample_weight` (whether
its `fit` / `update` take `sample_weight`) declare the rest. `reads(model)` and `model_input` are the one
place that turns `input_kind` into what the model is given.

A model usually has labels of its own (VADER: negative/neutral/positive; a hub model: LABEL_0...).
`LabelMap` turns its probability columns into the task's label order: the mass of each model label
goes to the task label it maps to, unmapped model labels are dropped, and a row whose mapped mass is
zero is an abstention (NaN row).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from ..errors import SpecialistError

InputKind = Literal["text", "embedding", "text+embedding"]


@runtime_checkable
class Specialist(Protocol):
    """What the pipeline needs from a specialist."""

    name: str
    input_kind: InputKind
    encoder: str | None
    trainable: bool

    @property
    def classes_(self) -> np.ndarray: ...

    def predict_proba(self, X: Any) -> np.ndarray: ...


@runtime_checkable
class Trainable(Protocol):
    """Fits from scratch on reviewed rows."""

    def fit(self, X: Any, y: Sequence[str]) -> Any: ...


@runtime_checkable
class Updatable(Protocol):
    """Continues training from its current weights (a fine-tuned transformer: minutes per fit)."""

    def update(self, X: Any, y: Sequence[str]) -> Any: ...


@runtime_checkable
class Persistent(Protocol):
    """Writes a checkpoint folder with `save`; its class reads it back with `load`."""

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Any: ...


@runtime_checkable
class LearnsFromUnlabeled(Protocol):
    """Fits features (e.g. an n-gram vocabulary) on unlabeled rows before `fit`."""

    def fit_unsupervised(self, X: Any) -> Any: ...


@runtime_checkable
class TrainsInBatches(Protocol):
    """A long fit (fine-tuning): `epochs` passes over the rows, each batch's row count reported to
    `on_rows` (a progress bar) while it trains."""

    epochs: int
    on_rows: Callable[[int], None] | None


@runtime_checkable
class RunsOnDevice(Protocol):
    """A model an engine should give a GPU (`gpu`) and move there (`to_device`) when there is one."""

    gpu: bool

    def to_device(self, device: str) -> None: ...


def reads(model: Any) -> tuple[bool, bool]:
    """(texts, embeddings): what a specialist reads, from its `input_kind`."""
    kind = model.input_kind
    if kind not in ("text", "embedding", "text+embedding"):
        raise SpecialistError(f"specialist {getattr(model, 'name', model)!r} has an unknown input_kind {kind!r}")
    return kind != "embedding", kind != "text"


def model_input(model: Any, texts: Sequence[str] | None, embeddings: np.ndarray | None,
                memo: FeatureMemo | None = None) -> Any:
    """What `model` is given for some rows, from their texts and their embeddings by its encoder (each
    None when the model does not read it: see `reads`): the embedding array itself, or `Rows`."""
    wants_texts, _ = reads(model)
    return embeddings if not wants_texts else Rows(texts, embeddings, memo)


class FeatureMemo(Protocol):
    """Feature blocks of a set of rows, computed once per run and shared by every specialist that asks
    (the pipeline's `scoring.Features` gives one to each `Rows` it builds). `key` names the block and
    everything it depends on (e.g. the fitted vectorizer's fingerprint)."""

    def block(self, key: Hashable, compute: Callable[[list[str]], Any]) -> Any:
        """`compute(texts)` for these rows, in order, from the memo where it can be."""
        ...

    def value(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A value that depends on these rows as a whole (e.g. a vocabulary fitted on them)."""
        ...

    def take(self, idx: np.ndarray) -> FeatureMemo:
        """The memo of a subset of these rows."""
        ...


@dataclass
class Rows:
    """What a specialist reads for n rows: their texts, the shared encoder's embeddings (for models
    whose `input_kind` involves embeddings), or both; `memo` lets feature blocks be shared."""

    texts: Sequence[str] | None  # a list, or a lazy sequence that reads the texts when first used
    embeddings: np.ndarray | None = None
    memo: FeatureMemo | None = None

    def __post_init__(self) -> None:
        if self.texts is None and self.embeddings is None:
            raise SpecialistError("rows need texts, embeddings or both")
        if self.texts is not None and self.embeddings is not None and len(self.texts) != len(self.embeddings):
            raise SpecialistError(f"{len(self.texts)} texts but {len(self.embeddings)} embeddings")

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.embeddings)  # type: ignore[arg-type]

    def take(self, idx: Sequence[int] | np.ndarray) -> Rows:
        idx = np.asarray(idx, dtype=np.int64)
        texts = self.texts
        if texts is not None:
            taker = getattr(texts, "take", None)
            texts = taker(idx) if taker is not None else [texts[i] for i in idx]
        return Rows(texts,
                    None if self.embeddings is None else self.embeddings[idx],
                    None if self.memo is None else self.memo.take(idx))


MAX_TEXT_CHARS = 20_000  # a specialist reads at most this many characters of a text: bounded cost a row


def bounded(text: str) -> str:
    """The part of `text` a specialist reads: its first MAX_TEXT_CHARS characters."""
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS]


def texts_of(X: Any, who: str = "specialist") -> list[str]:
    """The texts of a specialist's input (a list of texts, or `Rows` that carry them), each cut to
    MAX_TEXT_CHARS characters."""
    if isinstance(X, str):
        raise SpecialistError("expected a list of texts, got a single string")
    if isinstance(X, Rows):
        if X.texts is None:
            raise SpecialistError(f"{who} reads texts, but was given embeddings only")
        texts = list(X.texts)
    elif isinstance(X, np.ndarray) and X.ndim == 2 and np.issubdtype(X.dtype, np.number):
        raise SpecialistError(f"{who} reads texts, but was given an embedding array")
    else:
        texts = ["" if t is None else str(t) for t in X]
    if any(len(t) > MAX_TEXT_CHARS for t in texts):
        texts = [bounded(t) for t in texts]
    return texts


def n_rows(X: Any) -> int:
    if isinstance(X, str):
        raise SpecialistError("expected a list of texts or an (n, d) embedding array, got a single string")
    return len(X) if not hasattr(X, "shape") else int(X.shape[0])


class BaseSpecialist:
    """Convenience base: parameters stored by the subclass constructor, sklearn-style."""

    input_kind: ClassVar[InputKind] = "text"
    trainable: ClassVar[bool] = False
    accepts_sample_weight: ClassVar[bool] = False
    encoder: str | None = None
    name: str = "specialist"

    @property
    def is_fitted(self) -> bool:
        return True

    def fit(self, X: Any, y: Sequence[str]) -> BaseSpecialist:  # pragma: no cover - overridden
        raise SpecialistError(f"specialist {self.name!r} cannot be trained")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@dataclass(frozen=True)
class LabelMap:
    """Maps a model's label names to the task's label names (many-to-one allowed)."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    mapping: Mapping[str, str]

    @classmethod
    def build(
        cls,
        model_labels: Sequence[str],
        task_labels: Sequence[str],
        mapping: Mapping[str, str] | None = None,
        *,
        specialist: str = "specialist",
    ) -> LabelMap:
        model_labels = [str(x) for x in model_labels]
        task_labels = [str(x) for x in task_labels]
        if mapping:
            unknown = [k for k in mapping if k not in model_labels]
            if unknown:
                raise SpecialistError(
                    f"label_map of {specialist!r} names {unknown[0]!r}, which is not one of the model's "
                    f"labels {model_labels}; use the model's own label names as keys"
                )
            bad = [v for v in mapping.values() if v not in task_labels]
            if bad:
                raise SpecialistError(
                    f"label_map of {specialist!r} maps to {bad[0]!r}, which is not a task label {task_labels}"
                )
            m = dict(mapping)
        else:
            from ..labels import key  # the one matching rule (case and Unicode forms ignored)

            by_key = {key(t): t for t in task_labels}
            m = {s: by_key[key(s)] for s in model_labels if key(s) in by_key}
            if not m:
                raise SpecialistError(
                    f"specialist {specialist!r} has labels {model_labels}, none of which is a task label "
                    f"{task_labels}; give it a label_map in the task file"
                )
        return cls(tuple(model_labels), tuple(task_labels), m)

    def matrix(self) -> np.ndarray:
        """(len(source), len(target)) 0/1 matrix: probs @ matrix gives task-ordered probabilities."""
        M = np.zeros((len(self.source), len(self.target)), dtype=np.float32)
        t_index = {t: j for j, t in enumerate(self.target)}
        for i, s in enumerate(self.source):
            if s in self.mapping:
                M[i, t_index[self.mapping[s]]] = 1.0
        return M

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Model-ordered (n, len(source)) probabilities -> task-ordered (n, len(target)), rows
        renormalised; rows with no mapped mass become NaN (abstain)."""
        out = np.asarray(proba, dtype=np.float32) @ self.matrix()
        mass = out.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(mass > 0, out / np.where(mass > 0, mass, 1), np.nan)
        return out.astype(np.float32)

    @property
    def covered(self) -> list[str]:
        """The task labels this model can vote for."""
        return sorted(set(self.mapping.values()), key=self.target.index)


class MappedSpecialist:
    """Wraps a fixed specialist with labels of its own (a lexicon, a hub classifier) so that it speaks
    the task's labels. Trainable specialists predict the task's labels themselves and are never wrapped."""

    trainable: ClassVar[bool] = False
    accepts_sample_weight: ClassVar[bool] = False

    def __init__(self, inner: Any, label_map: LabelMap, name: str | None = None):
        if inner.trainable:
            raise SpecialistError(f"{type(inner).__name__} is trainable: it speaks the task's labels, give it no label map")
        self.inner = inner
        self.label_map = label_map
        self.name = name or inner.name

    @property
    def input_kind(self) -> InputKind:
        return self.inner.input_kind

    @property
    def encoder(self) -> str | None:
        return self.inner.encoder

    @property
    def is_fitted(self) -> bool:
        return bool(self.inner.is_fitted)

    @property
    def classes_(self) -> np.ndarray:
        return np.array(self.label_map.target)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.label_map.apply(self.inner.predict_proba(X))

    def __repr__(self) -> str:
        return f"MappedSpecialist({self.inner!r}, covers={self.label_map.covered})"


def task_ordered(specialist: Any, proba: np.ndarray, task_labels: Sequence[str]) -> np.ndarray:
    """Reorder a specialist's (n, k) output whose columns follow its `classes_` into task order,
    filling labels it does not know with 0. Rows that are all NaN stay NaN (abstain)."""
    classes = [str(c) for c in specialist.classes_]
    if classes == list(task_labels):
        return np.asarray(proba, dtype=np.float32)
    out = np.zeros((len(proba), len(task_labels)), dtype=np.float32)
    idx = {c: i for i, c in enumerate(classes)}
    for j, t in enumerate(task_labels):
        if t in idx:
            out[:, j] = proba[:, idx[t]]
    nan_rows = np.isnan(np.asarray(proba, dtype=np.float32)).all(axis=1)
    out[nan_rows] = np.nan
    return out
