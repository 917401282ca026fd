"""`labeljury export-model`: a real run store with real saved checkpoints (a tiny fine-tuned BERT
and a TF-IDF head) is exported; the card says what the model is, and the exported folder loads and
predicts with plain transformers / scikit-learn, following the card's own code."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labeljury.cli import app
from labeljury.errors import ExportError, RunStoreError
from labeljury.model_export import export_model
from labeljury.registry import SpecialistRecord
from labeljury.review.base import ReviewResult
from labeljury.specialists.finetune import FineTunedClassifier
from labeljury.specialists.heads import TfidfHead
from labeljury.store import RunStore
from labeljury.task import SpecialistSpec, Task
from tests.conftest import make_rows
from tests.tiny_models import make_tiny_bert

LABELS = {"negative": "the author dislikes something", "neutral": "no opinion either way",
          "positive": "the author likes something"}
TASK = Task(name="toy-sentiment", labels=LABELS, instructions="Classify the sentiment of a short review.")
runner = CliRunner()


@pytest.fixture(scope="module")
def toy() -> tuple[list[str], list[str], list[str], list[str]]:
    train, test = make_rows(150, seed=1), make_rows(30, seed=2)
    return list(train.text), list(train.label), list(test.text), list(test.label)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, toy: tuple) -> dict[str, Path]:
    """One saved checkpoint of each kind, made by the specialists' own `save`."""
    X, y, _, _ = toy
    root = tmp_path_factory.mktemp("ckpts")
    tiny = make_tiny_bert(root / "tiny-bert")
    FineTunedClassifier(list(LABELS), model=str(tiny), epochs=10, lr=1e-2).fit(X, y).save(root / "finetune")
    TfidfHead(list(LABELS)).fit(X, y).save(root / "tfidf")
    return {"finetune": root / "finetune", "tfidf": root / "tfidf"}


def make_run(run_dir: Path, checkpoints: dict[str, Path], head_acc: float = 0.8) -> Path:
    """A run store as the pipeline leaves it: task, specialists with promoted versions in the registry,
    reviews, stage metrics, and checkpoints in checkpoints/<name>-v<version>/."""
    import shutil

    ids = np.arange(40)

    with RunStore(run_dir) as s:
        s.set_meta("task", TASK.model_dump(mode="json"))
        s.save_specialists([{"name": n, "spec": SpecialistSpec(id=i).model_dump(mode="json")}
                            for n, i in (("zeroshot", "zeroshot"), ("finetune", "finetune"), ("tfidf-head", "tfidf-head"))])
        s.update_specialist("zeroshot", validation_accuracy=0.95, validation_rows=40)  # best, but not trainable
        s.update_specialist("finetune", version=2, validation_accuracy=0.6, validation_rows=40)  # bootstrap score
        s.update_specialist("tfidf-head", version=1, validation_accuracy=head_acc, validation_rows=40)
        for t in range(57):
            s.put_review(ReviewResult(t, list(LABELS)[t % 3], "reviewed:gold"))
        s.put_review(ReviewResult(99, None, "queued:file", pending=True))  # not a training row
        # finetune: v2 promoted at stage 0 (85%), stage 1's candidate (80%) rolled back, v2 kept at 85%.
        s.put_stage(0, {"stage": 0, "train_rows": 40, "specialists": {
            "finetune": {"accuracy_before": None, "accuracy_after": 0.85, "promoted": True}}})
        s.put_stage(1, {"stage": 1, "train_rows": 57, "specialists": {
            "finetune": {"accuracy_before": 0.85, "accuracy_after": 0.8, "promoted": False}}})
        s.put_version("finetune", 1, stage=None, train_ids=ids, checkpoint="checkpoints/finetune-v1",
                      metrics={"measured": []})
        s.put_version("finetune", 2, stage=0, train_ids=ids, checkpoint="checkpoints/finetune-v2", metrics={
            "measured": [{"stage": 0, "accuracy": 0.85, "rows": 10}, {"stage": 1, "accuracy": 0.85, "rows": 10}]})
        s.put_version("tfidf-head", 1, stage=None, train_ids=ids, checkpoint="checkpoints/tfidf-head-v1",
                      metrics={"measured": []})
    shutil.copytree(checkpoints["finetune"], run_dir / "checkpoints" / "finetune-v2")
    shutil.copytree(checkpoints["finetune"], run_dir / "checkpoints" / "finetune-v1")  # superseded
    shutil.copytree(checkpoints["tfidf"], run_dir / "checkpoints" / "tfidf-head-v1")
    return run_dir


def code_block(card: str) -> str:
    return re.search(r"```python\n(.*?)```", card, re.S).group(1)


