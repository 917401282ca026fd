"""The specialists and the vote of a multi-label task: what `specialists:` and `voting:` may name, and runs with
them to the end (the output, the resume, the exported model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
from test_multilabel_run import LABELS, SENTENCES, _indicators, _write, answer_queue, card_label_sets  # noqa: E402

from labeljury import pipeline  # noqa: E402
from labeljury.errors import LabeljuryError, SpecialistError, TaskError  # noqa: E402
from labeljury.labelsets import LabelSets, multilabel_scores  # noqa: E402
from labeljury.multilabel.heads import OwnScoreHead  # noqa: E402
from labeljury.multilabel.specialists import HubScorer, set_specialists  # noqa: E402
from labeljury.multilabel.vote import SetVote, combine  # noqa: E402
from labeljury.store import RunStore  # noqa: E402
from labeljury.task import Task  # noqa: E402


# -- the vote ------------------------------------------------------------------------------------------------------
def test_the_votes_that_learn_nothing_combine_each_label_on_its_own() -> None:
    a = np.array([[0.9, 0.2, 0.6], [0.1, 0.4, np.nan]])
    b = np.array([[0.7, 0.6, 0.3], [0.3, 0.8, np.nan]])
    c = np.array([[0.8, 0.7, 0.2], [0.2, 0.1, 0.9]])
    assert np.allclose(combine([a, b, c], "max"), [[0.9, 0.7, 0.6], [0.3, 0.8, 0.9]])
    assert np.allclose(combine([a, b, c], "soft"), [[0.8, 0.5, 1.1 / 3], [0.2, 1.3 / 3, 0.9]])  # NaN: no opinion
    # majority: the share of specialists putting the label in; where exactly half do, the mean probability
    assert np.allclose(combine([a, b, c], "majority"), [[1.0, 2 / 3, 1 / 3], [0.0, 1 / 3, 1.0]], atol=1e-3)
    assert combine([a, b, c], "majority")[1, 0] > 0  # rows of one share still ordered by the mean probability
    assert np.allclose(combine([a, b], "majority")[0], [1.0, 0.4, 0.45], atol=1e-3)
    assert np.allclose(combine([a], "max")[1], [0.1, 0.4, 0.0])  # a label nobody scores: 0
    with pytest.raises(ValueError, match="unknown vote 'best'"):
        SetVote("best")


def test_dawid_skene_per_label_learns_which_specialist_to_believe_without_reviews() -> None:
    rng = np.random.default_rng(0)
    n, k = 6000, 4
    truth = rng.random((n, k)) < np.array([0.1, 0.3, 0.2, 0.05])

    def specialist(accuracy: float) -> np.ndarray:
        said = np.where(rng.random((n, k)) < accuracy, truth, ~truth)
        return np.clip(np.where(said, 0.8, 0.2) + rng.normal(0, 0.05, (n, k)), 0, 1)

    heads = [specialist(0.95), specialist(0.7), specialist(0.65)]
    ds = SetVote("dawid-skene").fit(heads)
    accuracy = {how: (((SetVote(how).fit(heads)(heads)) >= 0.5) == truth).mean() for how in ("soft", "majority")}
    P = ds(heads)
    assert ((P >= 0.5) == truth).mean() > max(accuracy.values()) + 0.03  # the good specialist is believed
    sens = ds.confusion_[:, :, 1, 1]  # (labels, specialists) P(says in | in)
    assert sens[:, 0].mean() > sens[:, 2].mean() and np.allclose(ds.priors_[:, 1], truth.mean(axis=0), atol=0.06)
    again = SetVote.from_dict(json.loads(json.dumps(ds.to_dict())))
    assert np.allclose(again(heads), P)
    partial = heads[1].copy()
    partial[:, 0] = np.nan  # a specialist that does not score label 0 gives no evidence on it
    lone = SetVote("dawid-skene").fit([heads[0], partial])([heads[0], partial])
    assert ((lone[:, 0] >= 0.5) == (heads[0][:, 0] >= 0.5)).all()
    with pytest.raises(ValueError, match="not fitted"):
        SetVote("dawid-skene")(heads)


def test_the_own_score_head_fits_each_label_on_its_own_score_and_leaves_unscored_labels_out() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(0.3, 0.1, size=(300, 3))
    X[:, 2] = np.nan  # a label this scorer has no score for
    Y = np.stack([X[:, 0] > 0.3, X[:, 1] + rng.normal(0, 0.05, 300) > 0.35, np.zeros(300, bool)], axis=1).astype(int)
    Y[:5, 2] = 1
    head = OwnScoreHead(["a", "b", "c"], C=0.5).fit(X, Y)
    P = head.predict_proba(X[:10])
    for j in range(2):
        z = ((X[:, j] - X[:, j].mean()) / X[:, j].std())[:, None]
        ref = LogisticRegression(C=0.5, max_iter=1000).fit(z, Y[:, j]).predict_proba(z[:10])[:, 1]
        assert np.allclose(P[:, j], ref, atol=1e-6)  # label j reads only its own column
    assert np.isnan(P[:, 2]).all()
    flat = OwnScoreHead(["a", "b", "c"]).fit(X, np.zeros_like(Y))
    assert (flat.predict_proba(X[:3])[:, :2] == 0).all()


# -- what `specialists:` may name ------------------------------------------------------------------------------------
def _task(**over: object) -> Task:
    return Task.model_validate({"name": "news", "labels": LABELS, "multi_label": True,
                                "reviewer": [{"kind": "gold", "column": "labels"}], "review": {"budget": 0.3}, **over})


def _tiny_multi_label_model(folder: Path, id2label: dict[int, str], multi: bool = True) -> Path:
    """A 2-layer BERT sequence classifier with a WordPiece vocabulary of the toy news words, saved offline."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ss in SENTENCES.values() for s in ss for w in s.split()} | {"and", "story", "(", ")"})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=64).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, id2label=id2label,
                        label2id={v: k for k, v in id2label.items()},
                        problem_type="multi_label_classification" if multi else "single_label_classification")
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_what_a_multi_label_task_may_name_and_what_it_refuses_in_one_line(tmp_path: Path) -> None:
    said: list[str] = []
    named = ["vader", "embedding-head", "zeroshot", {"id": "tfidf-head", "options": {"C": 3}}]
    built = set_specialists(_task(specialists=named), said.append)
    assert [s.name for s in built] == ["embedding-head", "zeroshot", "tfidf-head"]
    assert said and "left out vader" in said[0]  # a lexicon gives one label a text: left out, and said so
    assert built[2].make().C == 3 and built[1].prototypes.shape == (len(LABELS), 384)
    assert [s.view for s in set_specialists(_task())] == ["embedding", "tfidf", "zeroshot:zeroshot"]  # auto
    single = _tiny_multi_label_model(tmp_path / "single", {0: "sports", 1: "politics"}, multi=False)
    partial = _tiny_multi_label_model(tmp_path / "partial", {0: "Sports", 1: "POLITICS", 2: "finance"})
    for specialists, error, match in (
            (["vader"], TaskError, "no specialist of this task scores label sets"),
            (["nb-head"], TaskError, "'nb-head' gives one label a text and has no multi-label form yet"),
            ([{"id": "finetune", "options": {"epochs": 0}}], SpecialistError, "finetune options epochs"),
            ([{"id": "finetune", "options": {"colour": 1}}], SpecialistError, "no option 'colour'"),
            ([{"id": "embedding-head", "options": {"C": 0}}], SpecialistError, "C=0 must be a number > 0"),
            ([{"id": "zeroshot", "options": {"temperature": 1}}], SpecialistError, "no option 'temperature'"),
            ([{"id": "zeroshot", "label_map": {"a": "sports"}}], SpecialistError, "remove its label_map"),
            ([str(single)], SpecialistError, "is a single-label model"),
            ([str(partial)], TaskError, "no specialist scores the label\\(s\\) weather, music"),
            (["nobody/nothing-here-xyz"], SpecialistError, "could not be loaded"),
            (["what-is-this"], SpecialistError, "unknown specialist id 'what-is-this' for a multi-label task")):
        with pytest.raises(error, match=match):
            set_specialists(_task(specialists=specialists))
    scorer = next(s.scorer for s in set_specialists(_task(specialists=[str(partial), "embedding-head"]))
                  if s.scorer is not None)
    assert isinstance(scorer, HubScorer) and list(scorer.covers()) == [True, True, False, False]
    logits = scorer(["the striker scored twice", "parliament passed the budget bill"])
    own = scorer.model.scores(["the striker scored twice", "parliament passed the budget bill"])  # sigmoids
    assert np.allclose(logits[:, :2], np.log(own[:, :2] / (1 - own[:, :2])), atol=1e-4)
    assert np.isnan(logits[:, 2:]).all()
    with pytest.raises(Exception, match="`max`.*multi-label"):
        Task.model_validate({"name": "x", "labels": ["a", "b"], "voting": "max"})


