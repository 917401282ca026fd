"""plan.json and the generated annotate.py: fitted specialists on a toy task, their aggregated vote
in labeljury, and the same rows labeled by the generated script in a subprocess that cannot import
labeljury."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeljury import voting
from labeljury.controller import (
    build_plan,
    read_plan,
    render_annotate_script,
    specialist_entry,
    write_annotate_script,
    write_plan,
)
from labeljury.errors import SpecialistError
from labeljury.specialists import Rows, build_specialist, get_encoder, specialist_names
from labeljury.task import LLMSpec, SpecialistSpec, Task

from .conftest import make_rows

SECRET = "sk-lj-plan-SECRET-77aa88bb99cc"
SPECS = [
    SpecialistSpec(id="vader"),
    SpecialistSpec(id="zeroshot"),
    SpecialistSpec(id="embedding-head", options={"lexicon": True}),
    SpecialistSpec(id="nb-head"),
    SpecialistSpec(id="hybrid-head", options={"lexicon": True}),
]


def _task(voting_method: str) -> Task:
    return Task(name="toy-sentiment", labels={"negative": "the author dislikes something", "neutral": "no opinion",
                                              "positive": "the author likes something"},
                reviewer={"kind": "llm"}, voting=voting_method, review={"budget": 0.2, "policy": "margin"},
                llm=LLMSpec(model="gpt-4o-mini", api_key_env="LJ_PLAN_TEST_KEY"))


def _inputs(model, texts, emb):  # noqa: ANN001, ANN202 - what the pipeline feeds each kind
    kind = model.input_kind
    return emb if kind == "embedding" else Rows(texts, emb) if kind == "text+embedding" else texts


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Specialists fitted on 90 reviewed rows; their votes on 60 other rows (the sample)."""
    run_dir = tmp_path_factory.mktemp("run")
    df = make_rows(150, seed=11)
    texts = df["text"].tolist()
    # the run store keeps embeddings as float16
    emb = get_encoder("minilm").encode(texts).astype(np.float16).astype(np.float32)
    train, sample = slice(0, 90), slice(90, 150)
    y = df["label"].tolist()[train]
    task = _task("soft")
    models, checkpoints = [], {}
    for spec, name in zip(SPECS, specialist_names(SPECS), strict=True):
        model = build_specialist(spec, task, name=name)
        if model.trainable:
            model.fit(_inputs(model, texts[train], emb[train]), y)
            checkpoints[name] = run_dir / "checkpoints" / f"{name}-v1"
            model.save(checkpoints[name])
        models.append((name, spec, model))
    P = np.stack([np.asarray(m.predict_proba(_inputs(m, texts[sample], emb[sample])), dtype=np.float32)
                  for _, _, m in models], axis=1)
    known_P = np.stack([np.asarray(m.predict_proba(_inputs(m, texts[train], emb[train])), dtype=np.float32)
                        for _, _, m in models], axis=1)
    known = np.array([task.label_names.index(v) for v in y])
    return {"run_dir": run_dir, "df": df.iloc[sample].reset_index(drop=True), "models": models,
            "checkpoints": checkpoints, "P": P, "weights": _weights(known_P, known, len(task.label_names))}


def _weights(P: np.ndarray, known: np.ndarray, k: int) -> np.ndarray:
    votes = voting.hard_votes(P)
    seen = (votes >= 0).sum(axis=0)
    acc = (votes == known[:, None]).sum(axis=0) / np.maximum(seen, 1)
    return voting.log_odds_weights(acc, seen, k)


def _plan(fitted, voting_method: str, vote):  # noqa: ANN001, ANN202
    task = _task(voting_method)
    entries = [specialist_entry(name, spec, model, run_dir=fitted["run_dir"], checkpoint=fitted["checkpoints"].get(name),
                                validation_accuracy=0.7)
               for name, spec, model in fitted["models"]]
    return task, build_plan(task, entries, vote, selection={"vader": "A sentiment lexicon."})


