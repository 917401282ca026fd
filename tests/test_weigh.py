"""A reviewer that is often wrong: its answers are weighed against the vote, not obeyed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeljury import load_task, run
from labeljury.review.base import ReviewItem, ReviewResult
from labeljury.review.gold import GoldReviewer
from labeljury.review.weigh import fit_confusion
from labeljury.status import run_status
from labeljury.store import RunStore

from .conftest import make_rows, write_task


def test_em_recovers_the_reviewers_accuracy_and_the_combination_beats_both() -> None:
    rng = np.random.default_rng(0)
    n, k, acc = 3000, 3, 0.73
    y = rng.integers(0, k, n)
    # the vote: right about 60% of the time, more often where it is surer, but overconfident
    sure = rng.uniform(0.4, 0.99, n)
    right = rng.random(n) < sure - 0.1
    guess = np.where(right, y, (y + rng.integers(1, k, n)) % k)
    prior = np.full((n, k), 0.0) + ((1 - sure) / (k - 1))[:, None]
    prior[np.arange(n), guess] = sure
    wrong = rng.random(n) >= acc
    answer = np.where(wrong, (y + rng.integers(1, k, n)) % k, y)
    C, q = fit_confusion(prior, answer, np.full(n, -1), k)
    # the vote and one reviewer say little about which of them is right when they disagree: the
    # estimate is rough, but the decision it leads to is right more often than either
    assert np.diag(C).mean() == pytest.approx(acc, abs=0.1)
    decided = q.argmax(axis=1)
    assert (decided == y).mean() > (answer == y).mean() + 0.01 > (guess == y).mean()
    # rows a trusted reviewer also answered are the truth, and sharpen the estimate
    truth = np.where(np.arange(n) < 300, y, -1)
    C2, q2 = fit_confusion(prior, answer, truth, k)
    assert (q2[:300].argmax(axis=1) == y[:300]).all()
    assert abs(np.diag(C2).mean() - acc) <= abs(np.diag(C).mean() - acc) + 0.01


class NoisyReviewer:
    """Gold with every third answer (by a hash of the row) a wrong label; weighed."""

    kind = "noisy"
    weigh = True

    def __init__(self, input_path: Path, labels: Sequence[str]):
        self.gold = GoldReviewer(input_path, "label", labels)
        self.labels = list(labels)
        self.wrong: set[int] = set()

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        for r in self.gold.review(items):
            if r.label is not None and hashlib.md5(str(r.key).encode()).digest()[0] % 3 == 0:
                self.wrong.add(r.key)
                r = replace(r, label=self.labels[(self.labels.index(r.label) + 1) % len(self.labels)])
            yield replace(r, source="reviewed:noisy", confidence=0.9)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> tuple[Path, Path, NoisyReviewer]:
    tmp = tmp_path_factory.mktemp("noisy")
    data = tmp / "in.csv"
    make_rows(900, seed=21).to_csv(data, index=False)
    task = load_task(write_task(tmp / "t.yaml", budget=0.3))
    reviewer = NoisyReviewer(data, task.label_names)
    out = tmp / "out.csv"
    assert run(task, data, out, reviewer=reviewer, details=True).status == "complete"
    return out, tmp / "out.csv.run", reviewer


def test_the_vote_outweighs_answers_it_strongly_contradicts(noisy_run) -> None:
    out, run_dir, reviewer = noisy_run
    df = pd.read_csv(out, keep_default_na=False)
    asked = df[df.annotation_review != ""]
    over = asked[asked.annotation_source == "vote:over-noisy"]
    kept = asked[asked.annotation_source == "reviewed:noisy"]
    assert len(over) >= 10 and len(kept) > len(over)
    assert (over.annotation == over.label).mean() > 0.8  # outweighed answers were mostly the wrong ones
    assert (over.annotation_review != over.label).mean() > 0.8
    # the rows it answered come out more right than its answers
    assert (asked.annotation == asked.label).mean() > (asked.annotation_review == asked.label).mean() + 0.03
    # its own answer is kept in the run store, whatever decided the row
    with RunStore.existing(run_dir) as s:
        answers = s.answers()
        texts = {t: text for t, (text, _) in s.texts_by_id(list(answers)).items()}
    by_text = dict(zip(df.text, df.annotation_review))
    assert all(a["noisy"]["label"] == by_text[texts[t]] for t, a in answers.items())


def test_status_reports_the_reviewers_estimated_accuracy_and_flags(noisy_run) -> None:
    out, run_dir, reviewer = noisy_run
    info = run_status(run_dir)
    acc = info["weighing"]["accuracy"]["noisy"]
    assert 0.5 < acc < 0.85  # it is right on about two rows in three
    df = pd.read_csv(out, keep_default_na=False)
    flagged = df[df.annotation_flag != ""]
    assert info["flagged"] == len(flagged) > 0
    asked = df[df.annotation_review != ""]
    base = (asked.annotation_review != asked.label).mean()
    assert (flagged.annotation_review != flagged.label).mean() > base + 0.2  # flags find its mistakes


def test_the_specialists_learn_from_its_answers_not_from_the_vote(noisy_run) -> None:
    """Relabeling the reviewed rows by the vote before training feeds the vote's mistakes back into
    it (measured: BENCHMARKS.md); the specialists learn from the reviewer's own answers."""
    out, run_dir, reviewer = noisy_run
    with RunStore.existing(run_dir) as s:
        reviews = s.labeled_reviews()
        decided = s.decided_reviews()
        verdicts = s.verdicts()
    overruled = [t for t, v in verdicts.items() if v[2] is not None and v[0] != v[2]]
    assert overruled
    assert all(decided[t] == reviews[t] != verdicts[t][0] for t in overruled)


def test_an_obeyed_reviewer_decides_its_rows(tmp_path: Path, toy_csv: Path) -> None:
    out = tmp_path / "out.csv"
    run(load_task(write_task(tmp_path / "t.yaml")), toy_csv, out, details=True)
    df = pd.read_csv(out, keep_default_na=False)
    reviewed = df[df.annotation_review != ""]
    assert (reviewed.annotation_source == "reviewed:gold").all()
    assert (reviewed.annotation == reviewed.annotation_review).all()
    with RunStore.existing(tmp_path / "out.csv.run") as s:
        assert all(answer is None for _, _, answer, _, _ in s.verdicts().values())  # nothing weighed


def test_the_report_lists_the_flagged_rows_and_the_reviewers_accuracy(noisy_run) -> None:
    from labeljury.report import build_report

    out, run_dir, reviewer = noisy_run
    html = build_report(run_dir)
    assert "Flagged rows (" in html and "Reviewer noisy" in html
    df = pd.read_csv(out, keep_default_na=False)
    assert df[df.annotation_flag != ""].text.iloc[0][:60] in html
