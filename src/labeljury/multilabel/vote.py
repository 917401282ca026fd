"""The vote of a multi-label task: the specialists' per-label probabilities combined, and a set decided.

The boundary is one (rows, labels) matrix of P(label is in the set) per specialist, NaN for a label a
specialist does not score (a hub model that knows some of the task's labels). `SetVote` turns them into
one probability per label, by the task's `voting:`
- `max` (the default for sets): per label the largest probability. Measured better than the mean on three
  of four set/budget pairs (BENCHMARKS.md, section 19): with a few hundred reviewed rows each head misses
  positives another finds, and a set loses more by a missed label than by an extra one.
- `soft`: per label the mean probability.
- `majority`: per label the share of specialists that put the label in (p >= 0.5); where exactly half do,
  the mean probability decides (a thousandth of it also orders labels and rows of one share).
- `dawid-skene`: per label a binary Dawid-Skene model (`voting.DawidSkene` with two classes, in / out):
  each specialist's sensitivity and specificity and the label's prior, learned by EM from the specialists'
  in/out decisions on a sample of the run's rows, without reviews; the vote is the posterior of "in".
Then:
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
from typing import Any

import numpy as np

VOTES = ("max", "soft", "majority", "dawid-skene")
THRESHOLD = 0.5
MAJORITY_TIE = 1e-3
# EM rounds of a label's Dawid-Skene model: a rare label's EM creeps (its prior 0.26 after 50 rounds, 0.12 after
# 300, for a true 0.10 with three specialists); a round costs microseconds, counting the rows' patterns dominates
EM_ROUNDS = 500


def _stack(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """(specialists, rows, labels) float64, NaN where a specialist does not score a label."""
    if not len(probabilities):
        raise ValueError("a vote needs at least one specialist's probabilities")
    return np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])


def _nan_mean(stacked: np.ndarray) -> np.ndarray:
    n = (~np.isnan(stacked)).sum(axis=0)
    return np.where(n > 0, np.nansum(stacked, axis=0) / np.maximum(n, 1), 0.0)


def combine(probabilities: Sequence[np.ndarray], how: str = "max") -> np.ndarray:
    """(rows, labels) from each specialist's (rows, labels) probabilities, by a vote that learns nothing
    (`max`, `soft` or `majority`; `mean` is `soft`'s old name). A label no specialist scores gets 0."""
    how = "soft" if how == "mean" else how
    if how not in VOTES or how == "dawid-skene":
        raise ValueError(f"unknown combination {how!r}; use one of max, soft, majority (dawid-skene: SetVote)")
    stacked = _stack(probabilities)
    scored = ~np.isnan(stacked)
    if how == "max":
        return np.where(scored.any(axis=0), np.nanmax(np.where(scored, stacked, -np.inf), axis=0), 0.0)
    mean = _nan_mean(stacked)
    if how == "soft":
        return mean
    n = scored.sum(axis=0)
    share = np.where(n > 0, (stacked >= THRESHOLD).sum(axis=0) / np.maximum(n, 1), 0.0)
    # a thousandth of the mean breaks ties between labels of one share (the likeliest label of a row where none
    # is in, the order of rows by hardness) without moving any label across 0.5
    return np.where(share == 0.5, mean, (1 - MAJORITY_TIE) * share + MAJORITY_TIE * mean)


class SetVote:
    """The task's `voting:` over per-label probabilities: `fit` (only `dawid-skene` learns anything: on
    the specialists' probabilities for a sample of rows) then call it on any rows' probabilities."""

    def __init__(self, how: str = "max"):
        how = "soft" if how == "mean" else how
        if how not in VOTES:
            raise ValueError(f"unknown vote {how!r} for a multi-label task; use one of {', '.join(VOTES)}")
        self.how = how
        self.confusion_: np.ndarray | None = None  # (labels, specialists, 2, 2): P(decision | truth), dawid-skene
        self.priors_: np.ndarray | None = None  # (labels, 2): P(out), P(in)

    def fit(self, probabilities: Sequence[np.ndarray]) -> SetVote:
        if self.how != "dawid-skene":
            return self
        from ..voting import DawidSkene

        stacked = _stack(probabilities)  # (m, n, k)
        m, _, k = stacked.shape
        self.confusion_ = np.empty((k, m, 2, 2))
        self.priors_ = np.empty((k, 2))
        for j in range(k):
            p = stacked[:, :, j].T  # (n, m)
            two = np.stack([1.0 - p, p], axis=-1)  # a binary label matrix: out / in, NaN where not scored
            ds = DawidSkene(n_iter=EM_ROUNDS).fit([(two, None)])
            assert ds.confusion_ is not None and ds.priors_ is not None
            self.confusion_[j], self.priors_[j] = ds.confusion_, ds.priors_
        return self

    def __call__(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        if self.how != "dawid-skene":
            return combine(probabilities, self.how)
        if self.confusion_ is None or self.priors_ is None:
            raise ValueError("this Dawid-Skene vote is not fitted: call fit on a sample of rows first")
        stacked = _stack(probabilities)  # (m, n, k)
        m, n, k = stacked.shape
        if self.confusion_.shape[:2] != (k, m):
            raise ValueError(f"the vote was fitted on {self.confusion_.shape[1]} specialists and "
                             f"{self.confusion_.shape[0]} labels, given {m} and {k}")
        log_conf = np.log(self.confusion_)  # [label, specialist, truth, decision]
        log_post = np.broadcast_to(np.log(self.priors_)[None], (n, k, 2)).copy()
        for h in range(m):
            p = stacked[h]  # (n, k)
            said = (p >= THRESHOLD).astype(np.int64)
            for c in (0, 1):
                add = np.take_along_axis(np.broadcast_to(log_conf[:, h, c, :][None], (n, k, 2)), said[..., None],
                                         axis=2)[..., 0]
                log_post[..., c] += np.where(np.isnan(p), 0.0, add)  # a label it does not score: no evidence
        log_post -= log_post.max(axis=2, keepdims=True)
        post = np.exp(log_post)
        return post[..., 1] / post.sum(axis=2)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"how": self.how}
        if self.confusion_ is not None and self.priors_ is not None:
            out |= {"confusion": self.confusion_.tolist(), "priors": self.priors_.tolist()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SetVote:
        v = cls(d["how"])
        if "confusion" in d:
            v.confusion_, v.priors_ = np.asarray(d["confusion"]), np.asarray(d["priors"])
        return v


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