def test_exports_the_best_trained_specialist_as_a_plain_hf_folder(tmp_path: Path, checkpoints: dict, toy: tuple,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    _, _, Xt, yt = toy
    run = make_run(tmp_path / "run", checkpoints)
    res = export_model(run, tmp_path / "out")
    assert (res.specialist, res.version, res.kind) == ("finetune", 2, "transformers")
    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "labels.json"} <= set(os.listdir(out))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]  # no temporary folder left
    assert json.loads((out / "labels.json").read_text()) == [
        {"index": i, "label": k, "description": v} for i, (k, v) in enumerate(LABELS.items())]

    card = (out / "README.md").read_text()
    for needle in ("# toy-sentiment: finetune", "Classify the sentiment of a short review.",
                   "| 0 | negative | the author dislikes something |", "| 2 | positive | the author likes something |",
                   "checkpoint v2", "57 reviewed rows", "Validation accuracy: 85.0% on 10 held-out reviewed rows, which that version did not train on",
                   "full fine-tuning", "one fit and 0 continual-learning update(s): 150 rows seen", "pipeline_tag: text-classification"):
        assert needle in card, needle
    assert "| stage | train_rows | accuracy_before | accuracy_after | promoted |" in card
    stage_rows = [line for line in card.splitlines() if line.startswith(("| 0 | 40 |", "| 1 | 57 |"))]
    assert stage_rows == ["| 0 | 40 |  | 0.85 | True |", "| 1 | 57 | 0.85 | 0.8 | False |"]

    # The card's own snippet runs against the exported folder and gives the specialist's labels.
    scope: dict = {}
    monkeypatch.chdir(tmp_path)  # the snippet names the folder relative to where it was exported
    exec(code_block(card).replace('["first text to label", "second text"]', repr(Xt)), scope)
    assert isinstance(scope["proba"], torch.Tensor)
    expected = FineTunedClassifier.load(checkpoints["finetune"]).predict_proba(Xt)
    assert scope["labels"] == [list(LABELS)[i] for i in expected.argmax(axis=1)]
    assert np.mean(np.array(scope["labels"]) == np.array(yt)) >= 0.8


def test_exports_a_chosen_head_as_plain_data_that_predicts(tmp_path: Path, checkpoints: dict, toy: tuple,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, Xt, yt = toy
    run = make_run(tmp_path / "run", checkpoints)
    res = export_model(run, tmp_path / "head", specialist="tfidf-head")
    assert (res.specialist, res.kind, res.validation_accuracy) == ("tfidf-head", "scikit-learn", 0.8)
    card = (tmp_path / "head" / "README.md").read_text()
    assert "scikit-learn `LogisticRegression` over TF-IDF word and character n-grams" in card
    assert "library_name: sklearn" in card and "TfidfHead.load" in card
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code_block(card).replace('["first text to label", "second text"]', repr(Xt)), scope)
    expected = TfidfHead.load(checkpoints["tfidf"]).predict_proba(Xt)
    assert list(scope["labels"]) == [list(LABELS)[i] for i in expected.argmax(axis=1)]
    assert np.mean(np.array(scope["labels"]) == np.array(yt)) >= 0.8


def test_picks_by_latest_validation_accuracy(tmp_path: Path, checkpoints: dict) -> None:
    # finetune's latest score is its kept checkpoint's 85% at stage 1 (its table entry says 60%).
    assert export_model(make_run(tmp_path / "a", checkpoints, head_acc=0.8), tmp_path / "oa").specialist == "finetune"
    res = export_model(make_run(tmp_path / "b", checkpoints, head_acc=0.9), tmp_path / "ob")
    assert (res.specialist, res.validation_accuracy) == ("tfidf-head", 0.9)


def test_latest_accuracy_follows_promotions() -> None:
    def record(*versions: list[tuple[int, float]]) -> SpecialistRecord:
        return SpecialistRecord("m", {"id": "m"}, "active", len(versions), 0.5, 20, None, None, [
            {"version": v + 1, "metrics": {"measured": [{"stage": st, "accuracy": a, "rows": 5} for st, a in ms]}}
            for v, ms in enumerate(versions)])

    assert record().latest_accuracy == 0.5  # never measured on held-out rows: its bootstrap score
    assert record([(0, 0.8)]).latest_accuracy == 0.8
    assert record([(0, 0.8), (1, 0.75)], [(2, 0.6)]).latest_accuracy == 0.6
    assert record([(0, 0.8), (3, 0.7)], [(2, 0.6)]).latest_accuracy == 0.7  # by stage, not by version


