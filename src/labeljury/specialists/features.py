"""Feature blocks for the trainable heads.

Three blocks, each cheap on a CPU and each catching what the others miss:
- embeddings (semantics): the shared encoder's L2-normalised sentence vectors, read from the run store;
- lexicon (polarity): VADER's compound, positive, negative and neutral scores, for sentiment tasks
  (+3 points on tweets in our measurements, neutral on financial news);
- n-grams (surface cues: tickers, hashtags, misspellings): TF-IDF over word 1-2-grams and char_wb
  2-5-grams. The vocabulary is best fitted on the whole unlabeled pool (`fit_unsupervised`), not just
  the few reviewed rows, so rare cue words seen later still have a column.

Nothing is cached here: when the rows come with a `FeatureMemo` (the pipeline gives every `Rows` one),
a block is computed once per run and shared by every head, stage and version that reads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from .base import Rows, texts_of
from .encoder import as_embeddings
from .lexicon import vader_scores


def embeddings_of(X: Any, encoder: str | None) -> np.ndarray:
    if isinstance(X, Rows) and X.embeddings is not None:
        return np.asarray(X.embeddings, dtype=np.float32)
    return as_embeddings(X.texts if isinstance(X, Rows) else X, encoder)


def block(X: Any, key: Hashable, compute: Callable[[list[str]], Any], who: str) -> Any:
    """`compute(texts of X)`, through X's memo when it has one."""
    if isinstance(X, Rows) and X.memo is not None:
        return X.memo.block(key, compute)
    return compute(texts_of(X, who))


def lexicon_scores(texts: Sequence[str]) -> np.ndarray:
    """(n, 4) VADER [compound, pos, neg, neu] on their own scale."""
    out = np.zeros((len(texts), 4), dtype=np.float32)
    for i, t in enumerate(texts):
        s = vader_scores(t)
        out[i] = (s["compound"], s["pos"], s["neg"], s["neu"])
    return out


def lexicon_features(X: Any, who: str = "head") -> np.ndarray:
    return block(X, "lexicon", lexicon_scores, who)


def ngram_features(vectorizer: Any, X: Any, who: str = "head") -> Any:
    """`vectorizer.transform(texts)`; memoised under the vectorizer's fingerprint."""
    key = ("ngrams", getattr(vectorizer, "labeljury_fingerprint_", None) or id(vectorizer))
    return block(X, key, vectorizer.transform, who)


# a word of one character, or one symbol (an emoji, "?"): the words of texts that have no longer one
SHORT_WORDS = r"(?u)\b\w+\b|[^\w\s]"


def ngram_vectorizer(n_docs: int, max_features: int = 150_000, word_pattern: str | None = None) -> Any:
    """Word 1-2-grams + char_wb 2-5-grams, sublinear TF-IDF, each block L2-normalised and the
    union scaled by 1/sqrt(2) so it has unit norm like the embedding block."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    small = n_docs < 500  # on a handful of reviewed rows a min_df would leave no vocabulary
    scale = float(1 / np.sqrt(2))
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1 if small else 2,
                                     sublinear_tf=True, dtype=np.float32,
                                     **({"token_pattern": word_pattern} if word_pattern else {}))),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=1 if small else 3,
                                     sublinear_tf=True, max_features=max_features, dtype=np.float32)),
        ],
        transformer_weights={"word": scale, "char": scale},
    )


def fit_ngrams(texts: Sequence[str], max_features: int = 150_000) -> Any:
    """A fitted `ngram_vectorizer`, fingerprinted by the texts it was fitted on (so feature blocks
    made with it can be shared)."""
    texts = list(texts)
    h = hashlib.blake2b(str(max_features).encode(), digest_size=16)
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    vec = ngram_vectorizer(len(texts), max_features)
    try:
        vec.fit(texts)
    except ValueError:  # no word of two characters in any text ("a", "?", emoji only): shorter words count
        vec = ngram_vectorizer(len(texts), max_features, word_pattern=SHORT_WORDS)
        vec.fit(texts)
    for _, v in vec.transformer_list:
        if hasattr(v, "stop_words_"):  # every pruned n-gram: only bloats checkpoints
            del v.stop_words_
    vec.labeljury_fingerprint_ = h.hexdigest()
    return vec


def pool_ngrams(X: Any, max_features: int = 150_000, who: str = "head") -> Any:
    """`fit_ngrams` on the texts of X; every head of a run that fits on the same pool shares one."""
    if isinstance(X, Rows) and X.memo is not None:
        return X.memo.value(("ngram-vocabulary", max_features), lambda: fit_ngrams(texts_of(X, who), max_features))
    return fit_ngrams(texts_of(X, who), max_features)
