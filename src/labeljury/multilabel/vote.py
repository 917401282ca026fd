"""The vote of a multi-label task: the heads' per-label probabilities combined, and a set decided from them.

- `combine`: per label, the larger of the heads' probabilities (`max`) or their mean (`mean`). The max was
  measured better on three of four set/budget pairs (BENCHMARKS.md, section 19): with a few hundred reviewed
  rows, each head misses positives the other finds, and a set loses more by a missed label than by an extra
  one. It is the default.
- `decide`: a label is in the set when its probability reaches 0.5 (the rule that minimises the expected
  number of wrong labels when the probabilities are right); a task without `allow_empty` gets its likeliest
  label when none does.
- `set_probability`: the chance the whole set is right, the labels taken as independent given the text
  (the calibration on the audit then corrects it: `multilabel.trust`).
- `hardness`: what routing ranks by: the expected number of wrong labels, sum over labels of
  min(p, 1 - p). It orders rows as the baseline's mean uncertainty does; "the chance the set is wrong" was
  measured no better (section 19).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COMBINE = ("max", "mean")
THRESHOLD = 0.5


def combine(probabilities: Sequence[np.ndarray], how: str = "max") -> np.ndarray:
    """(rows, labels) from each head's (rows, labels) probabilities."""
    if how not in COMBINE:
        raise ValueError(f"unknown combination {how!r}; use one of {', '.join(COMBINE)}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    return stacked.max(axis=0) if how == "max" else stacked.mean(axis=0)


def decide(P: np.ndarray, allow_empty: bool, threshold: float = THRESHOLD) -> np.ndarray:  # noqa: N803
    """(rows, labels) 0/1: the labels at or above `threshold`; the likeliest one where none is and the task
    does not allow the empty set."""
    S = (P >= threshold).astype(np.int8)
    if not allow_empty and len(S):
        none = np.flatnonzero(S.sum(axis=1) == 0)
        S[none, P[none].argmax(axis=1)] = 1
    return S


def set_probability(P: np.ndarray, S: np.ndarray) -> np.ndarray:  # noqa: N803
    """P(the decided set `S` is exactly right), labels independent: prod of p over its labels and 1 - p
    over the others (in logs: 118 factors do not underflow)."""
    q = np.where(S == 1, P, 1.0 - P)
    return np.exp(np.log(np.clip(q, 1e-12, 1.0)).sum(axis=1))


def hardness(P: np.ndarray) -> np.ndarray:  # noqa: N803
    """The expected number of labels the decided set gets wrong: sum of min(p, 1 - p)."""
    return np.minimum(P, 1.0 - P).sum(axis=1)

