"""The specialists of a multi-label task: one-vs-rest heads that give every label its own probability.

`OneVsRestHead` is a scikit-learn-style estimator: `fit(X, Y)` with `Y` a (rows, labels) 0/1 matrix,
`predict_proba(X)` a (rows, labels) matrix of P(label is in the set), columns in the task's label order.
Each label is one binary logistic regression; their weights are stacked into one matrix, so scoring a
block of rows is one product whatever the label count (118 labels cost one matrix product, not 118
calls). A label the training rows never show (or always show) predicts that constant: 0 until a reviewer
has given it a positive.

Two heads, on two views of a text (measured in BENCHMARKS.md, section 19: together they beat either):
- `embedding`: all-MiniLM-L6-v2 embeddings (the run store's), C = 1;
- `tfidf`: word 1-2-gram sublinear TF-IDF, fitted once on a sample of the run's own texts, C = 10, fitted in
  the dual (liblinear): with far fewer reviewed rows than n-grams it is ~35x faster than L-BFGS for the same
  probabilities (Reuters, 600 rows, 47k n-grams, 93 labels: 1.2 s against 43 s, mean difference 0.0006).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import SpecialistError

# head -> the logistic regressions' inverse regularisation C, and whether to fit them in the dual
HEADS = {"embedding": (1.0, False), "tfidf": (10.0, True)}
TFIDF_SAMPLE = 50_000  # texts the TF-IDF vocabulary is fitted on: the vocabulary, not the cost, grows with more


class OneVsRestHead:
    """One logistic regression per label over one feature block (dense or sparse)."""

    def __init__(self, labels: Sequence[str], C: float = 1.0, dual: bool = False,  # noqa: N803 - scikit-learn's name
                 max_iter: int = 1000):
        self.labels = list(labels)
        self.C = C
        self.dual = dual  # liblinear's dual solver: for many sparse features and few rows
        self.max_iter = max_iter

    def fit(self, X: Any, Y: np.ndarray) -> OneVsRestHead:  # noqa: N803
        from sklearn.linear_model import LogisticRegression

        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[1] != len(self.labels) or Y.shape[0] != X.shape[0]:
            raise SpecialistError(f"one-vs-rest head: Y must be (rows, {len(self.labels)}) for {X.shape[0]} rows, "
                                  f"got {Y.shape}")
        k = len(self.labels)
        self.classes_ = np.array(self.labels)
        self.coef_ = np.zeros((X.shape[1], k), dtype=np.float64)
        self.intercept_ = np.zeros(k, dtype=np.float64)
        self.constant_ = np.full(k, np.nan)  # the value of a label that never varies in training, else NaN
        for j in range(k):
            y = Y[:, j].astype(np.int8)
            if len(y) == 0 or y.min() == y.max():
                self.constant_[j] = float(y[0]) if len(y) else 0.0
                continue
            # liblinear visits rows in a random order: a fixed seed makes a resumed run fit the same heads
            solver = {"solver": "liblinear", "dual": True, "random_state": 0} if self.dual else {}
            clf = LogisticRegression(max_iter=self.max_iter, C=self.C, **solver).fit(X, y)
            self.coef_[:, j] = clf.coef_[0]
            self.intercept_[j] = clf.intercept_[0]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        if not hasattr(self, "coef_"):
            raise SpecialistError("one-vs-rest head: call fit before predict_proba")
        z = np.asarray(X @ self.coef_) + self.intercept_
        P = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
        fixed = ~np.isnan(self.constant_)
        P[:, fixed] = self.constant_[fixed]
        return P


def fit_tfidf(texts: Sequence[str], seed: int) -> Any:
    """The TF-IDF view's vectorizer, fitted on up to TFIDF_SAMPLE of the run's texts (a seeded sample, so a
    resumed run fits the same one)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = list(texts)
    if len(texts) > TFIDF_SAMPLE:
        pick = np.sort(np.random.default_rng(seed).choice(len(texts), TFIDF_SAMPLE, replace=False))
        texts = [texts[i] for i in pick]
    # min_df 2 drops one-off tokens; on a tiny input it would leave no vocabulary
    words = TfidfVectorizer(sublinear_tf=True, min_df=2 if len(texts) >= 200 else 1, ngram_range=(1, 2),
                            max_features=50_000)
    try:
        return words.fit(texts)
    except ValueError:  # no word of two characters or more in any text ("a", "?", emoji): character n-grams
        return TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(1, 3), max_features=50_000).fit(texts)


class OwnScoreHead:
    """Per label, a logistic regression on that label's own score (a zero-shot similarity, a hub model's
    logit): two numbers a label, fitted on reviewed rows the scorer never trained on (it trains on nothing),
    so each label gets its own threshold and scale. A label the scorer does not score (a NaN column)
    predicts NaN: no opinion. A label the training rows never show (or always show) predicts that constant."""

    def __init__(self, labels: Sequence[str], C: float = 1.0):  # noqa: N803 - scikit-learn's name
        self.labels = list(labels)
        self.C = C

    def fit(self, X: Any, Y: np.ndarray) -> OwnScoreHead:  # noqa: N803
        from sklearn.linear_model import LogisticRegression

        X, Y = np.asarray(X, np.float64), np.asarray(Y)  # noqa: N806
        k = len(self.labels)
        if X.ndim != 2 or X.shape[1] != k or Y.shape != X.shape:
            raise SpecialistError(f"own-score head: X and Y must both be (rows, {k}), got {X.shape} and {Y.shape}")
        self.classes_ = np.array(self.labels)
        scored = ~np.isnan(X).all(axis=0) if len(X) else np.ones(k, bool)
        # standardised per label: one C suits scores of any scale (cosines near 0.3, logits near -5)
        filled = np.where(np.isnan(X), 0.0, X)  # a scorer leaves whole labels out, never single rows
        self.mean_ = filled.mean(axis=0) if len(X) else np.zeros(k)
        self.scale_ = np.maximum(filled.std(axis=0), 1e-6) if len(X) else np.ones(k)
        self.coef_ = np.zeros(k)
        self.intercept_ = np.zeros(k)
        self.constant_ = np.full(k, np.nan)
        self.scored_ = scored
        for j in np.flatnonzero(scored):
            y = Y[:, j].astype(np.int8)
            if len(y) == 0 or y.min() == y.max():
                self.constant_[j] = float(y[0]) if len(y) else 0.0
                continue
            z = ((X[:, j] - self.mean_[j]) / self.scale_[j])[:, None]
            clf = LogisticRegression(C=self.C, max_iter=1000).fit(z, y)
            self.coef_[j], self.intercept_[j] = clf.coef_[0, 0], clf.intercept_[0]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        if not hasattr(self, "coef_"):
            raise SpecialistError("own-score head: call fit before predict_proba")
        z = (np.asarray(X, np.float64) - self.mean_) / self.scale_ * self.coef_ + self.intercept_
        P = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
        fixed = ~np.isnan(self.constant_)
        P[:, fixed] = self.constant_[fixed]
        P[:, ~self.scored_] = np.nan
        return P
