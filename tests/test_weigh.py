"""A reviewer that is often wrong: its answers are weighed against the vote, not obeyed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeljury import load_task, run, trust
from labeljury.progress import SilentProgress
from labeljury.review.base import ReviewItem, ReviewResult
from labeljury.review.gold import GoldReviewer
from labeljury.status import run_status, weighing_lines
from labeljury.store import RunStore, Verdict
from labeljury.training import audit_weights
from labeljury.weighing import fit_confusion

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
    assert all(a["noisy"].label == by_text[texts[t]] for t, a in answers.items())


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
        reviews = {t: r.label for t, r in s.reviews().items()}
        ids, labels = s.learned_labels()
        learned = dict(zip(ids.tolist(), labels))
        verdicts = s.verdicts()
    overruled = [t for t, v in verdicts.items() if v.answer is not None and v.label != v.answer and t in learned]
    assert overruled
    assert all(learned[t] == reviews[t] != verdicts[t].label for t in overruled)


def test_its_answers_count_as_much_as_they_are_believed(noisy_run) -> None:
    """Each answer is learned from with the weight of the posterior that it is right: its wrong
    answers weigh less than its right ones, the vote's outweighed ones least."""
    out, run_dir, reviewer = noisy_run
    with RunStore.existing(run_dir) as s:
        weights = s.train_weights()
        verdicts = s.verdicts()
    answered = [t for t, v in verdicts.items() if v.answer is not None]
    assert set(weights) <= {t for t, v in verdicts.items() if v.train is not None}
    assert len(weights) >= 0.9 * len(answered)
    assert all(0 < w < 1 for w in weights.values())
    for t, w in weights.items():  # the belief in the answer: the decided label's own when they agree
        v = verdicts[t]
        assert v.train == v.answer
        if v.label == v.answer:
            assert w == pytest.approx(v.belief)
        else:
            assert w < v.belief
    wrong = np.array([weights[t] for t in weights if t in reviewer.wrong])
    right = np.array([weights[t] for t in weights if t not in reviewer.wrong])
    assert wrong.mean() < right.mean() - 0.05


def test_with_training_weights_the_heads_learn_each_answer_by_its_belief(tmp_path: Path, monkeypatch) -> None:
    from labeljury.context import Tuning
    from labeljury.specialists.heads import TfidfHead

    seen: list[list[float] | None] = []
    fit = TfidfHead.fit

    def spy(self, X, y, sample_weight=None):
        seen.append(None if sample_weight is None else list(sample_weight))
        return fit(self, X, y, sample_weight)

    monkeypatch.setattr(TfidfHead, "fit", spy)
    data = tmp_path / "in.csv"
    make_rows(400, seed=5).to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", budget=0.3))
    for on in (False, True):
        seen.clear()
        run(task, data, tmp_path / f"out-{on}.csv", reviewer=NoisyReviewer(data, task.label_names),
            tuning=Tuning(train_weights=on))
        weighted = [w for w in seen if w is not None]
        if on:  # every stage after the first weighing: some rows count less than once
            assert weighted and all(0 < min(w) and max(w) <= 1 for w in weighted)
            assert any(min(w) < 0.5 for w in weighted)
        else:
            assert seen and not weighted


