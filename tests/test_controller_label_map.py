"""Label maps checked against reviewed labels: the best assignment, and keeping or replacing a
proposed map."""

from __future__ import annotations

import numpy as np
import pytest

from labeljury.controller import agreement, best_label_map, check_label_map, recheck_label_map
from labeljury.errors import SpecialistError
from labeljury.specialists import VaderSentiment
from labeljury.specialists.base import LabelMap, MappedSpecialist

TASK = ["negative", "neutral", "positive"]


def _probs(true_idx: np.ndarray, m: int, column_of: dict[int, list[int]], noise: float, seed: int = 0) -> np.ndarray:
    """(n, m) model probabilities whose top label is one of `column_of[true]` except for a `noise` share."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(m), size=len(true_idx)) * 0.3
    for i, t in enumerate(true_idx):
        cols = column_of[int(t)] if rng.random() > noise else [int(rng.integers(m))]
        p[i, rng.choice(cols)] += 1.0
    return p / p.sum(axis=1, keepdims=True)


def test_hungarian_recovers_a_permuted_generic_map():
    y = np.repeat([0, 1, 2], 40)
    # LABEL_0 means positive, LABEL_1 negative, LABEL_2 neutral
    p = _probs(y, 3, {0: [1], 1: [2], 2: [0]}, noise=0.3)
    model = ["LABEL_0", "LABEL_1", "LABEL_2"]
    best = best_label_map(model, TASK, p, [TASK[i] for i in y])
    assert best == {"LABEL_0": "positive", "LABEL_1": "negative", "LABEL_2": "neutral"}
    assert best_label_map(model, TASK, p, y) == best  # indices work too


def test_one_to_one_when_sizes_match_even_if_argmax_would_merge():
    # model label A is top for most negative AND most neutral rows; argmax alone would map both B and A
    # to negative; the assignment keeps one task label per model label
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    p = np.zeros((30, 3))
    p[:10, 0] = 1  # negative -> A
    p[10:17, 0] = 1  # neutral mostly -> A too
    p[17:20, 1] = 1
    p[20:, 2] = 1
    best = best_label_map(["A", "B", "C"], TASK, p, y)
    assert sorted(best.values()) == TASK and best["C"] == "positive"


def test_many_to_one_for_more_model_labels():
    stars = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    y = np.repeat([0, 1, 2], 50)
    p = _probs(y, 5, {0: [0, 1], 1: [2], 2: [3, 4]}, noise=0.2)
    assert best_label_map(stars, TASK, p, y) == {"1 star": "negative", "2 stars": "negative", "3 stars": "neutral",
                                                 "4 stars": "positive", "5 stars": "positive"}


def test_fewer_model_labels_leave_a_task_label_uncovered():
    y = np.repeat([0, 1, 2], 30)
    p = _probs(y, 2, {0: [0], 1: [0, 1], 2: [1]}, noise=0.1)
    best = best_label_map(["NEGATIVE", "POSITIVE"], TASK, p, y)
    assert best == {"NEGATIVE": "negative", "POSITIVE": "positive"}


def test_a_right_proposal_is_kept_and_a_swapped_one_replaced():
    y = np.repeat([0, 1, 2], 40)
    p = _probs(y, 3, {0: [0], 1: [1], 2: [2]}, noise=0.25)
    model = ["neg", "neu", "pos"]
    right = {"neg": "negative", "neu": "neutral", "pos": "positive"}
    ok = check_label_map(model, TASK, right, p, y)
    assert ok.accepted and ok.chosen == right and ok.proposed_agreement == pytest.approx(ok.best_agreement)
    swapped = {"neg": "positive", "neu": "neutral", "pos": "negative"}
    bad = check_label_map(model, TASK, swapped, p, y)
    assert not bad.accepted and bad.chosen == right
    assert bad.proposed_agreement < 0.5 < bad.best_agreement
    assert "replaced" in bad.note()


def test_agreement_counts_abstentions_as_wrong():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]])
    y = ["negative", "positive", "positive"]
    assert agreement({"a": "negative", "b": "positive"}, ["a", "b"], TASK, p, y) == pytest.approx(2 / 3)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(SpecialistError, match="not a task label"):
        best_label_map(["a", "b"], TASK, np.eye(2), ["negative", "happy"])
    with pytest.raises(SpecialistError, match=r"\(2, 2\)"):
        best_label_map(["a", "b"], TASK, np.ones((3, 2)), ["negative", "neutral"])


def test_recheck_replaces_a_wrong_vader_map():
    texts = ["I love this, wonderful!", "great and happy day", "awful, I hate it", "terrible horrible service",
             "the meeting is on tuesday", "the report is in the folder"] * 3
    y = ["positive", "positive", "negative", "negative", "neutral", "neutral"] * 3
    inner = VaderSentiment()
    wrong = LabelMap.build(inner.classes_, TASK, {"negative": "positive", "neutral": "neutral", "positive": "negative"})
    model = MappedSpecialist(inner, wrong, name="vader")
    result = recheck_label_map(model, texts, y)
    assert result is not None and not result.accepted
    assert dict(model.label_map.mapping) == {"negative": "negative", "neutral": "neutral", "positive": "positive"}
    assert recheck_label_map(model, texts, y).accepted  # the corrected map now passes