# -- runs with them --------------------------------------------------------------------------------------------------
def test_a_run_with_zeroshot_and_a_dawid_skene_vote_labels_sets_and_exports_a_model_that_votes_alike(
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labeljury.cli import app
    from labeljury.multilabel.export import SetModel
    from labeljury.specialists import get_encoder

    data, task, truth = _write(tmp_path, audit=60)
    task = task.model_copy(update={"specialists": _task(specialists=["embedding-head", "zeroshot", "tfidf-head"])
                                   .specialists, "voting": "dawid-skene"})
    out = tmp_path / "out.csv"
    report = pipeline.run(task, data, out, details=True)
    assert report.status == "complete" and report.reviews == report.budget
    df = pd.read_csv(out, keep_default_na=False)
    sets = LabelSets(LABELS)
    got = [sets.parse(a) for a in df.annotation]
    assert all(got)
    scores = multilabel_scores(_indicators(truth), _indicators(got), LABELS)
    assert scores["micro_f1"] > 0.8  # the toy news: three specialists and their vote label it well
    run_dir = pipeline.default_run_dir(out)
    res = CliRunner().invoke(app, ["export-model", str(run_dir), "-o", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    model = SetModel.load(tmp_path / "model")
    assert [h["name"] for h in model.meta["heads"]] == ["embedding-head", "zeroshot", "tfidf-head"]
    assert model.meta["vote"]["how"] == "dawid-skene" and not model.plain
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Dawid-Skene" in card and "SetModel.load" in card and "zeroshot" in card
    texts = df.text.tolist()
    predicted = model.predict(get_encoder().encode(texts), texts)
    voted = [tuple(v.split("|")) for v in df.annotation_vote]
    assert np.mean([p == v for p, v in zip(predicted, voted, strict=True)]) >= 0.98
    with RunStore(run_dir) as store:
        assert store.get_meta("task")["voting"] == "dawid-skene"
    # each specialist alone, on the audit rows no stage picked (out of fold), in `labeljury status`
    from labeljury.status import render, run_status

    info = run_status(run_dir)
    alone = {sp["name"]: sp for sp in info["specialists"]}
    assert list(alone) == ["embedding-head", "zeroshot", "tfidf-head"]
    assert all(0 < sp["micro_f1"] <= 1 and sp["labels"] == len(LABELS) and sp["rows"] >= 30 for sp in alone.values())
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(render(info, run_dir))
    shown = console.export_text()
    assert "specialist zeroshot" in shown and "alone: micro-F1" in shown


def test_a_hub_multi_label_model_is_scored_once_and_a_resumed_run_does_not_score_again(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    from labeljury.multilabel.export import SetModel
    from labeljury.specialists import get_encoder

    hub = _tiny_multi_label_model(tmp_path / "hub", {0: "sports", 1: "politics", 2: "weather", 3: "finance"})
    data, task, truth = _write(tmp_path, n=200, audit=40)
    by_file = [task.reviewer[0].model_copy(update={"kind": "file", "column": None})]
    queued = task.model_copy(update={"specialists": _task(specialists=[str(hub), "embedding-head"]).specialists,
                                     "reviewer": by_file})
    out = tmp_path / "out.csv"
    assert pipeline.run(queued, data, out).status == "waiting"
    run_dir = pipeline.default_run_dir(out)
    with RunStore(run_dir) as store:
        assert store.prediction_chunks(str(hub), 0) == {0}
        stored = store.get_predictions(str(hub), 0, 0)
        assert stored.shape == (200, len(LABELS)) and np.isnan(stored[:, 3]).all() and np.isfinite(stored[:, :3]).all()

    def never(self: HubScorer, texts: list[str]) -> np.ndarray:
        raise AssertionError("scored again")

    monkeypatch.setattr(HubScorer, "__call__", never)
    # the people answer the queue, round by round; the run goes on without scoring the texts again
    report = answer_queue(queued, data, out, truth, details=True)
    assert report.status == "complete"
    monkeypatch.undo()
    model = SetModel.load(run_dir / "checkpoints" / "sets")
    head = model.meta["heads"][0]
    assert head["model"] == str(hub) and head["view"] == f"scores:{hub}"
    df = pd.read_csv(out, keep_default_na=False)
    texts = df.text.tolist()[:40]
    predicted = model.predict(get_encoder().encode(texts), texts)  # loads the hub model again, by its folder
    assert [tuple(v.split("|")) for v in df.annotation_vote[:40]] == predicted


def test_a_task_that_names_no_set_specialist_fails_before_writing(tmp_path: Path) -> None:
    data, task, _ = _write(tmp_path, n=40)
    out = tmp_path / "out.csv"
    with pytest.raises(LabeljuryError, match="no specialist of this task scores label sets"):
        pipeline.run(task.model_copy(update={"specialists": _task(specialists=["profanity"]).specialists}), data, out)
    assert not out.exists() and not pipeline.default_run_dir(out).exists()


def test_the_card_of_a_run_with_a_zero_shot_head_labels_with_numpy_alone_as_the_run_does(tmp_path: Path,
                                                                                         monkeypatch) -> None:

    from typer.testing import CliRunner

    from labeljury.cli import app
    from labeljury.multilabel.export import SetModel
    from labeljury.specialists import get_encoder

    data, task, _ = _write(tmp_path, n=300, audit=60)
    task = task.model_copy(update={"specialists": _task(specialists=["zeroshot", "embedding-head"]).specialists})
    out = tmp_path / "out.csv"
    pipeline.run(task, data, out, details=True)
    res = CliRunner().invoke(app, ["export-model", str(pipeline.default_run_dir(out)), "-o", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    model = SetModel.load(tmp_path / "model")
    assert model.plain and model.meta["tfidf"] is None  # no head reads TF-IDF: none fitted, none saved
    card = (tmp_path / "model" / "README.md").read_text()
    assert "SetModel.load" not in card and "zeroshot" in card

    texts = pd.read_csv(out, keep_default_na=False).text.tolist()[:60]
    from_card = [tuple(s) for s in card_label_sets(card, tmp_path / "model", monkeypatch)(texts)]
    voted = [tuple(v.split("|")) for v in pd.read_csv(out, keep_default_na=False).annotation_vote[:60]]
    assert from_card == model.predict(get_encoder().encode(texts), texts)
    assert np.mean([a == b for a, b in zip(from_card, voted, strict=True)]) >= 0.98


def test_finetune_trains_a_sigmoid_per_label_and_saves_a_multi_label_model(tmp_path: Path) -> None:
    from transformers import AutoConfig

    from labeljury.specialists.finetune import FineTunedClassifier

    base = _tiny_multi_label_model(tmp_path / "base", {0: "x", 1: "y"}, multi=False)
    texts, sets = [], []
    for i in range(48):
        chosen = [LABELS[i % 4]] + ([LABELS[(i + 1) % 4]] if i % 3 == 0 else [])
        texts.append(" and ".join(SENTENCES[c][i % 6] for c in chosen))
        sets.append(chosen)
    Y = _indicators(sets)
    clf = FineTunedClassifier(LABELS, model=str(base), epochs=30, lr=3e-3, batch_size=8, multi_label=True)
    with pytest.raises(SpecialistError, match="0/1 matrix"):
        clf.fit(texts, [s[0] for s in sets])
    P = clf.fit(texts, Y).predict_proba(texts)
    assert P.shape == (48, 4) and not np.allclose(P.sum(axis=1), 1.0)  # each label on its own, no softmax
    assert ((P >= 0.5) == Y).mean() > 0.75  # it learned the words of labels (saying "none" everywhere: 0.67)
    clf.save(tmp_path / "saved")
    assert AutoConfig.from_pretrained(tmp_path / "saved").problem_type == "multi_label_classification"
    again = FineTunedClassifier.load(tmp_path / "saved")
    assert again.multi_label and np.allclose(again.predict_proba(texts[:5]), P[:5], atol=1e-5)


def test_a_run_with_finetune_fits_it_once_a_stage_without_the_audit_and_exports_it(tmp_path: Path) -> None:
    from labeljury.multilabel.export import SetModel
    from labeljury.progress import SilentProgress
    from labeljury.specialists import get_encoder

    class Said(SilentProgress):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def log(self, message: str) -> None:
            self.lines.append(message)

    base = _tiny_multi_label_model(tmp_path / "base", {0: "x", 1: "y"}, multi=False)
    data, task, _ = _write(tmp_path, n=240, audit=60)
    named = [{"id": "finetune", "options": {"model": str(base), "epochs": 2, "batch_size": 16, "lr": 1e-3}},
             "embedding-head"]
    task = task.model_copy(update={"specialists": _task(specialists=named).specialists})
    out = tmp_path / "out.csv"
    said = Said()
    report = pipeline.run(task, data, out, details=True, progress=said)
    assert report.status == "complete"
    fits = [line for line in said.lines if line.startswith("fine-tuning finetune")]
    with RunStore(pipeline.default_run_dir(out)) as s:
        audit = set(s.routed("audit"))
        stages = len(s.stages())
        reviewed = [t for t, r in s.reviews().items() if r.label is not None]
    assert len(fits) == stages + 1  # one fit a stage (serving its five folds) and one for the output
    model = SetModel.load(pipeline.default_run_dir(out) / "checkpoints" / "sets")
    tuned = model.head("finetune")
    assert tuned.history[-1]["rows"] == len([t for t in reviewed if t not in audit])  # the audit left out
    assert model.meta["heads"][0]["kind"] == "finetune" and not model.plain
    df = pd.read_csv(out, keep_default_na=False)
    texts = df.text.tolist()[:40]
    assert model.predict(get_encoder().encode(texts), texts) == [tuple(v.split("|")) for v in df.annotation_vote[:40]]


def test_a_run_keeps_the_auto_specialists_it_began_with(tmp_path: Path) -> None:
    """`auto` grew (zero-shot joined the two heads): a run begun before goes on with the two heads."""
    from labeljury.multilabel.export import SetModel
    from labeljury.multilabel.run import AUTO_META
    from labeljury.multilabel.specialists import AUTO

    data, task, truth = _write(tmp_path, n=200, audit=40)
    queued = task.model_copy(update={"reviewer": [task.reviewer[0].model_copy(update={"kind": "file", "column": None})]})
    out = tmp_path / "out.csv"
    run_dir = pipeline.default_run_dir(out)
    assert pipeline.run(queued, data, out).status == "waiting"
    with RunStore(run_dir) as s:
        assert s.get_meta(AUTO_META) == list(AUTO)
        s.set_meta(AUTO_META, None)  # as a run made before the key existed
    answer_queue(queued, data, out, truth)
    assert [h["name"] for h in SetModel.load(run_dir / "checkpoints" / "sets").meta["heads"]] == ["embedding", "tfidf"]
    fresh = tmp_path / "fresh.csv"
    pipeline.run(task, data, fresh)
    heads = SetModel.load(pipeline.default_run_dir(fresh) / "checkpoints" / "sets").meta["heads"]
    assert [h["name"] for h in heads] == ["embedding", "tfidf", "zeroshot"]


@pytest.mark.parametrize("voting", ["max", "dawid-skene"])
def test_the_run_s_annotate_py_labels_a_csv_as_the_run_s_vote_does(tmp_path: Path, voting: str) -> None:
    """With the default heads and vote, numpy / scikit-learn / sentence-transformers only (labeljury cannot be
    imported); with a Dawid-Skene vote, through labeljury's SetModel."""
    import os
    import subprocess

    data, task, _ = _write(tmp_path, n=240, audit=60)
    out = tmp_path / "out.csv"
    pipeline.run(task.model_copy(update={"voting": voting}) if voting != "max" else task, data, out, details=True)
    script = pipeline.default_run_dir(out) / "annotate.py"
    env = dict(os.environ)
    if voting == "max":
        blocker = tmp_path / "blocker"
        blocker.mkdir()
        (blocker / "labeljury.py").write_text("raise ImportError('annotate.py must not need labeljury')\n")
        env["PYTHONPATH"] = str(blocker)
    again = tmp_path / "again.csv"
    done = subprocess.run([sys.executable, str(script), str(data), str(again)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("SetModel" in script.read_text()) == (voting != "max")
    labeled = pd.read_csv(again, keep_default_na=False)
    voted = pd.read_csv(out, keep_default_na=False)["annotation_vote"]
    assert list(labeled.columns) == ["text", "labels", "annotation"] and len(labeled) == len(voted)
    assert np.mean([a == b for a, b in zip(labeled["annotation"], voted, strict=True)]) >= 0.98
    bad = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "x.csv"), "--text-column", "body"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "has no column 'body'" in bad.stderr and not (tmp_path / "x.csv").exists()