def _run_script(run_dir: Path, sample: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    blocker = tmp_path / "blocker" / "labeljury"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('annotate.py must not need labeljury')\n")
    sample.to_csv(tmp_path / "sample.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "LJ_PLAN_TEST_KEY": SECRET}
    proc = subprocess.run([sys.executable, str(run_dir / "annotate.py"), str(tmp_path / "sample.csv"),
                           str(tmp_path / "labeled.csv"), "--details"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "labeled 60 of 61 rows" in proc.stdout
    return pd.read_csv(tmp_path / "labeled.csv", keep_default_na=False)


@pytest.mark.parametrize("voting_method", ["soft", "dawid-skene", "majority"])
def test_generated_script_reproduces_the_aggregated_votes(fitted, tmp_path, monkeypatch, voting_method):
    monkeypatch.setenv("LJ_PLAN_TEST_KEY", SECRET)
    P = fitted["P"]
    vote = {"soft": lambda: voting.soft(P, weights=fitted["weights"]),
            "dawid-skene": lambda: voting.dawid_skene(P),
            "majority": lambda: voting.majority(P)}[voting_method]()
    task, plan = _plan(fitted, voting_method, vote)
    run_dir = fitted["run_dir"]
    write_plan(run_dir, plan)
    script = write_annotate_script(run_dir, plan)
    assert read_plan(run_dir) == plan
    sample = fitted["df"].copy()
    sample.loc[len(sample)] = {"id": "empty", "text": "   ", "label": "neutral"}  # skipped, as the pipeline does
    out = _run_script(run_dir, sample, tmp_path)

    labels = task.label_names
    expected = [labels[i] if i >= 0 else "" for i in vote.label]
    assert out["annotation"].tolist()[:60] == expected
    assert np.allclose(out["annotation_confidence"][:60].astype(float), vote.confidence, atol=1e-5)
    names = [name for name, _, _ in fitted["models"]]
    votes = voting.hard_votes(P)
    for r, cell in enumerate(out["annotation_votes"][:60]):
        assert json.loads(cell) == {n: labels[votes[r, j]] if votes[r, j] >= 0 else None for j, n in enumerate(names)}
    from labeljury.routing import hardness

    assert np.allclose(out["annotation_hardness"][:60].astype(float), hardness(vote, P, "margin"), atol=1e-5)
    assert out.loc[60, "annotation_source"] == "skipped:empty" and out.loc[60, "annotation"] == ""
    assert set(out["annotation_source"][:60]) <= {"vote", "consensus"}
    for text in (script.read_text(), (run_dir / "plan.json").read_text()):
        assert SECRET not in text and "LJ_PLAN_TEST_KEY" not in text


def test_plan_json_holds_the_fitted_parameters(fitted):
    P = fitted["P"]
    _, ds = _plan(fitted, "dawid-skene", voting.dawid_skene(P))
    assert np.asarray(ds.voting.confusion).shape == (5, 3, 3) and len(ds.voting.priors) == 3
    _, soft = _plan(fitted, "soft", voting.soft(P, weights=fitted["weights"]))
    assert soft.voting.weights == pytest.approx(list(fitted["weights"]))
    by_name = {s.name: s for s in soft.specialists}
    assert by_name["vader"].kind == "vader" and by_name["vader"].label_map == {
        "negative": "negative", "neutral": "neutral", "positive": "positive"}
    assert by_name["hybrid-head"].checkpoint == "checkpoints/hybrid-head-v1"  # relative to the run directory
    assert by_name["hybrid-head"].input_kind == "text+embedding" and by_name["zeroshot"].input_kind == "embedding"
    assert np.asarray(by_name["zeroshot"].params["prototypes"]).shape == (3, 384)
    assert soft.encoder == "minilm" and soft.llm_model == "gpt-4o-mini" and soft.selection == {"vader": "A sentiment lexicon."}


def test_plan_refuses_what_it_cannot_reproduce(fitted):
    name, spec, head = next(m for m in fitted["models"] if m[2].trainable)
    with pytest.raises(SpecialistError, match="checkpoint"):
        specialist_entry(name, spec, head, run_dir=fitted["run_dir"])
    with pytest.raises(SpecialistError, match="Dawid-Skene"):
        _plan(fitted, "dawid-skene", None)
    with pytest.raises(SpecialistError, match="weights for"):
        task = _task("soft")
        entry = specialist_entry(name, spec, head, run_dir=fitted["run_dir"], checkpoint=fitted["checkpoints"][name])
        build_plan(task, [entry], voting.soft(fitted["P"]))


def test_task_text_cannot_inject_code(fitted):
    evil = '"""\nimport os; os.system("echo pwned")\n"""'
    task = Task(name=evil, labels={"a": evil, "b": "x'''y"}, reviewer={"kind": "file"})
    name, spec, model = fitted["models"][0]
    entry = specialist_entry(name, spec, model, run_dir=fitted["run_dir"])
    plan = build_plan(task, [entry], None)
    source = render_annotate_script(plan)
    import ast

    tree = ast.parse(source)
    assert not any(isinstance(node, ast.Attribute) and node.attr == "system" for node in ast.walk(tree))
    assert any(isinstance(node, ast.Constant) and isinstance(node.value, str) and "os.system" in node.value
               for node in ast.walk(tree))  # the text is there, as data
    namespace: dict = {"__name__": "not_main", "__file__": str(fitted["run_dir"] / "annotate.py")}
    exec(compile(source, "annotate.py", "exec"), namespace)  # defines functions only; nothing runs
    assert namespace["PLAN"]["task"]["name"] == evil and namespace["LABELS"] == ["a", "b"]
