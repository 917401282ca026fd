"""Lexicon specialists: rule-based models that need no training and no GPU.

They speak their own labels (VADER: negative/neutral/positive; profanity-check: clean/offensive);
the catalog wraps them in a `MappedSpecialist` to speak the task's labels.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import SpecialistError
from .base import BaseSpecialist, texts_of


VADER_WINDOW = 1000  # characters: VADER's cost grows with the square of a text's length


@functools.cache
def vader_analyzer() -> Any:
    """VADER's analyzer: a read-only lexicon whose loading parses a file, so it is loaded once."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_scores(text: str) -> dict[str, float]:
    """VADER's `polarity_scores`, in bounded time: a text longer than VADER_WINDOW characters is
    scored in windows of at most that many (cut at spaces) and the scores averaged, weighted by each
    window's length. Shorter texts (tweets, headlines) are scored exactly as VADER does."""
    analyzer = vader_analyzer()
    if len(text) <= VADER_WINDOW:
        return analyzer.polarity_scores(text)
    windows, start = [], 0
    while start < len(text):
        stop = min(len(text), start + VADER_WINDOW)
        if stop < len(text):
            cut = text.rfind(" ", start + VADER_WINDOW // 2, stop)
            stop = cut if cut > start else stop
        windows.append(text[start:stop])
        start = stop
    total = {"neg": 0.0, "neu": 0.0, "pos": 0.0, "compound": 0.0}
    for w in windows:
        s = analyzer.polarity_scores(w)
        for k in total:
            total[k] += s[k] * len(w)
    return {k: v / len(text) for k, v in total.items()}


class VaderSentiment(BaseSpecialist):
    """VADER's rule-based sentiment as a probability row over negative/neutral/positive.

    VADER gives a `compound` score s in [-1, 1] (its recommended cut-offs for a label are +-0.05)
    and the shares of negative/neutral/positive words. The row is a softmax over the logits
    ``[-a*s, b - c*|s|, a*s]``: neutral is favoured when s is near 0 and loses to a side once
    |s| > b/(a+c) (~0.17, a little wider than VADER's 0.05 because a weak compound is often
    neutral text); |s| = 0.5 gives that side ~0.8, |s| = 0.9 ~0.95. The result is mixed with a
    uniform row (weight `floor`) because a lexicon is never certain, which keeps log-likelihood
    based vote aggregation finite. A text with no scorable token (empty) is an abstention (NaN row).
    """

    name = "vader"
    _A, _B, _C = 3.0, 1.0, 3.0

    def __init__(self, floor: float = 0.06):
        if not 0 <= floor < 1:
            raise SpecialistError(f"vader option floor={floor} must be in [0, 1)")
        self.floor = floor

    @property
    def classes_(self) -> np.ndarray:
        return np.array(["negative", "neutral", "positive"])

    def predict_proba(self, X: Any) -> np.ndarray:
        scores = [vader_scores(t) for t in texts_of(X, self.name)]
        out = np.full((len(scores), 3), np.nan, dtype=np.float32)
        for i, sc in enumerate(scores):
            if sc["neg"] + sc["neu"] + sc["pos"] > 0:
                out[i] = self.proba_from_compound(sc["compound"])
        return out

    def proba_from_compound(self, compound: float) -> np.ndarray:
        """The (3,) negative/neutral/positive row for a VADER compound score (see the class doc)."""
        s = float(np.clip(compound, -1.0, 1.0))
        logits = np.array([-self._A * s, self._B - self._C * abs(s), self._A * s])
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return ((1 - self.floor) * p + self.floor / 3).astype(np.float32)


class ProfanityCheck(BaseSpecialist):
    """alt-profanity-check's linear SVM (calibrated) probability that a text is offensive."""

    name = "profanity"

    @property
    def classes_(self) -> np.ndarray:
        return np.array(["clean", "offensive"])

    def predict_proba(self, X: Any) -> np.ndarray:
        texts = texts_of(X, self.name)
        if not texts:
            return np.zeros((0, 2), dtype=np.float32)
        from profanity_check import predict_prob

        p = np.asarray(predict_prob(texts), dtype=np.float32)
        return np.stack([1 - p, p], axis=1)
