"""Routing: hardness scores, budgeted selection, the query strategy, the diverse bootstrap sample."""

from __future__ import annotations

import numpy as np
import pytest

from labeljury.routing import (
    DISAGREEMENT_CUT,
    HardestFirst,
    TopHardest,
    hardness,
    in_sorted,
    select_bootstrap,
    select_for_review,
)
from labeljury.voting import dawid_skene, majority, soft


def tensor(probs: list[list[list[float] | None]]) -> np.ndarray:
    """Nested rows of specialist probability rows (None = abstain) -> (n, m, k) float32."""
    k = len(next(p for row in probs for p in row if p is not None))
    return np.array([[p if p is not None else [np.nan] * k for p in row] for row in probs], dtype=np.float32)


P = tensor(
    [
        [[0.9, 0.1], [0.8, 0.2], [0.95, 0.05]],  # unanimous, confident
        [[0.6, 0.4], [0.55, 0.45], [0.6, 0.4]],  # unanimous, hesitant
        [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]],  # 2 against 1
        [[0.9, 0.1], [0.2, 0.8], None],  # 1 against 1
        [None, None, None],  # nobody voted
    ]
)


def test_disagreement_hardness() -> None:
    r = majority(P)
    h = hardness(r, P, "disagreement")
    assert h.tolist()[4] == 1.0
    assert np.all(h[:2] <= DISAGREEMENT_CUT) and np.all(h[2:] > DISAGREEMENT_CUT)
    assert h[1] > h[0]  # among unanimous rows the less confident is harder
    assert h[3] > h[2]  # a 1-1 split is harder than a 2-1 split
    np.testing.assert_allclose(h[2], 0.5 + 0.5 * (1 - 2 / 3))
    np.testing.assert_allclose(h[0], 0.5 * (1 - r.confidence[0]))


@pytest.mark.parametrize("vote", [majority, soft, dawid_skene])
@pytest.mark.parametrize("policy", ["disagreement", "margin", "confidence"])
def test_hardness_is_in_unit_interval_and_nobody_voted_is_hardest(vote, policy: str) -> None:
    h = hardness(vote(P), P, policy)
    assert h.shape == (5,) and np.all((h >= 0) & (h <= 1))
    assert h[4] == 1.0 and np.all(h[:4] < 1.0)


def test_margin_and_confidence_hardness() -> None:
    r = soft(P)
    top = np.sort(r.posterior, axis=1)
    margin = 1 - (top[:, -1] - top[:, -2])
    np.testing.assert_allclose(hardness(r, None, "margin")[:4], margin[:4], rtol=1e-6)
    np.testing.assert_allclose(hardness(r, None, "confidence")[:4], (1 - top[:, -1])[:4], rtol=1e-6)
    with pytest.raises(ValueError):
        hardness(r, None, "disagreement")
    with pytest.raises(ValueError):
        hardness(r, P, "entropy")  # type: ignore[arg-type]


def test_select_hardest_first_with_stable_ties() -> None:
    h = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.7])
    assert select_for_review(h, 3).tolist() == [1, 3, 5]
    assert select_for_review(h, 10).tolist() == [1, 3, 5, 2, 0, 4]
    assert select_for_review(h, 0).tolist() == []
    assert select_for_review(h, 10, threshold=0.5).tolist() == [1, 3, 5]
    assert select_for_review(h, 10, exclude=np.array([3, 5])).tolist() == [1, 2, 0, 4]
    mask = np.zeros(6, bool)
    mask[1] = True
    assert select_for_review(h, 2, exclude=mask).tolist() == [3, 5]
    with pytest.raises(ValueError):
        select_for_review(h, -1)


def test_disagreement_policy_only_picks_non_unanimous_rows() -> None:
    r = majority(P)
    h = hardness(r, P, "disagreement")
    picked = select_for_review(h, 100, policy="disagreement")
    assert picked.tolist() == [4, 3, 2]
    assert select_for_review(h, 100, policy="disagreement", unanimous=r.unanimous).tolist() == [4, 3, 2]
    # An explicit threshold overrides the rule: hesitant unanimous rows become eligible too.
    assert select_for_review(h, 100, threshold=0.1, policy="disagreement").tolist() == [4, 3, 2, 1]


def test_budget_is_never_exceeded() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 60))
        h = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], n) if rng.random() < 0.5 else rng.random(n)
        budget = int(rng.integers(0, 80))
        threshold = None if rng.random() < 0.3 else float(rng.random())
        policy = rng.choice(["disagreement", "margin", "confidence"])
        exclude = rng.random(n) < 0.2
        picked = select_for_review(h, budget, threshold=threshold, policy=policy, exclude=exclude)
        assert len(picked) <= budget
        assert len(set(picked.tolist())) == len(picked)
        assert not exclude[picked].any()
        assert np.all(np.diff(h[picked]) <= 0)  # hardest first
        if threshold is not None:
            assert np.all(h[picked] > threshold)
            eligible = (h > threshold) & ~exclude
            assert len(picked) == min(budget, eligible.sum())
            # Nothing left out is harder than what was picked.
            if len(picked):
                assert not np.any(eligible & (h > h[picked].min()) & ~np.isin(np.arange(n), picked))


