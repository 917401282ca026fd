"""Training specialists on reviewed rows: fresh copies with their unlabeled-row features fitted, fit or
update on the reviewed labels of any text ids, accuracy on held-out rows, cross-validation.

Used by the bootstrap (version 1 of each head, cross-validated accuracy) and by the continual stages
(every later version). What a version is called and where it is saved is the registry's business.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .progress import Progress, SilentProgress
from .registry import Registry
from .routing import in_sorted
from .scoring import Features
from .sources import AUDIT_INCLUSION
from .specialists import LearnsFromUnlabeled, Specialist, Updatable
from .specialists.base import TrainsInBatches
from .store import RunStore
from .voting import hard_labels

POOL_SAMPLE = 50_000  # n-gram vocabularies are fitted on at most this many unlabeled texts
FOLDS = 5  # cross-fitting: folds of the reviewed rows
# the audit's folds (`audit_cross_fit`): each audit row is voted by copies fitted on all but a tenth of the audit,
# nearer the final versions (fitted on all of it) than five folds' copies: where the audit's answers are most of
# the good labels (a poor LLM reviewer beside people), five folds left the estimate 6 points below the truth
AUDIT_FOLDS = 10


def reviewed(store: RunStore, ids: Sequence[int] | None = None) -> tuple[np.ndarray, list[str]]:
    """(sorted text ids, their labels) of the reviewed rows a specialist may learn from, among `ids`
    (default all): every row that got a label, except the audit sample, which only measures; where a
    reviewer's answers are weighed, the label to learn from is the weighing's verdict (`weighing`)."""
    keys, labels = store.learned_labels()
    if ids is None:
        return keys, labels
    keep = np.flatnonzero(in_sorted(keys, np.unique(np.asarray(list(ids), dtype=np.int64))))
    return keys[keep], [labels[i] for i in keep]


def audited(store: RunStore) -> tuple[np.ndarray, list[str]]:
    """(sorted text ids, labels) of the audit rows that got a label: the rows that measure."""
    return store.audited_labels()


def audit_weights(store: RunStore, ids: np.ndarray) -> np.ndarray:
    """(len(ids),) the weight of each audit row wherever the audit measures: (1 - pi) / pi for a row drawn
    with probability pi (`pipeline.bootstrap.route_audit_by_hardness`), scaled to a mean of 1 over the
    whole audit; all 1 for a uniform draw (and for rows not drawn with a known probability). Why (1 - pi)
    / pi: the audit stands for the rows left unreviewed, and a row drawn with probability pi is one of
    those with probability 1 - pi (Horvitz-Thompson: the sum over the sample of y (1 - pi) / pi is, on
    average, the sum over the rows not drawn); a uniform draw's weights are all equal either way."""
    drawn = store.get_meta(AUDIT_INCLUSION)
    ids = np.asarray(ids, dtype=np.int64)
    if not drawn or not drawn.get("ids"):
        return np.ones(len(ids))
    pi = np.asarray(drawn["pi"], dtype=np.float64)
    # a row drawn for sure stands for no row left unreviewed (a tiny weight keeps a group's mean defined)
    inv = np.maximum((1.0 - pi) / pi, 1e-9)
    inv /= inv.mean()
    of = dict(zip(drawn["ids"], inv.tolist(), strict=True))
    return np.array([of.get(int(t), 1.0) for t in ids.tolist()], dtype=np.float64)


def labels_of(store: RunStore, ids: np.ndarray, include_audit: bool = False) -> list[str]:
    """The labels to learn from of reviewed rows `ids` (each must be one: see `reviewed`; audit rows
    too with `include_audit`)."""
    keys, labels = store.learned_labels(include_audit=include_audit)
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(keys, ids)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == ids[found]
    if not found.all():
        raise KeyError(f"text {int(ids[~found][0])} has no reviewed label to learn from")
    return [labels[i] for i in pos.tolist()]


