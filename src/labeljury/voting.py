"""Aggregating the specialists' votes into one label per row.

The boundary is a vote tensor `P` of shape (n rows, m specialists, k labels): `P[i, j]` is
specialist j's probability row for row i in task label order, or all-NaN when j abstains on i
(a row with any NaN counts as an abstention). Voting never sees the specialists themselves, so any
label model (majority, soft vote, Dawid-Skene) can be swapped in without touching the pipeline.
A `LabelModel` is fitted once on every row, streamed in batches (`fit`), then labels any rows
(`predict`): the pipeline never holds the tensor of the whole input.

Every function is vectorised over rows (n may be ~10M); Python loops run over specialists, labels
or EM iterations only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Method = Literal["majority", "soft", "dawid-skene"]


@dataclass
class VoteResult:
    """One aggregated label per row, with what routing needs to decide which rows are hard.

    `label` is -1 (and `confidence` 0) where every specialist abstained and the label is not known.
    `unanimous` and `n_votes` describe the hard votes (each specialist's argmax), whatever the method.
    """

    label: np.ndarray  # (n,) int64 label index, -1 = no vote
    confidence: np.ndarray  # (n,) float32 in [0, 1]
    posterior: np.ndarray  # (n, k) float32, rows sum to 1
    unanimous: np.ndarray  # (n,) bool: at least one vote and all votes agree
    n_votes: np.ndarray  # (n,) int64 non-abstaining specialists
    weights: np.ndarray | None = None  # (m,) specialist weights used by `soft`
    confusion: np.ndarray | None = None  # (m, k, k) Dawid-Skene P(vote = l | true = c) as [j, c, l]
    priors: np.ndarray | None = None  # (k,) Dawid-Skene class priors


def _check(P: Any) -> np.ndarray:
    P = np.asarray(P)
    if P.ndim != 3:
        raise ValueError(f"the vote tensor must have shape (rows, specialists, labels), got shape {P.shape}")
    if P.shape[1] < 1 or P.shape[2] < 1:
        raise ValueError(f"the vote tensor needs at least one specialist and one label, got shape {P.shape}")
    return P if np.issubdtype(P.dtype, np.floating) else P.astype(np.float32)


def hard_labels(proba: np.ndarray) -> np.ndarray:
    """One specialist's (n, k) probabilities -> (n,) argmax per row, -1 where it abstained (a NaN row)."""
    proba = np.asarray(proba)
    voted = ~np.isnan(proba).any(axis=1)
    return np.where(voted, np.nan_to_num(proba).argmax(axis=1), -1)


def hard_votes(P: np.ndarray) -> np.ndarray:
    """(n, m) int16 argmax of each specialist's row (first label on ties), -1 where it abstains.

    int16 keeps the (n, m) passes over 10M-row tensors cheap; no task has 32k labels."""
    P = _check(P)
    votes = P.argmax(axis=2).astype(np.int16)
    # argmax returns the first NaN of a row holding one, so checking the picked value finds every
    # (even partly) NaN row without an (n, m, k) mask.
    votes[np.isnan(np.take_along_axis(P, votes[..., None], axis=2)[..., 0])] = -1
    return votes


def _agreement(votes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(unanimous, n_votes) from hard votes: unanimous when the largest and smallest vote coincide."""
    voted = votes >= 0
    n_votes = voted.sum(axis=1).astype(np.int64)
    hi = votes.max(axis=1, initial=-1)
    lo = np.where(voted, votes, k).min(axis=1, initial=k)
    return (n_votes > 0) & (hi == lo), n_votes


def _prob_sum(P: np.ndarray, voted: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(n, k) sum over voting specialists of w[j] * P[:, j]; one specialist at a time, in place, to
    bound memory. float32 is plenty for a sum of a few probabilities."""
    n, m, k = P.shape
    out = np.zeros((n, k), dtype=np.float32)
    scaled = np.empty((n, k), dtype=np.float32)
    for j in range(m):
        if w[j] != 0:
            np.multiply(P[:, j, :], np.float32(w[j]), out=scaled)
            np.add(out, scaled, out=out, where=voted[:, j, None])
    return out


def _result(
    posterior: np.ndarray,
    votes: np.ndarray,
    confidence: np.ndarray | None = None,
    clamped: np.ndarray | None = None,
    label: np.ndarray | None = None,
    **extra: Any,
) -> VoteResult:
    """Assemble a VoteResult: label = posterior argmax unless given, -1 where nobody voted (unless
    the row's label is known)."""
    n, k = posterior.shape
    unanimous, n_votes = _agreement(votes, k)
    empty = n_votes == 0
    if clamped is not None:
        empty &= ~clamped
    label = (posterior.argmax(axis=1) if label is None else label).astype(np.int64)
    label[empty] = -1
    if confidence is None:
        confidence = posterior[np.arange(n), np.maximum(label, 0)]
    confidence = np.where(empty, 0.0, np.clip(confidence, 0.0, 1.0)).astype(np.float32)
    posterior = posterior.astype(np.float32, copy=False)
    return VoteResult(label, confidence, posterior, unanimous, n_votes, **extra)


def _normalise(mass: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; rows without mass become uniform (no information)."""
    total = mass.sum(axis=1, keepdims=True)
    k = mass.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, mass / total, 1.0 / k)


def majority(P: np.ndarray, tie_break: Literal["probability", "first"] = "probability") -> VoteResult:
    """Plurality of hard votes (each specialist's argmax).

    Ties between labels with equally many votes go to the label with the larger summed probability
    over all voting specialists (`"probability"`), or to the lowest label index (`"first"`).
    `posterior` is the vote share of each label. `confidence` is the winner's vote share times the
    mean probability its voters gave it (= their summed winner probability / number of votes): it
    falls both when specialists dissent and when the agreeing ones are unsure, so a unanimous but
    hesitant row is not reported as certain.
    """
    if tie_break not in ("probability", "first"):
        raise ValueError(f"unknown tie_break {tie_break!r}; use 'probability' or 'first'")
    P = _check(P)
    n, m, k = P.shape
    votes = hard_votes(P)
    voted = votes >= 0
    rows = np.arange(n)
    counts = np.zeros((n, k), dtype=np.float32)
    for j in range(m):
        counts[rows, votes[:, j]] += voted[:, j]  # an abstention indexes column -1 but adds 0
    winner = counts.argmax(axis=1)
    if tie_break == "probability":
        tie = (counts == counts[rows, winner][:, None]).sum(axis=1) > 1
        # Only tied rows need the probabilities; their share (< 1) cannot overturn a vote count.
        key = counts[tie] + 0.5 * _normalise(_prob_sum(P[tie], voted[tie], np.ones(m)))
        winner[tie] = key.argmax(axis=1)
    winner_mass = np.zeros(n, dtype=np.float64)
    for j in range(m):
        winner_mass += np.where(votes[:, j] == winner, P[rows, j, winner], 0.0)
    confidence = winner_mass / np.maximum(voted.sum(axis=1), 1)
    return _result(_normalise(counts), votes, confidence, label=winner)


def soft(P: np.ndarray, weights: np.ndarray | None = None) -> VoteResult:
    """Weighted mean of the voting specialists' probability rows, renormalised.

    `weights` (m,) >= 0 scales each specialist (e.g. `log_odds_weights`); default all 1. A row whose
    voters all have weight 0 falls back to their unweighted mean rather than losing its vote.
    """
    P = _check(P)
    n, m, k = P.shape
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {m} finite values >= 0, one per specialist")
    votes = hard_votes(P)
    voted = votes >= 0
    mass = _prob_sum(P, voted, w)
    lost = (mass.sum(axis=1) <= 0) & voted.any(axis=1)
    if lost.any():
        mass[lost] = _prob_sum(P[lost], voted[lost], np.ones(m))
    return _result(_normalise(mass), votes, weights=w)


def log_odds_weights(accuracy: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """Soft-vote weights from each specialist's measured accuracy on `seen` rows: the log-odds
    log((k - 1) * acc / (1 - acc)), smoothed with two pseudo-rows at chance (1/k: Laplace's rule for
    two labels), clipped at 0 (worse than chance gets no say). Smoothing toward 1/2 instead, as
    before, lifted a specialist measured below chance on a few rows of a 3-label task above chance.
    A specialist never measured (seen 0 or accuracy NaN) gets the mean of the others, or 1 when none
    was measured."""
    accuracy = np.asarray(accuracy, dtype=float)
    seen = np.asarray(seen, dtype=float)
    measured = (seen > 0) & ~np.isnan(accuracy)
    if not measured.any():
        return np.ones(len(accuracy))
    acc = (np.nan_to_num(accuracy) * seen + 2.0 / max(k, 2)) / (seen + 2.0)
    w = np.maximum(np.log(max(k - 1, 1) * acc / (1.0 - acc)), 0.0)
    w[~measured] = w[measured].mean()
    return w


def _check_known(known: Any, n: int, k: int) -> np.ndarray:
    known = np.asarray(known)
    if known.shape != (n,) or not np.issubdtype(known.dtype, np.integer):
        raise ValueError(f"known must be an integer array of shape ({n},), -1 for unknown rows")
    if known.size and (known.min() < -1 or known.max() >= k):
        raise ValueError(f"known labels must be -1 (unknown) or a label index in [0, {k})")
    return known.astype(np.int64, copy=False)


class LabelModel:
    """What turns a vote tensor into one label per row (Snorkel's label model): `fit` once on every
    row, streamed as batches, then `predict` any rows. Majority and the soft vote need no fitting;
    Dawid-Skene learns its parameters from sufficient statistics gathered batch by batch (the counts
    of each distinct vote pattern), so fitting it on ten million rows holds one batch and the
    patterns in memory, never the whole tensor."""

    def fit(self, batches: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> LabelModel:
        """Fit on (P, known) batches of rows: `P` a vote tensor, `known` (n,) a label index per row
        or -1 (None: none known). Returns self."""
        for _ in batches:
            pass
        return self

    def predict(self, P: np.ndarray, known: np.ndarray | None = None) -> VoteResult:
        raise NotImplementedError


class NoVoters(LabelModel):
    """The vote when no specialist can vote yet (only trainable ones, before any reviewed row): every row
    unlabeled (-1), confidence 0, the uniform posterior; what a row nobody voted on gets from any method."""

    def predict(self, P: np.ndarray, known: np.ndarray | None = None) -> VoteResult:
        n, k = P.shape[0], P.shape[2]
        return _result(np.full((n, k), 1.0 / k), np.full((n, 0), -1, np.int16))


class MajorityVote(LabelModel):
    def __init__(self, tie_break: Literal["probability", "first"] = "probability"):
        self.tie_break = tie_break

    def predict(self, P: np.ndarray, known: np.ndarray | None = None) -> VoteResult:
        return majority(P, self.tie_break)


class SoftVote(LabelModel):
    def __init__(self, weights: np.ndarray | None = None):
        self.weights = weights

    def predict(self, P: np.ndarray, known: np.ndarray | None = None) -> VoteResult:
        return soft(P, self.weights)


class _PatternCounts:
    """The distinct rows of (votes, known) codes over every batch, with how often each occurs (and,
    for a soft start, the summed soft-vote posterior of its rows): all Dawid-Skene's EM reads. Memory
    is the distinct patterns, whatever the number of rows."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.rows: list[np.ndarray] = []
        self.counts: list[float] = []
        self.soft: list[np.ndarray] = []

    def add(self, codes: np.ndarray, soft_post: np.ndarray | None) -> None:
        if not len(codes):
            return
        uniq, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
        sums = None
        if soft_post is not None:
            inverse = inverse.reshape(-1)
            sums = np.stack([np.bincount(inverse, soft_post[:, c].astype(np.float64), len(uniq))
                             for c in range(soft_post.shape[1])], axis=1)
        for u, row in enumerate(uniq):
            key = row.tobytes()
            slot = self.index.get(key)
            if slot is None:
                slot = self.index[key] = len(self.rows)
                self.rows.append(row)
                self.counts.append(0.0)
                if sums is not None:
                    self.soft.append(np.zeros(sums.shape[1]))
            self.counts[slot] += float(counts[u])
            if sums is not None:
                self.soft[slot] += sums[u]

    def result(self, width: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(patterns (U, width) sorted, their counts (U,), their summed soft posteriors (U, k) or None).
        Sorted so that the order, and so EM's sums, do not depend on how the rows were batched."""
        if not self.rows:
            return np.zeros((0, width), np.int16), np.zeros(0), np.zeros((0, k))
        pats = np.stack(self.rows)
        order = np.lexsort(pats.T[::-1])
        soft_sums = np.stack(self.soft)[order] if self.soft else None
        return pats[order], np.asarray(self.counts)[order], soft_sums


class DawidSkene(LabelModel):
    """Dawid-Skene EM over hard votes: learns each specialist's k x k confusion matrix and the class
    priors without gold labels, so a specialist that is wrong in a consistent way (say, swaps two
    labels) is decoded instead of outvoted.

    Rows with the same votes (and known label) have the same posterior, so EM runs on the distinct
    vote patterns weighted by their counts, gathered batch by batch by `fit`: its cost per iteration
    does not grow with the rows. Rows with a `known` label >= 0 are clamped to it (semi-supervised;
    it also resolves what votes alone cannot, e.g. which of two disagreeing camps is right), in
    fitting and in `predict`. `smoothing` is the Laplace pseudo-count of every prior and confusion
    cell (the diagonal gets more, see below), so no probability is ever 0. `init` starts EM from the
    majority vote shares or from the soft vote. Stops when no posterior moves by more than `tol`, or
    after `n_iter` EM rounds. Fitted: `confusion_` (m, k, k) P(vote = l | true = c) as [j, c, l],
    `priors_` (k,)."""

    def __init__(self, n_iter: int = 50, tol: float = 1e-6, init: Literal["majority", "soft"] = "majority",
                 smoothing: float = 1.0):
        if init not in ("majority", "soft"):
            raise ValueError(f"unknown init {init!r}; use 'majority' or 'soft'")
        if smoothing <= 0 or n_iter < 1:
            raise ValueError("smoothing must be > 0 (so that no probability is 0) and n_iter >= 1")
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        self.smoothing = smoothing
        self.confusion_: np.ndarray | None = None
        self.priors_: np.ndarray | None = None

    @classmethod
    def from_params(cls, confusion: np.ndarray, priors: np.ndarray) -> DawidSkene:
        """A model with parameters fitted elsewhere (a plan, another run's rows)."""
        model = cls()
        model.confusion_ = np.asarray(confusion, dtype=np.float64)
        model.priors_ = np.asarray(priors, dtype=np.float64)
        return model

    def fit(self, batches: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> DawidSkene:
        counts = _PatternCounts()
        shape: tuple[int, int] | None = None
        for P, known in batches:
            P = _check(P)
            n, m, k = P.shape
            if shape is not None and shape != (m, k):
                raise ValueError(f"every batch needs the same specialists and labels: {shape} then {(m, k)}")
            shape = (m, k)
            votes = hard_votes(P)
            kn = np.full(n, -1, np.int64) if known is None else _check_known(known, n, k)
            codes = np.c_[np.where(votes >= 0, votes, k), kn + 1].astype(np.int16)  # k = abstained
            counts.add(codes, soft(P).posterior if self.init == "soft" else None)
        if shape is None:
            raise ValueError("Dawid-Skene needs at least one batch of the vote tensor to fit on")
        m, k = shape
        pats, n_rows, soft_sums = counts.result(m + 1, k)
        self.confusion_, self.priors_ = self._em(pats[:, :m].T.astype(np.int64), pats[:, m].astype(np.int64) - 1,
                                                 n_rows, soft_sums, k)
        return self

    def _em(self, pat: np.ndarray, clamp: np.ndarray, counts: np.ndarray, soft_sums: np.ndarray | None,
            k: int) -> tuple[np.ndarray, np.ndarray]:
        """EM over the distinct patterns `pat` (m, U) (label-major state: every bincount and take runs
        over contiguous memory). Returns (confusion, priors)."""
        m, n_pat = pat.shape
        smoothing = self.smoothing
        clamped = clamp >= 0
        if self.init == "majority":
            T = np.stack([(pat == c).sum(axis=0) for c in range(k)]).astype(np.float64)
        else:
            assert soft_sums is not None
            T = soft_sums.T.copy()
        T = _normalise(T.T).T
        T[:, clamped] = np.eye(k)[:, clamp[clamped]]
        # Dirichlet pseudo-counts: `smoothing` on every wrong label, 2 (k - 1) `smoothing` on the right one,
        # i.e. a prior mean accuracy of 2/3. Negligible on real data sizes, but it keeps tiny inputs from
        # washing out to uniform and breaks the tie between a labelling and its permutations.
        pseudo = smoothing * (np.ones((k, k)) + (2 * k - 3) * np.eye(k))
        for _ in range(self.n_iter):
            # M-step: priors and confusions [c, l] from the posterior-weighted vote counts.
            wT = T * counts
            priors = (wT.sum(axis=1) + smoothing) / (counts.sum() + k * smoothing)
            log_conf = np.zeros((m, k, k + 1))  # [j, class, vote]; the abstain column stays log 1 = 0
            for j in range(m):
                cnt = np.stack([np.bincount(pat[j], wT[c], k + 1)[:k] for c in range(k)]) + pseudo
                log_conf[j, :, :k] = np.log(cnt / cnt.sum(axis=1, keepdims=True))
            # E-step: posterior over the true label of each vote pattern.
            log_post = np.repeat(np.log(priors)[:, None], n_pat, axis=1)
            for j in range(m):
                for c in range(k):
                    log_post[c] += np.take(log_conf[j, c], pat[j])
            new = np.exp(log_post - log_post.max(axis=0))
            new /= new.sum(axis=0)
            new[:, clamped] = T[:, clamped]
            delta = np.abs(new - T).max(initial=0.0)
            T = new
            if delta < self.tol:
                break
        return np.exp(log_conf[:, :, :k]), priors

    def predict(self, P: np.ndarray, known: np.ndarray | None = None) -> VoteResult:
        """The posterior of each row under the fitted parameters (the E-step); rows with a `known`
        label are clamped to it."""
        if self.confusion_ is None or self.priors_ is None:
            raise ValueError("this Dawid-Skene model is not fitted: call fit first")
        P = _check(P)
        n, m, k = P.shape
        if self.confusion_.shape != (m, k, k):
            raise ValueError(f"the model was fitted on {self.confusion_.shape[0]} specialists and "
                             f"{self.confusion_.shape[1]} labels, the tensor has {m} and {k}")
        votes = hard_votes(P)
        log_post = np.repeat(np.log(self.priors_)[None, :], n, axis=0)
        log_conf = np.log(self.confusion_)  # [j, c, l]
        for j in range(m):
            has = votes[:, j] >= 0
            log_post[has] += log_conf[j][:, votes[has, j]].T
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        clamped = None
        if known is not None:
            kn = _check_known(known, n, k)
            clamped = kn >= 0
            post[clamped] = np.eye(k)[kn[clamped]]
        return _result(post, votes, clamped=clamped, confusion=self.confusion_, priors=self.priors_)


def dawid_skene(
    P: np.ndarray,
    n_iter: int = 50,
    tol: float = 1e-6,
    init: Literal["majority", "soft"] = "majority",
    smoothing: float = 1.0,
    known: np.ndarray | None = None,
) -> VoteResult:
    """`DawidSkene` fitted on the rows of `P` (with their `known` labels, -1 unknown) and applied to
    them: see there."""
    P = _check(P)
    return DawidSkene(n_iter, tol, init, smoothing).fit([(P, known)]).predict(P, known)


def dawid_skene_apply(P: np.ndarray, confusion: np.ndarray, priors: np.ndarray) -> VoteResult:
    """The Dawid-Skene posterior of rows under already-fitted confusion matrices and priors (of a
    `dawid_skene` result on other rows): for rows the EM must not see, e.g. held-out ones."""
    return DawidSkene.from_params(confusion, priors).predict(P)


def label_model(method: Method, weights: np.ndarray | None = None) -> LabelModel:
    """The label model of the task's `voting` name (`weights` for `soft`), unfitted."""
    if method == "majority":
        return MajorityVote()
    if method == "soft":
        return SoftVote(weights)
    if method == "dawid-skene":
        return DawidSkene()
    raise ValueError(f"unknown voting method {method!r}; use one of ['dawid-skene', 'majority', 'soft']")


def aggregate(P: np.ndarray, method: Method, **kw: Any) -> VoteResult:
    """Dispatch to `majority`, `soft` or `dawid_skene` by the task's `voting` name."""
    methods = {"majority": majority, "soft": soft, "dawid-skene": dawid_skene}
    if method not in methods:
        raise ValueError(f"unknown voting method {method!r}; use one of {sorted(methods)}")
    return methods[method](P, **kw)