def blobs(per: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [50, 0], [0, 50], [50, 50], [25, 100]], dtype=float)
    X = np.concatenate([c + rng.normal(0, 1, (per, 2)) for c in centres])
    return X, np.repeat(np.arange(5), per)


def test_bootstrap_takes_one_row_per_cluster_deterministically() -> None:
    X, blob = blobs()
    picked = select_bootstrap(X, 5, seed=3)
    assert len(picked) == 5
    assert sorted(blob[picked].tolist()) == [0, 1, 2, 3, 4]
    assert np.array_equal(picked, select_bootstrap(X, 5, seed=3))
    ten = select_bootstrap(X, 10, seed=0)
    assert len(set(ten.tolist())) == 10 and np.bincount(blob[ten], minlength=5).min() >= 1


def test_bootstrap_edge_cases() -> None:
    X, _ = blobs(per=2)
    assert select_bootstrap(X, 0).tolist() == []
    assert select_bootstrap(X, 10).tolist() == list(range(10))
    assert select_bootstrap(X, 50).tolist() == list(range(10))
    dup = np.zeros((20, 3))  # fewer distinct rows than clusters: topped up with random rows
    assert len(set(select_bootstrap(dup, 4).tolist())) == 4
    fallback = select_bootstrap(None, 7, seed=1, n_rows=100)
    assert len(set(fallback.tolist())) == 7 and fallback.max() < 100
    assert np.array_equal(fallback, select_bootstrap(None, 7, seed=1, n_rows=100))
    with pytest.raises(ValueError):
        select_bootstrap(None, 3)


def test_hardest_first_queries_the_hardest_unrouted_rows() -> None:
    result = soft(P)
    h = hardness(result, P, "margin")
    sel, picked = HardestFirst("margin").query(result, P, 2)
    assert list(sel) == list(np.argsort(-h, kind="stable")[:2]) and np.allclose(picked, h[sel])
    routed = np.zeros(len(h), bool)
    routed[sel[0]] = True
    again, _ = HardestFirst("margin").query(result, P, 2, exclude=routed)
    assert sel[0] not in again and sel[1] == again[0]
    # disagreement: only rows where the specialists disagree, however large the budget
    dis, _ = HardestFirst("disagreement").query(result, P, 100)
    assert set(dis) == set(np.flatnonzero(~result.unanimous))
    # a threshold keeps only rows harder than it
    thr, hs = HardestFirst("margin", threshold=0.5).query(result, P, 100)
    assert (hs > 0.5).all() and len(thr) == int((h > 0.5).sum())


class _Batch:
    def __init__(self, ids: np.ndarray, result, P: np.ndarray):  # noqa: ANN001
        self.ids, self.result, self.P = ids, result, P


@pytest.mark.parametrize("policy,threshold", [("margin", None), ("confidence", 0.3), ("disagreement", None)])
@pytest.mark.parametrize("budget", [0, 1, 7, 150, 5000])
def test_the_streamed_query_picks_what_the_query_over_every_row_picks(policy: str, threshold, budget: int) -> None:
    # a stage votes a chunk at a time and keeps only the hardest rows so far: it must pick exactly the
    # rows (in the same order, ties by lower id) that ranking every row at once picks
    rng = np.random.default_rng(3)
    n, k = 1200, 3
    votes = rng.integers(-1, k, (n, 3))
    votes[::5] = votes[::5, :1]  # unanimous rows too
    P = np.full((n, 3, k), 0.1, np.float32)
    i, j = np.nonzero(votes >= 0)
    P[i, j, votes[i, j]] = rng.choice([0.8, 0.6, 0.8], len(i))  # few distinct values: many ties
    P[votes < 0] = np.nan
    result = soft(P)
    routed = np.sort(rng.choice(n, 200, replace=False))
    strategy = HardestFirst(policy, threshold)
    want, want_h = strategy.query(result, P, budget, exclude=routed)
    for cut in (1, 64, 700):
        batches = [_Batch(np.arange(a, min(a + cut, n)), soft(P[a:a + cut]), P[a:a + cut]) for a in range(0, n, cut)]
        got, got_h = strategy.query_stream(batches, budget, exclude=routed)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_h, want_h)
    assert not np.isin(got, routed).any()


def test_top_hardest_keeps_the_budget_and_breaks_ties_by_id() -> None:
    top = TopHardest(3)
    top.add(np.array([9, 4, 7]), np.array([0.5, 0.5, 0.9]))
    top.add(np.array([2, 8]), np.array([0.5, 0.1]))
    top.add(np.array([1]), np.array([0.2]))
    ids, h = top.result()
    assert ids.tolist() == [7, 2, 4] and h.tolist() == [0.9, 0.5, 0.5]
    assert TopHardest(0).result()[0].tolist() == []
    with pytest.raises(ValueError):
        TopHardest(-1)
    assert in_sorted(np.array([5, 1, 8]), np.array([1, 2, 8])).tolist() == [False, True, True]
    assert in_sorted(np.array([5]), np.zeros(0, np.int64)).tolist() == [False]
