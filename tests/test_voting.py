"""Vote aggregation on synthetic label matrices whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from labeljury.voting import (
    DawidSkene,
    VoteResult,
    aggregate,
    dawid_skene,
    hard_votes,
    label_model,
    log_odds_weights,
    majority,
    soft,
)

METHODS = ["majority", "soft", "dawid-skene"]


def tensor(votes: np.ndarray, k: int, conf: float = 0.8) -> np.ndarray:
    """(n, m) hard votes (-1 = abstain) -> (n, m, k) float32 tensor: `conf` on the vote, the rest spread."""
    n, m = votes.shape
    P = np.full((n, m, k), (1 - conf) / (k - 1), dtype=np.float32)
    i, j = np.nonzero(votes >= 0)
    P[i, j, votes[i, j]] = conf
    P[votes < 0] = np.nan
    return P


def noisy(rng: np.random.Generator, y: np.ndarray, k: int, acc: float) -> np.ndarray:
    """Votes that are right with probability `acc`, otherwise a uniformly random wrong label."""
    wrong = rng.random(len(y)) > acc
    v = y.copy()
    v[wrong] = (y[wrong] + rng.integers(1, k, wrong.sum())) % k
    return v


def correlated_wrong(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One good voter (90%) and two voters that are good on labels 0 and 1 but both call label 2 "0"
    70% of the time: on label 2 they often outvote the good voter together."""
    rng = np.random.default_rng(seed)
    k = 3
    y = rng.integers(0, k, n)

    def confuses_2_as_0() -> np.ndarray:
        v = noisy(rng, y, k, 0.9)
        v[(y == 2) & (rng.random(n) < 0.7)] = 0
        return v

    votes = np.stack([noisy(rng, y, k, 0.9), confuses_2_as_0(), confuses_2_as_0()], axis=1)
    return tensor(votes, k), y


@pytest.mark.parametrize("method", METHODS)
def test_easy_case_is_labelled_correctly(method: str) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 500)
    votes = np.stack([noisy(rng, y, 4, 0.9) for _ in range(3)] + [y], axis=1)
    r = aggregate(tensor(votes, 4), method)
    assert isinstance(r, VoteResult)
    assert (r.label == y).mean() > 0.97
    assert r.posterior.shape == (500, 4)
    np.testing.assert_allclose(r.posterior.sum(axis=1), 1.0, atol=1e-5)
    assert np.all((r.confidence >= 0) & (r.confidence <= 1))
    assert np.all(r.n_votes == 4)


def test_unanimous_and_n_votes() -> None:
    votes = np.array([[0, 0, 0], [0, 1, 0], [2, -1, 2], [-1, -1, -1], [-1, 1, -1]])
    r = majority(tensor(votes, 3))
    assert r.unanimous.tolist() == [True, False, True, False, True]
    assert r.n_votes.tolist() == [3, 3, 2, 0, 1]
    assert r.label.tolist() == [0, 0, 2, -1, 1]


def test_majority_breaks_ties_by_summed_probability() -> None:
    P = np.array([[[0.9, 0.1, 0.0], [0.4, 0.6, 0.0]]], dtype=np.float32)  # one vote each for 0 and 1
    assert majority(P).label.tolist() == [0]
    P = np.array([[[0.55, 0.45, 0.0], [0.05, 0.95, 0.0]]], dtype=np.float32)
    assert majority(P).label.tolist() == [1]
    assert majority(P, tie_break="first").label.tolist() == [0]


def test_majority_confidence_is_share_times_winner_probability() -> None:
    P = np.array(
        [
            [[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]],  # 2 of 3 votes for 0 with probs 0.9, 0.7
            [[0.6, 0.4], [0.6, 0.4], [0.6, 0.4]],  # unanimous but hesitant
        ],
        dtype=np.float32,
    )
    r = majority(P)
    np.testing.assert_allclose(r.confidence, [(0.9 + 0.7) / 3, 0.6], rtol=1e-6)
    np.testing.assert_allclose(r.posterior[0], [2 / 3, 1 / 3], rtol=1e-6)


