"""Feature blocks for the trainable heads, and the input that carries texts and embeddings together.

Three blocks, each cheap on a CPU and each catching what the others miss:
- embeddings (semantics): the shared encoder's L2-normalised sentence vectors, read from the run store;
- lexicon (polarity): VADER's compound, positive, negative and neutral scores, for sentiment tasks
  (+3 points on tweets in our measurements, neutral on financial news);
- n-grams (surface cues: tickers, hashtags, misspellings): TF-IDF over word 1-2-grams and char_wb
  2-5-grams. The vocabulary is best fitted on the whole unlabeled pool (`fit_unsupervised`), not just
  the few reviewed rows, so rare cue words seen later still have a column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SpecialistError
from .encoder import as_embeddings


@dataclass
class TextsWithEmbeddings:
    """Rows given both as texts and as the shared encoder's embeddings (same order)."""

    texts: list[str]
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.embeddings):
            raise SpecialistError(f"{len(self.texts)} texts but {len(self.embeddings)} embeddings")

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: Sequence[int] | np.ndarray) -> TextsWithEmbeddings:
        idx = np.asarray(idx, dtype=np.int64)
        return TextsWithEmbeddings([self.texts[i] for i in idx], self.embeddings[idx])


def n_rows(X: Any) -> int:
    if isinstance(X, str):
        raise SpecialistError("expected a list of texts or an (n, d) embedding array, got a single string")
    return len(X) if not hasattr(X, "shape") else int(X.shape[0])


def texts_of(X: Any, who: str) -> list[str]:
    if isinstance(X, TextsWithEmbeddings):
        return X.texts
    if isinstance(X, np.ndarray):
        raise SpecialistError(f"{who} reads texts, but was given an embedding array")
    if isinstance(X, str):
        raise SpecialistError("expected a list of texts, got a single string")
    return ["" if t is None else str(t) for t in X]


def embeddings_of(X: Any, encoder: str | None) -> np.ndarray:
    if isinstance(X, TextsWithEmbeddings):
        return np.asarray(X.embeddings, dtype=np.float32)
    return as_embeddings(X, encoder)


_VADER: Any = None


def _key(texts: Sequence[str], *extra: Any) -> tuple[Any, ...]:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return (h.digest(), *extra)


_CACHE_ROWS = 200_000  # feature rows kept per block (a run re-scores the same texts every stage)


class _RowCache:
    """Feature rows of the largest text set seen for one extractor: requests for any subset of it
    (training rows, held-out rows, the candidates of every stage) are slices, not recomputations."""

    def __init__(self) -> None:
        self.owner: Any = None
        self.index: dict[str, int] = {}
        self.rows: Any = None

    def get(self, owner: Any, texts: Sequence[str], make: Any) -> Any:
        if self.owner is owner and self.rows is not None:
            try:
                return self.rows[[self.index[t] for t in texts]]
            except KeyError:
                pass
        value = make(list(texts))
        if len(texts) <= _CACHE_ROWS and (self.owner is not owner or len(texts) > len(self.index)):
            self.owner, self.rows = owner, value
            self.index = {t: i for i, t in enumerate(texts)}
        return value


_NGRAM_ROWS = _RowCache()
_LEXICON_ROWS = _RowCache()


def ngram_features(vectorizer: Any, texts: Sequence[str]) -> Any:
    """`vectorizer.transform(texts)`, served from the row cache when it can be."""
    return _NGRAM_ROWS.get(vectorizer, texts, vectorizer.transform)


def lexicon_features(texts: Sequence[str]) -> np.ndarray:
    """(n, 4) VADER [compound, pos, neg, neu] on their own scale."""
    return _LEXICON_ROWS.get(_lexicon, texts, _lexicon)


def _lexicon(texts: Sequence[str]) -> np.ndarray:
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    out = np.zeros((len(texts), 4), dtype=np.float32)
    for i, t in enumerate(texts):
        s = _VADER.polarity_scores(t)
        out[i] = (s["compound"], s["pos"], s["neg"], s["neu"])
    return out


def ngram_vectorizer(n_docs: int, max_features: int = 150_000) -> Any:
    """Word 1-2-grams + char_wb 2-5-grams, sublinear TF-IDF, each block L2-normalised and the
    union scaled by 1/sqrt(2) so it has unit norm like the embedding block."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    small = n_docs < 500  # on a handful of reviewed rows a min_df would leave no vocabulary
    scale = float(1 / np.sqrt(2))
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1 if small else 2,
                                     sublinear_tf=True, dtype=np.float32)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=1 if small else 3,
                                     sublinear_tf=True, max_features=max_features, dtype=np.float32)),
        ],
        transformer_weights={"word": scale, "char": scale},
    )


_LAST_FIT: tuple[tuple[Any, ...], Any] | None = None


def fit_ngrams(texts: Sequence[str], max_features: int = 150_000) -> Any:
    """A fitted `ngram_vectorizer`. The last result is reused for the same texts: every head and
    every stage of a run fits its vocabulary on the same pool sample."""
    global _LAST_FIT
    key = _key(texts, max_features)
    if _LAST_FIT is not None and _LAST_FIT[0] == key:
        return _LAST_FIT[1]
    vec = ngram_vectorizer(len(texts), max_features)
    vec.fit(list(texts))
    for _, v in vec.transformer_list:
        if hasattr(v, "stop_words_"):  # every pruned n-gram: only bloats checkpoints
            del v.stop_words_
    _LAST_FIT = (key, vec)
    return vec