def test_with_only_a_weighed_reviewer_the_accuracy_cannot_be_estimated_and_the_run_says_why(noisy_run) -> None:
    """The audit is answered by the same reviewer, wrong on a third of rows, that the specialists learned
    from: its agreement with them is no evidence of its accuracy, so nothing measures the output. The run
    says so, and what would measure it, instead of an interval that may miss (a real LLM's recorded answers
    made the estimate 5-13 points too high: BENCHMARKS.md). Nor is the confidence calibrated against it:
    calibrated to the reviewer's agreement corrected by a confusion matrix that agreement estimated, it
    would only look calibrated; it stays the vote's own probability, and the run says so."""
    from labeljury.evaluate import evaluate
    from labeljury.status import _estimate_line, confidence_line
    from labeljury.trust import audit_line

    out, run_dir, reviewer = noisy_run
    info = run_status(run_dir)
    assert info["estimated_accuracy"] is None and info["unmeasured"] == {"noisy": info["audit_rows"]}
    line = _estimate_line(info)
    assert line.startswith("cannot be estimated") and "noisy" in line and "labeljury review" in line
    buys = 1.96 * (0.25 / info["audit_rows"]) ** 0.5 * 100  # what people answering the audit would buy
    assert f"answer its {info['audit_rows']} rows" in line and f"within ±{buys:.1f} points at worst" in line
    ev = evaluate(out, "label", run_dir)
    assert ev.estimated_accuracy is None and ev.estimate_covers_truth is None and "cannot be estimated" in ev.estimate_note
    assert "accuracy unmeasured" in dict(weighing_lines(info))["reviewer noisy"]
    assert info["calibrated_on"] == "none" and "NOT calibrated" in confidence_line(info) and "noisy" in confidence_line(info)
    # where its audit answers differ from the vote, that is a change, not a fix: nothing says which was right
    bought = info["audit_bought"]
    assert bought["unmeasured"] == ["noisy"] and bought["fixed"] == 0 and bought["changed"] > 0
    said = audit_line(bought)
    assert "fixed" not in said and f"changed {bought['changed']} labels" in said and "for the better or not" in said
    with RunStore.existing(run_dir) as s:  # the vote's own probability: what the final vote said
        final = s.final_for(np.arange(s.n_texts))
    voted = [f for f in final.values() if f.source in ("consensus", "vote")]
    assert voted and all(f.confidence == f.vote_confidence for f in voted)


def test_with_people_on_the_audit_the_weighed_reviewers_rows_widen_the_interval_to_cover_the_truth(
        tmp_path: Path) -> None:
    """People (the gold column) answer the audit; the noisy reviewer decides the hard rows. With a small
    audit it answered too few audit rows blind (under 10) to be measured: its accuracy unmeasured, those
    rows count anywhere from all wrong to all right, and the interval covers the truth."""
    from labeljury.review.cascade import CascadeReviewer
    from labeljury.review.gold import GoldReviewer
    from labeljury.weighing import MIN_MEASURED_ROWS

    data = tmp_path / "in.csv"
    make_rows(900, seed=22).to_csv(data, index=False)
    path = write_task(tmp_path / "t.yaml", budget=0.3)
    # a uniform audit: a stage finds few of its rows hard, so the reviewer answers few of them blind
    path.write_text(path.read_text().replace("policy: margin}", "policy: margin, audit: 30, audit_sampling: uniform}"))
    task = load_task(path)
    noisy = NoisyReviewer(data, task.label_names)
    cascade = CascadeReviewer([(noisy, None), (GoldReviewer(data, "label", task.label_names), None)])
    out = tmp_path / "out.csv"
    assert run(task, data, out, reviewer=cascade, details=True).status == "complete"
    df = pd.read_csv(out, keep_default_na=False)
    info = run_status(out.with_name("out.csv.run"))
    decided = df.annotation_source.str.endswith("noisy").sum()  # reviewed:noisy and vote:over-noisy
    with RunStore.existing(out.with_name("out.csv.run")) as s:
        assert 0 < len(s.audit_hard()) < MIN_MEASURED_ROWS  # it answered a few audit rows blind: too few
    assert decided > 0 and info["unmeasured_rows"] == decided
    low, high = info["estimated_accuracy_low"], info["estimated_accuracy_high"]
    truth = (df.annotation == df.label).mean()
    assert low <= truth <= high and high - low >= 0.9 * decided / len(df)
    assert info["estimates"]["overall"]["method"].endswith("+bounds")