def test_soft_is_the_weighted_mean() -> None:
    P = np.array([[[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]]], dtype=np.float32)
    np.testing.assert_allclose(soft(P).posterior[0], [0.55, 0.45], rtol=1e-6)
    r = soft(P, weights=np.array([1.0, 3.0, 5.0]))
    np.testing.assert_allclose(r.posterior[0], [(0.9 + 0.6) / 4, (0.1 + 2.4) / 4], rtol=1e-6)
    assert r.label.tolist() == [1]
    # Voters with weight 0 only: their unweighted mean, not a lost row.
    assert soft(P, weights=np.array([0.0, 0.0, 1.0])).label.tolist() == [0]
    with pytest.raises(ValueError):
        soft(P, weights=np.array([1.0, -1.0, 1.0]))


def test_dawid_skene_beats_majority_on_correlated_wrong_voters() -> None:
    P, y = correlated_wrong()
    acc_majority = (majority(P).label == y).mean()
    acc_soft = (soft(P).label == y).mean()
    acc_ds = (dawid_skene(P).label == y).mean()
    assert acc_ds > max(acc_majority, acc_soft) + 0.1
    assert acc_ds > 0.92


def test_dawid_skene_recovers_confusion_matrices_and_priors() -> None:
    # EM creeps along this weakly identified direction, so let it run to convergence.
    P, y = correlated_wrong(30_000)
    r = dawid_skene(P, n_iter=1000, tol=1e-9)
    assert r.confusion is not None and r.confusion.shape == (3, 3, 3) and r.priors is not None
    np.testing.assert_allclose(r.confusion.sum(axis=2), 1.0)
    assert np.all(r.confusion > 0)  # smoothing: no zero probabilities
    good = [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]
    confuser = [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.7 + 0.3 * 0.05, 0.3 * 0.05, 0.3 * 0.9]]
    np.testing.assert_allclose(r.confusion[0], good, atol=0.05)
    np.testing.assert_allclose(r.confusion[1], confuser, atol=0.05)
    np.testing.assert_allclose(r.confusion[2], confuser, atol=0.05)
    np.testing.assert_allclose(r.priors, np.bincount(y) / len(y), atol=0.03)


def test_dawid_skene_decodes_a_swapper() -> None:
    rng = np.random.default_rng(2)
    k, n = 3, 3000
    y = rng.integers(0, k, n)
    swapped = np.array([1, 0, 2])[y]  # always calls 0 "1" and 1 "0"
    votes = np.stack([noisy(rng, y, k, 0.85), noisy(rng, y, k, 0.75), swapped], axis=1)
    r = dawid_skene(tensor(votes, k))
    assert (r.label == y).mean() > 0.99
    assert (r.label == y).mean() > (majority(tensor(votes, k)).label == y).mean() + 0.1
    assert r.confusion is not None
    np.testing.assert_allclose(r.confusion[2], [[0, 1, 0], [1, 0, 0], [0, 0, 1]], atol=0.05)


def test_known_labels_are_clamped_and_fix_what_votes_alone_cannot() -> None:
    # Two identical voters that call label 0 "1" and a good one: without gold this is symmetric
    # (the good voter could be the one that swaps), so EM follows the majority; a few known rows decide.
    rng = np.random.default_rng(3)
    k, n = 3, 4000
    y = rng.integers(0, k, n)
    collapsed = np.where(y == 0, 1, y)
    P = tensor(np.stack([noisy(rng, y, k, 0.9), collapsed, collapsed], axis=1), k)
    known = np.where(rng.random(n) < 0.05, y, -1)
    unsupervised = (dawid_skene(P).label == y).mean()
    r = dawid_skene(P, known=known)
    assert (r.label == y).mean() > unsupervised + 0.2
    has = known >= 0
    assert np.array_equal(r.label[has], known[has])
    np.testing.assert_allclose(r.confidence[has], 1.0)
    np.testing.assert_allclose(r.posterior[has], np.eye(k)[known[has]])