def test_the_final_version_is_scored_by_cross_validation_not_by_an_earlier_versions_holdout() -> None:
    def record(version: int, measured: list[tuple[int, int, float, int, str]]) -> SpecialistRecord:
        return SpecialistRecord("m", {"id": "m"}, "active", version, 0.5, 20, None, None, [
            {"version": v, "metrics": {"measured": [{"stage": st, "accuracy": a, "rows": n, "on": on}
                                                    for vv, st, a, n, on in measured if vv == v]}}
            for v in range(1, version + 1)])

    # v2 was held out on 9 rows at stage 1; the final refit (v3) was cross-validated on 60
    r = record(3, [(2, 1, 0.444, 9, "holdout"), (3, 2, 0.9, 60, "cv")])
    assert (r.latest_accuracy, r.score.rows, r.score.version) == (0.9, 60, 3)
    assert r.score.describe(3) == "90.0% on 60 reviewed rows, cross-validated"
    old = record(3, [(2, 1, 0.444, 9, "holdout")])  # the final version not measured: says whose it is
    assert old.score.describe(3) == "44.4% on 9 held-out reviewed rows, measured on v2"


def test_a_small_run_without_an_audit_exports_its_final_version_scored_on_every_reviewed_row(tmp_path: Path) -> None:
    """300 rows at 20%: no audit. The card said 44.4% from 9 held-out rows of the version before the
    one exported; now the version exported, cross-validated on every reviewed row, and how many."""
    from labeljury import load_task, run
    from labeljury.registry import read_registry
    from tests.conftest import write_task

    make_rows(300, seed=8).to_csv(tmp_path / "in.csv", index=False)
    run(load_task(write_task(tmp_path / "t.yaml", budget=0.2)), tmp_path / "in.csv", tmp_path / "out.csv")
    res = runner.invoke(app, ["export-model", str(tmp_path / "out.csv.run"), "--output", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    with RunStore.existing(tmp_path / "out.csv.run") as s:
        head = next(r for r in read_registry(s) if r.name == "tfidf-head")
    assert head.score.basis == "cross-validation" and head.score.version == head.version and head.score.rows == 60
    assert f"v{head.version} " in res.stdout and "on 60 reviewed rows, cross-validated" in res.stdout
    assert "on 60 reviewed rows, cross-validated" in (tmp_path / "m" / "README.md").read_text()


def test_refuses_a_non_empty_output_unless_forced(tmp_path: Path, checkpoints: dict) -> None:
    run = make_run(tmp_path / "run", checkpoints)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_model(run, out)
    assert os.listdir(out) == ["keep.txt"]
    export_model(run, out, force=True)
    assert "keep.txt" not in os.listdir(out) and (out / "config.json").exists()
    (tmp_path / "empty").mkdir()
    assert export_model(run, tmp_path / "empty").kind == "transformers"  # an empty folder is fine


def test_errors(tmp_path: Path, checkpoints: dict) -> None:
    with pytest.raises(RunStoreError, match="not a run directory"):
        export_model(tmp_path / "nowhere", tmp_path / "out")
    run = make_run(tmp_path / "run", checkpoints)
    with pytest.raises(ExportError, match="no specialist 'nope'.*zeroshot, finetune, tfidf-head"):
        export_model(run, tmp_path / "out", specialist="nope")
    with pytest.raises(ExportError, match="'zeroshot' has no trained checkpoint"):
        export_model(run, tmp_path / "out", specialist="zeroshot")
    with pytest.raises(ExportError, match="outside the run directory"):
        export_model(run, run / "model")
    with RunStore(tmp_path / "bare") as s:  # a run whose trainable specialists were never fitted
        s.set_meta("task", TASK.model_dump(mode="json"))
        s.save_specialists([{"name": "finetune", "spec": {"id": "finetune"}}])
    with pytest.raises(ExportError, match="no trained specialist"):
        export_model(tmp_path / "bare", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path: Path, checkpoints: dict) -> None:
    run = make_run(tmp_path / "run", checkpoints)
    ok = runner.invoke(app, ["export-model", str(run), "--output", str(tmp_path / "m")])
    assert ok.exit_code == 0, ok.output
    assert "wrote finetune v2 (transformers, validation accuracy 85.0% on 10 held-out reviewed rows)" in ok.stdout
    again = runner.invoke(app, ["export-model", str(run), "-o", str(tmp_path / "m"), "--specialist", "tfidf-head"])
    assert again.exit_code == 2
    text = (again.stderr if again.stderr_bytes is not None else again.output).strip()
    assert len(text.splitlines()) == 1 and "not empty" in text and "--force" in text and "Traceback" not in text
    forced = runner.invoke(app, ["export-model", str(run), "-o", str(tmp_path / "m"), "--specialist",
                                 "tfidf-head", "--force"])
    assert forced.exit_code == 0 and (tmp_path / "m" / "head.json").exists()
    assert not (tmp_path / "m" / "config.json").exists()
