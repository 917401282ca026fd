"""Trainable heads: cheap classifiers fitted on the rows reviewers have labelled.

Both are logistic regressions, which train in seconds on CPU and give usable probabilities from a
few dozen rows: `EmbeddingHead` on the shared sentence embeddings (semantics), `TfidfHead` on word
and character n-grams (surface cues: tickers, hashtags, spelling). Their columns are always the
task's labels in task order, so a label missing from the training rows gets probability 0 and
outputs stay comparable between refits. Unfitted, they abstain (NaN rows).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import SpecialistError
from .base import BaseSpecialist
from .encoder import DEFAULT_ENCODER, as_embeddings

H = TypeVar("H", bound="LogisticHead")
ClassWeight = str | Mapping[str, float] | None


class LogisticHead(BaseSpecialist, ABC):
    """Shared fit/predict/persist logic; subclasses say how `X` becomes a feature matrix."""

    trainable = True

    def __init__(self, labels: Sequence[str], C: float, class_weight: ClassWeight, max_iter: int):
        labels = [str(x) for x in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise SpecialistError(f"{type(self).__name__} needs at least 2 distinct labels, got {labels}")
        if C <= 0:
            raise SpecialistError(f"{self.name} option C={C} must be > 0")
        self.labels = labels
        self.C = float(C)
        self.class_weight = dict(class_weight) if isinstance(class_weight, Mapping) else class_weight
        self.max_iter = int(max_iter)
        self._clf: Any = None
        self._constant: str | None = None  # the only label seen in training, if just one

    @property
    def classes_(self) -> np.ndarray:
        return np.array(self.labels)

    @property
    def is_fitted(self) -> bool:
        return self._clf is not None or self._constant is not None

    def _fit_features(self, X: Any) -> Any:
        """Features of the training rows (fits any feature extractor)."""
        return self._features(X)

    @abstractmethod
    def _features(self, X: Any) -> Any:
        """Features of rows to score."""

    def fit(self: H, X: Any, y: Sequence[str]) -> H:
        """Refit from scratch on (X, y). No rows leave the head unfitted (it abstains); a single
        class makes it predict that class with probability 1."""
        y = [str(v) for v in y]
        if len(y) != _n_rows(X):
            raise SpecialistError(f"{self.name}: {_n_rows(X)} inputs but {len(y)} labels")
        unknown = sorted(set(y) - set(self.labels))
        if unknown:
            raise SpecialistError(
                f"{self.name}: training label {unknown[0]!r} is not a task label {self.labels}"
            )
        self._clf, self._constant = None, None
        if not y:
            return self
        if len(set(y)) == 1:
            self._constant = y[0]
            return self
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter)
        self._clf = clf.fit(self._fit_features(X), y)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        n = _n_rows(X)
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

    def save(self, path: str | Path) -> None:
        """Persist the fitted head (checkpoints)."""
        import joblib

        joblib.dump(self, Path(path))

    @classmethod
    def load(cls: type[H], path: str | Path) -> H:
        """Load a head written by `save`."""
        import joblib

        try:
            obj = joblib.load(Path(path))
        except FileNotFoundError:
            raise SpecialistError(f"specialist checkpoint {str(path)!r} does not exist") from None
        except Exception as err:
            raise SpecialistError(
                f"specialist checkpoint {str(path)!r} cannot be read ({type(err).__name__}); "
                "delete it to retrain"
            ) from None
        if not isinstance(obj, cls):
            raise SpecialistError(
                f"specialist checkpoint {str(path)!r} holds a {type(obj).__name__}, not a {cls.__name__}"
            )
        return obj


def _n_rows(X: Any) -> int:
    if isinstance(X, str):
        raise SpecialistError("expected a list of texts or an (n, d) embedding array, got a single string")
    return len(X) if not hasattr(X, "shape") else int(X.shape[0])


class EmbeddingHead(LogisticHead):
    """Logistic regression on the shared encoder's sentence embeddings."""

    input_kind = "embedding"
    name = "embedding-head"

    def __init__(
        self,
        labels: Sequence[str],
        encoder: str = DEFAULT_ENCODER,
        C: float = 1.0,
        class_weight: ClassWeight = "balanced",
        max_iter: int = 1000,
    ):
        super().__init__(labels, C, class_weight, max_iter)
        self.encoder = encoder

    def _features(self, X: Any) -> np.ndarray:
        return as_embeddings(X, self.encoder)


class TfidfHead(LogisticHead):
    """Logistic regression on TF-IDF word 1-2grams plus char_wb 2-5grams (robust to misspellings,
    tickers and hashtags that a sentence encoder blurs)."""

    name = "tfidf-head"

    def __init__(
        self,
        labels: Sequence[str],
        C: float = 4.0,
        class_weight: ClassWeight = "balanced",
        max_iter: int = 1000,
        max_features: int = 100_000,
    ):
        super().__init__(labels, C, class_weight, max_iter)
        self.max_features = int(max_features)
        self._vectorizer: Any = None

    def _fit_features(self, X: Any) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        common = {"sublinear_tf": True, "max_features": self.max_features, "dtype": np.float32}
        self._vectorizer = FeatureUnion(
            [
                ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **common)),
                ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common)),
            ]
        )
        features = self._vectorizer.fit_transform(_texts(X))
        for _, vec in self._vectorizer.transformer_list:
            # scikit-learn < 1.8 keeps every pruned n-gram here: only bloats checkpoints.
            if hasattr(vec, "stop_words_"):
                del vec.stop_words_
        return features

    def _features(self, X: Any) -> Any:
        return self._vectorizer.transform(_texts(X))


def _texts(X: Any) -> list[str]:
    return ["" if t is None else str(t) for t in X]