def bounded_rows(train: np.ndarray, newest: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """At most `cap` of the rows `train` (sorted; None: all): every one of `newest` that fits (a
    uniform sample of them if they alone are more), then a uniform sample of the others: what a refit
    holds in memory stays bounded however many rows were reviewed."""
    train = np.asarray(train, dtype=np.int64)
    if cap is None or len(train) <= cap:
        return train
    rng = np.random.default_rng(seed)
    newest = np.intersect1d(newest, train)
    if len(newest) >= cap:
        return np.sort(rng.choice(newest, cap, replace=False))
    rest = np.setdiff1d(train, newest)
    return np.union1d(newest, rng.choice(rest, cap - len(newest), replace=False))


class Trainer:
    def __init__(self, store: RunStore, registry: Registry, features: Features, labels: Sequence[str],
                 seed: int = 0, progress: Progress | None = None, train_weights: bool = False):
        self.store = store
        self.registry = registry
        self.features = features
        self.labels = list(labels)
        self.seed = seed
        self.progress = progress or SilentProgress()
        self.train_weights = train_weights  # learn a weighed reviewer's answers by the belief in each (measured, lost)
        self._pool: np.ndarray | None = None

    def pool(self) -> np.ndarray:
        """A fixed random sample of the input's text ids, for fitting features on unlabeled rows (not the
        texts an earlier batch brought: its reviewed rows train, and the features are this batch's)."""
        if self._pool is None:
            n = self.store.n_input_texts
            ids = np.arange(n)
            if n > POOL_SAMPLE:
                ids = np.sort(np.random.default_rng(self.seed).choice(n, POOL_SAMPLE, replace=False))
            self._pool = ids
        return self._pool

    def new(self, name: str) -> Specialist:
        """A fresh, unfitted copy of specialist `name`, with its features fitted on unlabeled rows."""
        model = self.registry.fresh(name)
        if isinstance(model, LearnsFromUnlabeled):
            pool = self.pool()
            with self.progress.bar(f"{name}: features from {len(pool):,} unlabeled rows", len(pool)) as bar:
                model.fit_unsupervised(self.features.rows(model, pool))
                bar.advance(len(pool))
        return model

    def fit(self, model: Specialist, ids: np.ndarray, *, update: bool = False, with_audit: bool = False) -> Specialist:
        """Fit `model` on the reviewed labels of `ids` (with `update`, continue training it on them;
        `with_audit`: `ids` may hold audit rows)."""
        X, y = self.features.rows(model, ids), labels_of(self.store, ids, include_audit=with_audit)
        weights = self.store.train_weights() if self.train_weights else {}
        w = [weights.get(int(i), 1.0) for i in ids] if weights else None
        if isinstance(model, TrainsInBatches):  # a long fit (fine-tuning) reports each batch: a bar with an ETA
            epochs = int(model.epochs)
            what = "updating" if update else "fine-tuning"
            with self.progress.bar(f"{model.name}: {what} on {len(ids):,} rows x {epochs} epochs", len(ids) * epochs) as bar:
                model.on_rows = bar.advance
                try:
                    self._fit(model, X, y, update, w)
                finally:
                    model.on_rows = None
            return model
        self._fit(model, X, y, update, w)
        return model

    @staticmethod
    def _fit(model: Specialist, X: Any, y: list[str], update: bool, w: list[float] | None) -> None:
        # with `train_weights`, rows of a weighed reviewer count as much as they are believed,
        # for specialists that take weights (every built-in trainable one); others learn from each once
        extra = {"sample_weight": w} if w is not None and model.accepts_sample_weight else {}
        if update:
            assert isinstance(model, Updatable)
            model.update(X, y, **extra)
        else:
            model.fit(X, y, **extra)  # type: ignore[attr-defined]

    def predict(self, model: Specialist, ids: np.ndarray) -> np.ndarray | None:
        """`model`'s label index for rows `ids`, -1 where it abstains (None for no rows)."""
        if not len(ids):
            return None
        return hard_labels(model.predict_proba(self.features.rows(model, ids)))

    def right(self, model: Specialist, ids: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Which of rows `ids` (label indices `y`) `model` gets right (None for no rows)."""
        pred = self.predict(model, ids)
        return None if pred is None else pred == y

    def cross_fit(self, name: str, ids: np.ndarray, y: Sequence[str], *, stratified: bool = True,
                  folds: int = FOLDS) -> Iterator[OutOfFold]:
        """The one cross-fitting path: for each of `folds` folds of rows `ids` (labels `y`), a fresh copy of
        `name` fitted on the other folds. Stratified folds shrink to the rarest label's count (none when
        it is under 2); plain ones are `folds` random slices."""
        from sklearn.model_selection import KFold, StratifiedKFold

        y_arr = np.array(y)
        if stratified:
            counts = np.unique(y_arr, return_counts=True)[1]
            folds = int(min(folds, counts.min())) if len(counts) > 1 else 0
            if folds < 2:
                return
            splits = StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(ids, y_arr)
        else:
            splits = KFold(folds, shuffle=True, random_state=self.seed).split(ids)
        for train, test in splits:
            clone = self.new(name)
            self._fit(clone, self.features.rows(clone, ids[train]), y_arr[train].tolist(), False, None)
            yield OutOfFold(clone, train, test)

    def audit_cross_fit(self, name: str, base: np.ndarray, audit: np.ndarray, folds: int = AUDIT_FOLDS) -> np.ndarray:
        """(len(audit), k) out-of-fold probabilities on the audit rows `audit` of fresh copies of `name`,
        each fitted on the rows `base` and the other folds of the audit: how a version fitted on both
        would do on audit rows it did not see (NaN where a copy abstains)."""
        from sklearn.model_selection import KFold

        out = np.full((len(audit), len(self.labels)), np.nan, np.float32)
        folds = min(folds, len(audit))
        if folds < 2:
            return out
        for train, test in KFold(folds, shuffle=True, random_state=self.seed).split(audit):
            clone = self.fit(self.new(name), np.union1d(base, audit[train]), with_audit=True)
            out[test] = clone.predict_proba(self.features.rows(clone, audit[test]))
        return out

    def cross_val_proba(self, name: str, ids: np.ndarray, y: list[str], folds: int = FOLDS) -> np.ndarray | None:
        """(len(ids), k) out-of-fold probabilities of fresh copies of `name`, each fitted on the other
        folds; None where a class is too rare to fold."""
        out = None
        for oof in self.cross_fit(name, ids, y, folds=folds):
            if out is None:
                out = np.full((len(ids), len(self.labels)), np.nan, np.float32)
            out[oof.test] = oof.model.predict_proba(self.features.rows(oof.model, ids[oof.test]))
        return out

    def cross_val_predict(self, name: str, ids: np.ndarray, y: list[str]) -> np.ndarray:
        """Out-of-fold label indices of fresh copies of `name` (-1 where a class is too rare to fold)."""
        pred = np.full(len(ids), -1)
        for oof in self.cross_fit(name, ids, y):
            pred[oof.test] = hard_labels(oof.model.predict_proba(self.features.rows(oof.model, ids[oof.test])))
        return pred


@dataclass(frozen=True)
class OutOfFold:
    """One fold of a cross-fit: a copy fitted without rows `test` (positions in the ids cross-fitted)."""

    model: Specialist
    train: np.ndarray
    test: np.ndarray
