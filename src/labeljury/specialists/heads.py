"""Trainable heads: cheap classifiers refitted on the rows reviewers have labeled, in seconds on a CPU.

Each head is a scikit-learn estimator over some of the feature blocks of `features`:

| id             | model                              | features                         |
|----------------|------------------------------------|----------------------------------|
| embedding-head | logistic regression                | embeddings (+ lexicon)           |
| tfidf-head     | logistic regression                | n-grams                          |
| nb-head        | complement naive Bayes             | n-grams                          |
| hybrid-head    | SGD logistic loss (fast on sparse) | embeddings (+ lexicon) + n-grams |

Averaged, embedding-head + nb-head + hybrid-head make the strongest cheap ensemble we measured
(benchmarks/, BENCHMARKS.md). Output columns are always the task's labels in task order, so a label
missing from the training rows gets probability 0 and outputs stay comparable between refits.
Unfitted, a head abstains (NaN rows). `save(dir)` writes plain data (`head.json` and `arrays.npz`,
see `persist`): loading it never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import SpecialistError
from . import persist
from .base import BaseSpecialist, n_rows, texts_of
from .encoder import DEFAULT_ENCODER
from .features import embeddings_of, fit_ngrams, lexicon_features, ngram_features, pool_ngrams

H = TypeVar("H", bound="Head")
ClassWeight = str | Mapping[str, float] | None
CHECKPOINT_FILE = persist.STATE_FILE


class Head(BaseSpecialist):
    """Shared fit/predict/persist logic; subclasses name their feature blocks and classifier."""

    trainable = True
    accepts_sample_weight: ClassVar[bool] = True
    uses_embeddings: ClassVar[bool] = False
    uses_ngrams: ClassVar[bool] = False

    def __init__(self, labels: Sequence[str], encoder: str | None = None, lexicon: bool = False):
        labels = [str(x) for x in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise SpecialistError(f"{type(self).__name__} needs at least 2 distinct labels, got {labels}")
        self.labels = labels
        self.encoder = encoder if self.uses_embeddings else None
        self.lexicon = bool(lexicon)
        self._clf: Any = None
        self._ngrams: Any = None  # fitted vectorizer (from the pool when fit_unsupervised ran)
        self._pool_ngrams = False
        self._constant: str | None = None  # the only label seen in training, if just one

    # -- what the pipeline must feed -------------------------------------------------------------
    @property
    def input_kind(self) -> str:  # type: ignore[override]
        reads_text = self.uses_ngrams or self.lexicon
        if self.uses_embeddings:
            return "text+embedding" if reads_text else "embedding"
        return "text"

    @property
    def classes_(self) -> np.ndarray:
        return np.array(self.labels)

    @property
    def is_fitted(self) -> bool:
        return self._clf is not None or self._constant is not None

    def params(self) -> dict[str, Any]:
        return {"labels": self.labels, "lexicon": self.lexicon, **({"encoder": self.encoder} if self.uses_embeddings else {})}

    # -- features ------------------------------------------------------------------------------------
    def fit_unsupervised(self, X: Any) -> Head:
        """Fit the n-gram vocabulary on unlabeled rows (a sample of the whole input)."""
        if self.uses_ngrams:
            self._ngrams = pool_ngrams(X, who=self.name)
            self._pool_ngrams = True
        return self

    def _features(self, X: Any) -> Any:
        import scipy.sparse as sp

        blocks: list[Any] = []
        if self.uses_embeddings:
            blocks.append(embeddings_of(X, self.encoder))
        if self.lexicon:
            blocks.append(lexicon_features(X, self.name))
        if self.uses_ngrams:
            blocks.append(ngram_features(self._ngrams, X, self.name))
        if len(blocks) == 1:
            return blocks[0]
        if any(sp.issparse(b) for b in blocks):
            return sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr")
        return np.hstack(blocks)

    def _classifier(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- estimator -----------------------------------------------------------------------------------
    def fit(self: H, X: Any, y: Sequence[str], sample_weight: Sequence[float] | None = None) -> H:
        """Refit from scratch on (X, y), each row counted `sample_weight` times (default once). No rows
        leave the head unfitted (it abstains); a single class makes it predict that class with probability 1."""
        y = [str(v) for v in y]
        if len(y) != n_rows(X):
            raise SpecialistError(f"{self.name}: {n_rows(X)} inputs but {len(y)} labels")
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if w is not None and (w.shape != (len(y),) or not np.isfinite(w).all() or (w < 0).any()):
            raise SpecialistError(f"{self.name}: sample_weight must be {len(y)} finite weights >= 0")
        unknown = sorted(set(y) - set(self.labels))
        if unknown:
            raise SpecialistError(f"{self.name}: training label {unknown[0]!r} is not a task label {self.labels}")
        self._clf, self._constant = None, None
        if not y:
            return self
        if len(set(y)) == 1:
            self._constant = y[0]
            return self
        if self.uses_ngrams and not self._pool_ngrams:
            self._ngrams = fit_ngrams(texts_of(X, self.name))
        self._clf = self._classifier().fit(self._features(X), y, sample_weight=w)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        n = n_rows(X)
        out = np.zeros((n, len(self.labels)), dtype=np.float32)
        if not self.is_fitted:
            out[:] = np.nan
        elif self._constant is not None:
            out[:, self.labels.index(self._constant)] = 1.0
        elif n:
            P = self._clf.predict_proba(self._features(X))
            for j, label in enumerate(self._clf.classes_):
                out[:, self.labels.index(str(label))] = P[:, j]
        return out

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the fitted head to the directory `path` (created) as plain data: `head.json` (its
        parameters) and `arrays.npz` (the classifier's and the vectorizer's arrays). Nothing is pickled."""
        state = {"class": type(self).__name__, "params": self.params(), "pool_ngrams": self._pool_ngrams,
                 "constant": self._constant}
        persist.save_state(Path(path), state, {"classifier": self._clf, "ngrams": self._ngrams})

    @classmethod
    def load(cls: type[H], path: str | Path) -> H:
        """Load a head written by `save`."""
        path = Path(path)
        if not (path / persist.STATE_FILE).is_file():
            raise SpecialistError(f"specialist checkpoint {str(path)!r} does not exist")
        try:
            state, objects = persist.load_state(path)
        except SpecialistError:
            raise
        except Exception as err:
            raise SpecialistError(f"specialist checkpoint {str(path)!r} cannot be read ({type(err).__name__}); "
                                  "delete it to retrain") from None
        if state.get("class") != cls.__name__:
            raise SpecialistError(f"specialist checkpoint {str(path)!r} holds a {state.get('class')}, not a {cls.__name__}")
        head = cls(**state["params"])
        head._clf, head._ngrams = objects["classifier"], objects["ngrams"]
        head._pool_ngrams, head._constant = state["pool_ngrams"], state["constant"]
        return head