def test_with_people_on_the_audit_the_weighed_reviewer_answers_audit_rows_blind_and_is_measured_by_them(
        tmp_path: Path) -> None:
    """The noisy reviewer also answers, blind, the audit rows a stage would have sent it (inside the
    budget): a random sample of the rows it decides, also answered by people. Its decided rows are
    credited with the share right there, not with its agreement with the vote: the interval is narrower
    than all-wrong-to-all-right and still covers the truth."""
    from labeljury.review.cascade import CascadeReviewer
    from labeljury.sources import AUDIT

    data = tmp_path / "in.csv"
    make_rows(3000, seed=22).to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", budget=0.3))
    noisy = NoisyReviewer(data, task.label_names)
    asked: list[int] = []
    review = noisy.review
    noisy.review = lambda items: (asked.append(it.key) or r for it, r in zip(items, review(items)))  # type: ignore[method-assign]
    cascade = CascadeReviewer([(noisy, None), (GoldReviewer(data, "label", task.label_names), None)])
    out = tmp_path / "out.csv"
    assert run(task, data, out, reviewer=cascade, details=True).status == "complete"
    run_dir = out.with_name("out.csv.run")
    df = pd.read_csv(out, keep_default_na=False)
    info = run_status(run_dir)
    with RunStore.existing(run_dir) as s:
        audit, hard_audit = set(s.routed(AUDIT)), s.audit_hard()
        answers = s.answers(sorted(audit))
    blind = {t for t, said in answers.items() if "noisy" in said and "gold" in said}
    assert blind == set(hard_audit) and len(blind) >= 30  # exactly the audit rows a stage would have sent it
    assert len(set(asked)) + len(audit) <= 0.3 * len(df) + 1  # blind answers inside the budget
    assert "noisy" not in info["unmeasured"]
    line = dict(weighing_lines(info))["reviewer noisy"]
    assert f"measured on {len(blind)} audit rows it answered blind" in line
    # the shares it states are the ones the estimate credits: each blind row weighted (1 - pi)/pi
    from labeljury.training import audit_weights

    b = info["weighing"]["blind"]["noisy"]
    with RunStore.existing(run_dir) as s:
        w = audit_weights(s, np.array(b["ids"]))
        first_row = dict(s.conn.execute("SELECT text_id, first_row FROM texts").fetchall())
    ok = [int(task.label_names[a] == df.label[first_row[t]]) for a, t in zip(b["answer"], b["ids"])]
    assert b["answer_ok"] == ok and b["share_answer_right"] == pytest.approx(np.average(ok, weights=w))
    assert b["share_right"] == pytest.approx(np.average(b["right"], weights=w))
    assert f"its answers {b['share_answer_right']:.0%} right, the labels weighed from them {b['share_right']:.0%}" in line
    overall = info["estimates"]["overall"]
    assert overall["method"].endswith("+blind") and overall["blind_rows"] == len(blind)
    truth = (df.annotation == df.label).mean()
    decided = df.annotation_source.str.endswith("noisy").sum()
    assert overall["low"] <= truth <= overall["high"]
    assert overall["high"] - overall["low"] < 0.9 * decided / len(df)  # narrower than bounding its rows
    # the hard rows were decided by a weighed reviewer: their answers are no truth, so the audit is not priced by them
    assert "hard_rows" not in info["audit_bought"] and "more labels" not in trust.audit_line(info["audit_bought"])


def test_specialists_audit_accuracies_allow_for_the_reviewers_mistakes(noisy_run) -> None:
    """The audit's answers are the noisy reviewer's: a specialist's audit accuracy is measured against
    them allowing for its mistakes, so it is nearer its true accuracy than its agreement with them
    (measured here: vader true 84.4%, agreement 58.9%, shown 73.7%)."""
    import json

    out, run_dir, reviewer = noisy_run
    df = pd.read_csv(out, keep_default_na=False).drop_duplicates("text").set_index("text")
    info = run_status(run_dir)
    with RunStore.existing(run_dir) as s:
        audit = s.routed("audit")
        by_id = s.texts_by_id(audit)
        texts = [by_id[t][0] for t in audit]
        w = audit_weights(s, np.array(audit))  # the audit favours hard rows: each weighted back
    rows = df.loc[texts]
    vader = rows.annotation_votes.map(lambda v: json.loads(v)["vader"])  # fixed: the same vote every stage
    true = np.average(vader == rows.label, weights=w)
    agreement = np.average(vader == rows.annotation_review, weights=w)
    shown = next(sp for sp in info["specialists"] if sp["name"] == "vader")["audit_accuracy"]
    assert max(st.get("audit_corrected_rows", 0) for st in info["stages"]) == len(audit)
    assert abs(shown - true) < abs(agreement - true) - 0.05


def test_a_run_store_made_before_training_weights_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    with RunStore(tmp_path / "r") as s:
        s.put_verdicts({1: Verdict("a", 0.9, "a", False, "a", 0.8)})
    with sqlite3.connect(tmp_path / "r" / "run.db") as c:  # as an older labeljury made it
        c.execute("ALTER TABLE verdicts DROP COLUMN weight")
    with RunStore.existing(tmp_path / "r") as s:
        assert s.train_weights() == {}
        assert s.verdicts()[1] == Verdict("a", 0.9, "a", False, "a", None)  # read without the column
    with RunStore(tmp_path / "r") as s:
        assert s.verdicts()[1] == Verdict("a", 0.9, "a", False, "a", None) and s.train_weights() == {}
        s.put_verdicts({1: Verdict("a", 0.9, "a", False, "a", 0.8)})
        assert s.train_weights() == {1: 0.8}


