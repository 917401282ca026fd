"""Multi-label tasks, their first layer: the task file's `multi_label`, label sets read and written by one
rule, `labeljury eval --multi-label`, and a clear refusal where labeljury still labels one label a text
(the multi-label run itself: tests/test_multilabel_run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, hamming_loss
from typer.testing import CliRunner

from labeljury.cli import app
from labeljury.errors import TaskError
from labeljury.labelsets import (
    LabelSetError,
    LabelSets,
    looks_like_a_set,
    multilabel_scores,
)
from labeljury.review.base import ReviewItem
from labeljury.review.gold import GoldReviewer
from labeljury.task import parse_task

runner = CliRunner()
LABELS = ["anger", "joy", "love", "sadness"]


def _task(**extra: object) -> dict:
    return {"name": "emotions", "labels": LABELS, **extra}


def test_a_set_reads_from_every_spelling_into_the_tasks_order() -> None:
    sets = LabelSets(LABELS)
    assert sets.parse("love|Joy") == ("joy", "love")
    assert sets.parse('["sadness", "anger"]') == ("anger", "sadness")
    assert sets.parse(np.array(["love"], dtype=object)) == ("love",)  # Parquet's list
    assert sets.parse(["joy", "anger"]) == ("anger", "joy")  # JSONL's list
    assert sets.parse(float("nan")) is None and sets.parse("") is None and sets.parse(None) is None
    assert LabelSets(LABELS, allow_empty=True).parse("[]") == ()
    assert LabelSets(LABELS, ";").parse("joy; love") == ("joy", "love")
    assert sets.text(("love", "anger")) == "anger|love" and sets.text(()) == "[]"


@pytest.mark.parametrize(("value", "needle"), [
    ("joy|surprise", "'surprise' is not a task label"),
    ("joy|JOY", "'joy' appears twice"),
    ("[]", "empty set is not allowed"),
    ("joy||love", "empty name between separators"),
    ('["joy", null]', "empty name"),
    ('["joy"', "not one"),
    ('["joy", 3]', "'3' is not a task label"),
])
def test_a_bad_set_is_refused_with_what_to_fix(value: str, needle: str) -> None:
    with pytest.raises(LabelSetError, match=needle.replace("[", r"\[")):
        LabelSets(LABELS).parse(value)


def test_the_task_file_says_multi_label_and_checks_its_sets() -> None:
    task = parse_task(_task(multi_label=True, allow_empty=True, label_separator=";",
                            examples=[{"text": "so happy, love you", "label": ["love", "joy"]},
                                      {"text": "meh", "label": "[]"}]))
    assert task.label_sets is not None and task.separator == ";"
    assert task.label_sets.parse("love;joy") == ("joy", "love")
    assert parse_task(_task()).label_sets is None
    bad = [
        (_task(labels=["a|b", "c"], multi_label=True), "contains the label_separator '|'"),
        (_task(allow_empty=True), "add `multi_label: true`"),
        (_task(label_separator=";"), "add `multi_label: true`"),
        (_task(multi_label=True, label_separator=" "), "cannot separate names"),
        (_task(multi_label=True, examples=[{"text": "x", "label": "joy|fear"}]), "examples[0]: 'fear' is not a task label"),
        (_task(multi_label=True, examples=[{"text": "x", "label": []}]), "examples[0]: the empty set is not allowed"),
        (_task(examples=[{"text": "x", "label": ["joy", "love"]}]), "add `multi_label: true`"),
    ]
    for data, needle in bad:
        with pytest.raises(TaskError) as err:
            parse_task(data)
        assert needle in str(err.value), str(err.value)


def test_a_single_label_task_keeps_its_fingerprint_and_a_multi_label_one_differs() -> None:
    """A run made before these keys existed goes on: written as their defaults, they change nothing."""
    plain = parse_task(_task())
    assert parse_task(_task(multi_label=False)).fingerprint() == plain.fingerprint()
    assert "multi_label" not in json.dumps(plain.model_dump(mode="json", exclude_defaults=True))
    assert parse_task(_task(multi_label=True)).fingerprint() != plain.fingerprint()


def test_what_does_not_take_sets_yet_refuses_a_multi_label_task_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "labels": ["joy", "joy|love", "anger"]}).to_csv(data, index=False)
    task = tmp_path / "task.yaml"
    task.write_text("name: emotions\nlabels: [anger, joy, love, sadness]\nmulti_label: true\n"
                    "reviewer: [{kind: gold, column: labels}, {kind: human}]\n")
    out = tmp_path / "out.csv"
    for args, said in ((["run", task, "-i", data, "-o", out], "by one reviewer, or by an LLM then a trusted reviewer "
                        "(gold, file or human), not gold, human"),):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and said in errors[0], result.output
        assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "out.csv.run").exists()


def test_the_gold_reviewer_says_when_a_single_label_tasks_gold_holds_a_set(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["joy", "joy|love", "fear"]}).to_csv(data, index=False)
    got = list(GoldReviewer(data, "label", LABELS).review([ReviewItem(key=i, row=i, text="") for i in range(3)]))
    assert got[0].label == "joy"
    assert got[1].label is None and "is a set of labels, but the task is single-label" in got[1].reason
    assert got[2].label is None and got[2].reason == "gold value 'fear' is not a task label"
    assert looks_like_a_set('["joy", "love"]', LABELS) and not looks_like_a_set("joy", LABELS)


def test_multilabel_scores_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((400, 9)) < 0.15).astype(int)
    pred = np.where(rng.random((400, 9)) < 0.8, truth, 1 - truth)
    pred[:, 8] = 0
    truth[:, 8] = 0  # a label nobody carries or predicts: out of the macro mean, as scikit-learn's over those seen
    s = multilabel_scores(truth, pred)
    seen = (truth | pred).any(0)
    assert s["micro_f1"] == pytest.approx(f1_score(truth, pred, average="micro"))
    assert s["macro_f1"] == pytest.approx(f1_score(truth[:, seen], pred[:, seen], average="macro"))
    assert s["exact_set_accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert s["hamming_loss"] == pytest.approx(hamming_loss(truth, pred))
    f1 = f1_score(truth, pred, average=None, zero_division=0)
    assert [v["f1"] for v in s["per_label"].values()] == pytest.approx(list(f1))


def _sets_frame(n: int = 300, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 4)) < 0.3
    truth[~truth.any(1), 0] = True
    pred = np.where(rng.random((n, 4)) < 0.85, truth, ~truth)
    names = np.array(LABELS)
    return (pd.DataFrame({"text": [f"t{i}" for i in range(n)], "gold": [list(names[r]) for r in truth],
                          "annotation": [list(names[r]) for r in pred],
                          "annotation_source": ["vote"] * (n - 30) + ["reviewed:gold"] * 30}), truth, pred)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_eval_scores_label_sets_in_every_format(tmp_path: Path, fmt: str) -> None:
    df, truth, pred = _sets_frame()
    path = tmp_path / f"out.{fmt}"
    if fmt == "csv":  # delimited in CSV, the empty set as []
        df.assign(gold=["|".join(s) for s in df.gold], annotation=["|".join(s) or "[]" for s in df.annotation]).to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    result = runner.invoke(app, ["eval", str(path), "--gold-column", "gold", "--multi-label", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["rows"] == len(df) and got["review_rate"] == pytest.approx(30 / len(df))
    assert got["micro_f1"] == pytest.approx(f1_score(truth, pred, average="micro"))
    assert got["exact_set_accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert got["hamming_loss"] == pytest.approx(hamming_loss(truth, pred))
    assert got["labels"] == sorted(LABELS)


def test_eval_refuses_a_bad_set_naming_its_row(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    pd.DataFrame({"gold": ["joy", "joy|love", "joy|joy"], "annotation": ["joy", "love", "joy"],
                  "annotation_source": ["vote"] * 3}).to_csv(path, index=False)
    result = runner.invoke(app, ["eval", str(path), "--gold-column", "gold", "--multi-label"])
    assert result.exit_code == 2 and "row 3, column 'gold': 'joy' appears twice in one set" in result.output
    task = tmp_path / "task.yaml"
    task.write_text("name: e\nlabels: [anger, joy]\nmulti_label: true\n")
    path.write_text("gold,annotation,annotation_source\njoy,joy,vote\nanger,joy|love,vote\n")
    result = runner.invoke(app, ["eval", str(path), "--gold-column", "gold", "--multi-label", "--task", str(task)])
    assert result.exit_code == 2 and "row 2, column 'annotation': 'love' is not a task label" in result.output