class _LogisticHead(Head):
    """A head whose classifier is a logistic regression (C, class_weight, max_iter)."""

    def _logistic(self, C: float, class_weight: ClassWeight, max_iter: int) -> None:
        self.C, self.class_weight, self.max_iter = _positive(C, "C", self), _class_weight(class_weight), int(max_iter)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "C": self.C, "class_weight": self.class_weight, "max_iter": self.max_iter}

    def _classifier(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter)


class EmbeddingHead(_LogisticHead):
    """Logistic regression on the shared sentence embeddings (plus VADER scores with `lexicon`)."""

    name = "embedding-head"
    uses_embeddings = True

    def __init__(self, labels: Sequence[str], encoder: str = DEFAULT_ENCODER, C: float = 1.0,
                 class_weight: ClassWeight = None, max_iter: int = 2000, lexicon: bool = False):
        super().__init__(labels, encoder, lexicon)
        self._logistic(C, class_weight, max_iter)


class TfidfHead(_LogisticHead):
    """Logistic regression on word and character n-grams."""

    name = "tfidf-head"
    uses_ngrams = True

    def __init__(self, labels: Sequence[str], C: float = 4.0, class_weight: ClassWeight = "balanced",
                 max_iter: int = 1000, lexicon: bool = False):
        super().__init__(labels, None, lexicon)
        self._logistic(C, class_weight, max_iter)


class NaiveBayesHead(Head):
    """Complement naive Bayes on word and character n-grams: strong on few rows, different errors."""

    name = "nb-head"
    uses_ngrams = True

    def __init__(self, labels: Sequence[str], alpha: float = 0.3):
        super().__init__(labels, None, False)
        self.alpha = _positive(alpha, "alpha", self)

    def params(self) -> dict[str, Any]:
        return {"labels": self.labels, "alpha": self.alpha}

    def _classifier(self) -> Any:
        from sklearn.naive_bayes import ComplementNB

        return ComplementNB(alpha=self.alpha)


class HybridHead(Head):
    """Logistic loss by SGD over embeddings, n-grams (and VADER scores): the single best head we
    measured; SGD because lbfgs on this wide sparse matrix is ~10x slower for the same accuracy."""

    name = "hybrid-head"
    uses_embeddings = True
    uses_ngrams = True

    def __init__(self, labels: Sequence[str], encoder: str = DEFAULT_ENCODER, alpha: float = 1e-4,
                 epochs: int = 30, lexicon: bool = False, seed: int = 0):
        super().__init__(labels, encoder, lexicon)
        self.alpha, self.epochs, self.seed = _positive(alpha, "alpha", self), int(epochs), int(seed)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "alpha": self.alpha, "epochs": self.epochs, "seed": self.seed}

    def _classifier(self) -> Any:
        from sklearn.linear_model import SGDClassifier

        return SGDClassifier(loss="log_loss", alpha=self.alpha, max_iter=self.epochs, tol=None,
                             random_state=self.seed)


def _positive(value: float, what: str, head: Head) -> float:
    if value <= 0:
        raise SpecialistError(f"{head.name} option {what}={value} must be > 0")
    return float(value)


def _class_weight(cw: ClassWeight) -> ClassWeight:
    return dict(cw) if isinstance(cw, Mapping) else cw