def test_an_obeyed_reviewer_decides_its_rows(tmp_path: Path, toy_csv: Path) -> None:
    out = tmp_path / "out.csv"
    run(load_task(write_task(tmp_path / "t.yaml")), toy_csv, out, details=True)
    df = pd.read_csv(out, keep_default_na=False)
    reviewed = df[df.annotation_review != ""]
    assert (reviewed.annotation_source == "reviewed:gold").all()
    assert (reviewed.annotation == reviewed.annotation_review).all()
    with RunStore.existing(tmp_path / "out.csv.run") as s:
        assert all(v.answer is None for v in s.verdicts().values())  # nothing weighed
        assert s.train_weights() == {}  # every row learned from once


def test_the_report_lists_the_flagged_rows_and_the_reviewers_accuracy(noisy_run) -> None:
    from labeljury.report import build_report

    out, run_dir, reviewer = noisy_run
    html = build_report(run_dir)
    assert "Flagged rows (" in html and "Reviewer noisy" in html
    df = pd.read_csv(out, keep_default_na=False)
    assert df[df.annotation_flag != ""].text.iloc[0][:60] in html


class ConstantReviewer:
    """An LLM gone wrong: the same label for every row; weighed."""

    kind = "llm"
    weigh = True

    def __init__(self, label: str):
        self.label = label

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        for it in items:
            yield ReviewResult(it.key, self.label, "reviewed:llm", 0.9)


class Logs(SilentProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_a_reviewer_that_answers_one_label_to_every_row_is_called_broken_and_credited_nothing(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    rows = make_rows(600, seed=23)
    rows.to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", budget=0.3))
    logs = Logs()
    out = tmp_path / "out.csv"
    assert run(task, data, out, reviewer=ConstantReviewer(task.label_names[0]), progress=logs).status == "complete"
    info = run_status(out.with_name("out.csv.run"))
    broken = info["weighing"]["degenerate"]["llm"]
    assert broken["label"] == task.label_names[0] and broken["share"] == 1.0 and broken["vote_share"] < 0.6
    lines = dict(weighing_lines(info))
    assert "looks broken" in lines["WARNING: reviewer llm"] and "accuracy unmeasured" in lines["reviewer llm"]
    assert any(line.startswith("WARNING: reviewer llm answers") for line in logs.lines)
    assert info["estimated_accuracy"] is None  # nothing independent measured it: no number to ship on
    assert any("cannot be estimated" in line for line in logs.lines)


def test_a_reviewer_with_a_skewed_but_sane_label_mix_is_not_called_broken() -> None:
    from labeljury.weighing import degenerate_answers

    prior = np.tile([0.9, 0.05, 0.05], (100, 1))
    assert degenerate_answers(np.zeros(100, np.int64), prior, ["a", "b", "c"]) is None  # the vote agrees
    answers = np.r_[np.zeros(90, np.int64), np.ones(10, np.int64)]
    assert degenerate_answers(answers, np.tile([0.3, 0.4, 0.3], (100, 1)), ["a", "b", "c"]) is None  # 90%: not all
    assert degenerate_answers(np.zeros(20, np.int64), np.tile([0.1, 0.8, 0.1], (20, 1)), ["a", "b", "c"]) is None


def test_a_model_card_scored_against_an_unmeasured_reviewer_says_it_is_agreement(tmp_path: Path) -> None:
    """No audit (300 rows at 20%) and only the noisy reviewer: the exported head's cross-validated score is
    agreement with that reviewer's answers, and the printed line and the card say so."""
    from typer.testing import CliRunner

    from labeljury.cli import app

    data = tmp_path / "in.csv"
    make_rows(300, seed=8).to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", budget=0.2))
    out = tmp_path / "out.csv"
    assert run(task, data, out, reviewer=NoisyReviewer(data, task.label_names)).status == "complete"
    res = CliRunner().invoke(app, ["export-model", str(tmp_path / "out.csv.run"), "--output", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    said = "against answers of noisy, whose accuracy is unmeasured: agreement with it, not a measured accuracy"
    assert said in res.stdout.replace("\n", " ") and said in (tmp_path / "m" / "README.md").read_text()