def test_known_label_of_a_row_nobody_voted_on_is_kept() -> None:
    P = tensor(np.array([[0, 0], [1, 1], [-1, -1], [-1, -1]]), 2)
    r = dawid_skene(P, known=np.array([-1, -1, 1, -1]))
    assert r.label.tolist() == [0, 1, 1, -1]
    assert r.confidence[3] == 0


@pytest.mark.parametrize("method", METHODS)
def test_abstentions(method: str) -> None:
    votes = np.array([[0, -1, 0], [-1, -1, -1], [1, -1, 1], [1, -1, 0]])  # specialist 1 never votes
    P = tensor(votes, 3)
    P[3, 2, 1] = np.nan  # a partly-NaN row also counts as an abstention
    r = aggregate(P, method)
    assert r.label[:3].tolist() == [0, -1, 1]
    assert r.confidence[1] == 0
    assert r.n_votes.tolist() == [2, 0, 2, 1]
    assert not r.unanimous[1]
    assert np.all(np.isfinite(r.posterior)) and np.all(np.isfinite(r.confidence))


@pytest.mark.parametrize("method", METHODS)
def test_single_specialist_and_empty_input(method: str) -> None:
    P = tensor(np.array([[2], [0], [-1]]), 3)
    r = aggregate(P, method)
    assert r.label.tolist() == [2, 0, -1]
    assert r.unanimous.tolist() == [True, True, False]
    empty = aggregate(np.zeros((0, 2, 3), dtype=np.float32), method)
    assert empty.label.shape == (0,) and empty.posterior.shape == (0, 3)


