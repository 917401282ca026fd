"""Which rows go to the reviewer: a hardness score per row, a budgeted pick of the hardest rows (the
query strategy `HardestFirst`), and a diverse bootstrap sample to review first. How many rows may be
picked is the budget plan's business (`budget`).

Hardness is in [0, 1], higher = harder; rows where every specialist abstained score exactly 1.0 and
every other row less, so they are reviewed first (nothing else can label them).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .voting import VoteResult, hard_votes

Policy = Literal["disagreement", "margin", "confidence"]

# Disagreement hardness puts every non-unanimous row above this cut and every unanimous row at or
# below it, so "hardness > DISAGREEMENT_CUT" is exactly the paper's "the specialists disagree".
DISAGREEMENT_CUT = 0.5
BOOTSTRAP_FIT_ROWS = 50_000


def hardness(result: VoteResult, P: np.ndarray | None, policy: Policy = "margin") -> np.ndarray:
    """(n,) float64 hardness of each row under `policy`.

    - `disagreement` (the paper: any disagreement is hard): a non-unanimous row scores
      0.5 + 0.5 * (1 - share of votes for the chosen label), in (0.5, 1]; a unanimous row scores
      0.5 * (1 - confidence), in [0, 0.5], so that within each group less confident rows come first.
      Needs `P` to count the votes.
    - `margin`: 1 - (top posterior - second posterior).
    - `confidence`: 1 - top posterior.

    `margin` and `confidence` read `result.posterior`; after `majority` that is the vote share, so
    they rank by how split the vote is and ignore the probabilities.
    """
    post = np.asarray(result.posterior, dtype=np.float64)
    n, k = post.shape
    if policy == "disagreement":
        if P is None:
            raise ValueError("the disagreement policy needs the vote tensor P to count votes")
        votes = hard_votes(P)
        if votes.shape[0] != n:
            raise ValueError(f"P has {votes.shape[0]} rows but the vote result has {n}")
        winner_votes = (votes == result.label[:, None]).sum(axis=1)  # rows without votes: set to 1 below
        share = winner_votes / np.maximum(result.n_votes, 1)
        h = np.where(result.unanimous, 0.5 * (1.0 - result.confidence), 0.5 + 0.5 * (1.0 - share))
    elif policy == "margin":
        # Partitioning at k - 2 puts the second largest there and the largest after it.
        top = np.partition(post, k - 2, axis=1) if k >= 2 else np.c_[np.zeros(n), post]
        h = 1.0 - (top[:, -1] - top[:, -2])
    elif policy == "confidence":
        h = 1.0 - post.max(axis=1, initial=0.0)
    else:
        raise ValueError(f"unknown policy {policy!r}; use 'disagreement', 'margin' or 'confidence'")
    # 1.0 is reserved for rows nobody voted on, so they sort before any row with a label.
    h = np.clip(h, 0.0, np.nextafter(1.0, 0.0))
    h[np.asarray(result.n_votes) == 0] = 1.0
    return h


def select_for_review(
    hardness: np.ndarray,
    budget: int,
    threshold: float | None = None,
    policy: Policy = "margin",
    exclude: np.ndarray | None = None,
    unanimous: np.ndarray | None = None,
) -> np.ndarray:
    """Row indices to review, hardest first (ties: lower index first), at most `budget` of them.

    A row is eligible when it is not in `exclude` (a bool mask or indices of rows already reviewed) and:
    - `threshold` given: its hardness is > threshold, whatever the policy;
    - otherwise, with the `disagreement` policy: it is not unanimous (the paper's rule) — from
      `unanimous` when given, else from hardness > DISAGREEMENT_CUT (the same rows for hardness
      computed by `hardness(..., "disagreement")`);
    - otherwise every row is eligible and the budget alone limits the pick.
    """
    h = np.asarray(hardness, dtype=np.float64)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    idx = np.flatnonzero(eligible_rows(h, threshold, policy, exclude, unanimous))
    order = np.argsort(-h[idx], kind="stable")
    return idx[order[:budget]]


def eligible_rows(h: np.ndarray, threshold: float | None = None, policy: Policy = "margin",
                  exclude: np.ndarray | None = None, unanimous: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: the rows of hardness `h` that `select_for_review` may pick (see there)."""
    if h.ndim != 1 or not np.all(np.isfinite(h)):
        raise ValueError("hardness must be a 1-D array of finite values")
    eligible = np.ones(len(h), dtype=bool)
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.dtype == bool:
            if exclude.shape != h.shape:
                raise ValueError("an exclude mask must have one entry per row")
            eligible &= ~exclude
        else:
            eligible[exclude.astype(np.int64)] = False
    if threshold is not None:
        eligible &= h > threshold
    elif policy == "disagreement":
        eligible &= ~np.asarray(unanimous, dtype=bool) if unanimous is not None else h > DISAGREEMENT_CUT
    return eligible


def in_sorted(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """(len(ids),) bool: which of `ids` are in the sorted array `sorted_ids` (a binary search each:
    a batch against millions of routed rows costs the batch, not the millions)."""
    if not len(sorted_ids):
        return np.zeros(len(ids), bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


class TopHardest:
    """The `budget` hardest of rows seen in batches, hardest first (ties: lower id first), kept as
    the batches go by: memory is the budget and one batch, whatever the number of rows. Candidates
    gather until twice the budget, then the hardest `budget` of them are kept (each row is sorted a
    bounded number of times: O(rows log budget) in all)."""

    def __init__(self, budget: int):
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        self.budget = budget
        self._ids: list[np.ndarray] = []
        self._h: list[np.ndarray] = []
        self._held = 0

    def add(self, ids: np.ndarray, h: np.ndarray) -> None:
        if not self.budget or not len(ids):
            return
        self._ids.append(np.asarray(ids, dtype=np.int64))
        self._h.append(np.asarray(h, dtype=np.float64))
        self._held += len(ids)
        if self._held > 2 * self.budget:
            ids, h = self._top()
            self._ids, self._h, self._held = [ids], [h], len(ids)

    def _top(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._ids:
            return np.zeros(0, np.int64), np.zeros(0)
        ids, h = np.concatenate(self._ids), np.concatenate(self._h)
        if len(ids) > self.budget:  # only rows at least as hard as the budget-th one need sorting
            cut = np.partition(-h, self.budget - 1)[self.budget - 1]
            keep = -h <= cut
            ids, h = ids[keep], h[keep]
        order = np.lexsort((ids, -h))[: self.budget]
        return ids[order], h[order]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids hardest first, their hardness)."""
        return self._top()


@dataclass(frozen=True)
class HardestFirst:
    """The query strategy of the stages: the rows hardest under `policy` (and harder than `threshold`
    when set), none already routed, at most `budget` of them."""

    policy: Policy = "margin"
    threshold: float | None = None

    def query(self, result: VoteResult, P: np.ndarray, budget: int,
              exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(row indices hardest first, their hardness), over rows held in memory."""
        h = hardness(result, P, self.policy)
        sel = select_for_review(h, budget, threshold=self.threshold, policy=self.policy, exclude=exclude,
                                unanimous=result.unanimous)
        return sel, h[sel]

    def query_stream(self, votes: Iterable[Any], budget: int,
                     exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(text ids hardest first, their hardness) over votes that come batch by batch (each with
        `ids`, `result`, `P`: `scoring.Vote`), none of the sorted ids `exclude`. The same rows as
        `query` over all of them at once, holding one batch and the budget."""
        top = TopHardest(budget)
        excluded = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
        for v in votes:
            h = hardness(v.result, v.P, self.policy)
            ok = eligible_rows(h, self.threshold, self.policy, in_sorted(v.ids, excluded), v.result.unanimous)
            top.add(v.ids[ok], h[ok])
        return top.result()


def select_bootstrap(
    embeddings: np.ndarray | Callable[[np.ndarray], np.ndarray] | None, n: int, seed: int = 0,
    n_rows: int | None = None
) -> np.ndarray:
    """A small diverse sample of row indices (sorted) to review before anything else.

    k-means with `n` clusters (MiniBatchKMeans, fitted on a random subsample of at most
    BOOTSTRAP_FIT_ROWS rows so it stays fast on millions of rows); from each cluster the subsample row
    nearest its centroid, so every region of the data is represented once. Clusters that come out
    empty (duplicate rows) are topped up with random rows. Deterministic for a `seed`. Without
    embeddings (`None`, then `n_rows` is required) it is a uniform random sample. `embeddings` may be
    a function of row indices (with `n_rows`): it is then asked for the subsample's rows only, so the
    rest need never be encoded.
    """
    if n < 0:
        raise ValueError(f"the bootstrap size must be >= 0, got {n}")
    if embeddings is None or callable(embeddings):
        if n_rows is None:
            raise ValueError("select_bootstrap needs n_rows when there are no embeddings or a function of rows")
        total = n_rows
    else:
        embeddings = np.asarray(embeddings)
        total = len(embeddings)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if embeddings is None or n == 0:
        return np.sort(rng.choice(total, n, replace=False))

    from sklearn.cluster import MiniBatchKMeans  # imported here: sklearn takes ~1 s to import
    from sklearn.exceptions import ConvergenceWarning

    # 20 rows per cluster are plenty to place it; k-means++ seeding is the cost (O(rows * n))
    fit_rows = np.sort(rng.choice(total, min(total, BOOTSTRAP_FIT_ROWS, max(20 * n, 2000)), replace=False))
    X = embeddings(fit_rows) if callable(embeddings) else embeddings[fit_rows]
    X = np.asarray(X, dtype=np.float32).reshape(len(fit_rows), -1)
    km = MiniBatchKMeans(n_clusters=n, n_init=1, batch_size=4096, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(X)
    cluster = km.predict(X)
    dist = ((X - km.cluster_centers_[cluster]) ** 2).sum(axis=1)
    by_cluster = np.lexsort((dist, cluster))  # rows grouped by cluster, nearest to centroid first
    _, first = np.unique(cluster[by_cluster], return_index=True)
    picked = fit_rows[by_cluster[first]]
    if len(picked) < n:
        rest = np.setdiff1d(np.arange(total), picked)
        picked = np.concatenate([picked, rng.choice(rest, n - len(picked), replace=False)])
    return np.sort(picked)