def test_aggregate_rejects_unknown_methods_and_bad_tensors() -> None:
    with pytest.raises(ValueError, match="unknown voting method"):
        aggregate(np.zeros((1, 1, 2), dtype=np.float32), "mean")
    with pytest.raises(ValueError):
        majority(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        dawid_skene(np.zeros((2, 1, 2), dtype=np.float32), known=np.array([0, 5]))


def test_hard_votes() -> None:
    P = np.array([[[0.1, 0.9], [np.nan, np.nan], [0.5, 0.5]]], dtype=np.float32)
    assert hard_votes(P).tolist() == [[1, -1, 0]]


def test_log_odds_weights() -> None:
    rng = np.random.default_rng(4)
    k, n = 3, 2000
    y = rng.integers(0, k, n)
    votes = np.stack([y, noisy(rng, y, k, 0.7), noisy(rng, y, k, 0.2), np.full(n, -1)], axis=1)
    P = tensor(votes, k)
    known = votes[:300]
    seen = (known >= 0).sum(axis=0)
    acc = np.where(seen > 0, (known == y[:300, None]).sum(axis=0) / np.maximum(seen, 1), np.nan)
    w = log_odds_weights(acc, seen, k)
    assert w[0] > w[1] > 0
    assert w[2] == 0  # worse than chance
    assert w[3] == pytest.approx(w[:3].mean())  # never measured
    np.testing.assert_array_equal(log_odds_weights(np.full(4, np.nan), np.zeros(4), k), np.ones(4))
    assert (soft(P, weights=w).label == y).mean() > (soft(P).label == y).mean()


def test_a_specialist_measured_below_chance_on_a_few_rows_gets_no_weight() -> None:
    """zeroshot at 27.7% on a 3-label task kept a vote weight of 0.22: smoothing its accuracy toward
    1/2 lifted it above chance. Smoothed toward chance, below chance stays below it however few rows."""
    for seen in (3, 5, 10, 40, 400):
        w = log_odds_weights(np.array([0.277, 0.9]), np.array([seen, seen]), 3)
        assert w[0] == 0 and w[1] > 0
    # two labels: the same as Laplace's rule, as before
    assert log_odds_weights(np.array([0.8]), np.array([10]), 2)[0] == pytest.approx(np.log(9 / 3))


def test_dawid_skene_scales() -> None:
    rng = np.random.default_rng(5)
    n, m, k = 200_000, 4, 3
    y = rng.integers(0, k, n)
    votes = np.stack([noisy(rng, y, k, acc) for acc in (0.9, 0.8, 0.7, 0.6)], axis=1)
    votes[rng.random((n, m)) < 0.05] = -1
    r = dawid_skene(tensor(votes, k))
    assert r.label.shape == (n,)
    assert (r.label == y).mean() > (majority(tensor(votes, k)).label == y).mean()
    assert np.all(np.diagonal(r.confusion, axis1=1, axis2=2) > 0.55)


@pytest.mark.parametrize("init", ["majority", "soft"])
def test_dawid_skene_fitted_in_batches_is_the_fit_on_every_row(init: str) -> None:
    # the pipeline fits Dawid-Skene a chunk at a time: the pattern counts, and so every parameter and
    # posterior, must not depend on how the rows were cut
    rng = np.random.default_rng(11)
    n, k = 9000, 3
    y = rng.integers(0, k, n)
    votes = np.stack([noisy(rng, y, k, acc) for acc in (0.85, 0.7, 0.6)], axis=1)
    votes[rng.random(votes.shape) < 0.1] = -1
    P = tensor(votes, k)
    P[:, 1] = np.where(np.isnan(P[:, 1]), np.nan, rng.dirichlet(np.ones(k), n).astype(np.float32) * 0.2 + P[:, 1] * 0.8)
    known = np.where(rng.random(n) < 0.05, y, -1)
    whole = DawidSkene(init=init).fit([(P, known)])
    cuts = [0, 17, 2048, 2049, 5000, n]
    batched = DawidSkene(init=init).fit((P[a:b], known[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
    tol = 0 if init == "majority" else 1e-9  # soft sums of float posteriors, added in another order
    np.testing.assert_allclose(batched.confusion_, whole.confusion_, rtol=0, atol=tol)
    np.testing.assert_allclose(batched.priors_, whole.priors_, rtol=0, atol=tol)
    everything = dawid_skene(P, known=known, init=init)
    assert (everything.label == y).mean() > 0.8
    # any rows, predicted alone, get what they get among all the rows
    rows = rng.choice(n, 300, replace=False)
    alone = batched.predict(P[rows], known[rows])
    np.testing.assert_array_equal(alone.label, everything.label[rows])
    np.testing.assert_allclose(alone.posterior, everything.posterior[rows], atol=1e-6)
    assert (alone.label[known[rows] >= 0] == known[rows][known[rows] >= 0]).all()  # clamped


def test_label_models_by_name() -> None:
    rng = np.random.default_rng(12)
    y = rng.integers(0, 3, 500)
    P = tensor(np.stack([noisy(rng, y, 3, a) for a in (0.9, 0.6, 0.6)], axis=1), 3)
    w = np.array([2.0, 0.5, 0.5])
    np.testing.assert_array_equal(label_model("majority").fit([(P, None)]).predict(P).label, majority(P).label)
    np.testing.assert_array_equal(label_model("soft", w).predict(P).posterior, soft(P, w).posterior)
    ds = label_model("dawid-skene")
    with pytest.raises(ValueError, match="not fitted"):
        ds.predict(P)
    ds.fit([(P[:250], None), (P[250:], None)])
    np.testing.assert_array_equal(ds.predict(P).label, dawid_skene(P).label)
    with pytest.raises(ValueError, match="fitted on 3 specialists"):
        ds.predict(P[:, :2])
    with pytest.raises(ValueError, match="same specialists"):
        DawidSkene().fit([(P, None), (P[:, :2], None)])
    with pytest.raises(ValueError, match="unknown voting method"):
        label_model("mean")  # type: ignore[arg-type]
