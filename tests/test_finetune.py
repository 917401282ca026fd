"""FineTunedClassifier: full fine-tuning and LoRA of a transformers classifier, on a tiny random
BERT built offline (fast) and once on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from labeljury.errors import SpecialistError
from labeljury.specialists.catalog import build_specialist
from labeljury.specialists.finetune import FineTunedClassifier
from labeljury.task import SpecialistSpec, Task
from tests.conftest import make_rows
from tests.tiny_models import make_tiny_bert

LABELS = ["negative", "neutral", "positive"]
# A random 32-wide BERT needs a far higher learning rate than a pretrained one to learn in seconds.
TINY = {"epochs": 10, "lr": 1e-2, "batch_size": 16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def data() -> tuple[list[str], list[str], list[str], list[str]]:
    train, test = make_rows(150, seed=1), make_rows(60, seed=2)
    return list(train.text), list(train.label), list(test.text), list(test.label)


@pytest.fixture(scope="module")
def fitted(tiny: str, data: tuple) -> FineTunedClassifier:
    X, y, _, _ = data
    return FineTunedClassifier(LABELS, model=tiny, **TINY).fit(X, y)


def accuracy(clf: FineTunedClassifier, X: list[str], y: list[str]) -> float:
    return float((clf.classes_[clf.predict_proba(X).argmax(axis=1)] == np.array(y)).mean())


def weights(clf: FineTunedClassifier) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in clf._model.state_dict().items()}


def test_unfitted_abstains_and_follows_the_protocol(tiny: str) -> None:
    clf = FineTunedClassifier(LABELS, model=tiny)
    assert clf.trainable and clf.input_kind == "text" and not clf.is_fitted
    assert list(clf.classes_) == LABELS
    P = clf.predict_proba(["great", "awful"])
    assert P.shape == (2, 3) and P.dtype == np.float32 and np.isnan(P).all()
    assert clf.fit([], []).is_fitted is False  # no rows: still abstains


def test_fit_learns_a_separable_toy_task(data: tuple, fitted: FineTunedClassifier) -> None:
    X, y, Xt, yt = data
    P = fitted.predict_proba(Xt)
    assert P.shape == (len(Xt), 3) and P.dtype == np.float32
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(fitted, Xt, yt) >= 0.8  # chance is 1/3
    assert fitted.history[0]["rows"] == len(X) and fitted.training_rows == len(X)


def test_update_continues_from_the_current_weights(tmp_path: Path, data: tuple,
                                                   fitted: FineTunedClassifier) -> None:
    X, _, Xt, yt = data
    fitted.save(tmp_path / "ckpt")  # what the pipeline does between stages
    clf = FineTunedClassifier.load(tmp_path / "ckpt")
    before = weights(clf)
    clf.epochs, clf.lr = 1, 1e-3  # a gentle stage update on a few new rows
    clf.update(Xt[:12], yt[:12])
    after = weights(clf)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert list(clf.classes_) == LABELS and clf._model.config.id2label == dict(enumerate(LABELS))
    # Restarting from the random base on 12 rows would be near chance; continuing keeps the skill.
    assert accuracy(clf, Xt[12:], yt[12:]) >= 0.8
    assert [h["kind"] for h in clf.history] == ["fit", "update"] and clf.training_rows == len(X) + 12


def test_update_of_an_unfitted_model_fits_it_deterministically(tiny: str, data: tuple,
                                                              fitted: FineTunedClassifier) -> None:
    X, y, Xt, _ = data
    again = FineTunedClassifier(LABELS, model=tiny, **TINY).update(X, y)
    np.testing.assert_array_equal(again.predict_proba(Xt), fitted.predict_proba(Xt))  # same seed, same model
    assert [h["kind"] for h in again.history] == ["fit"]


def test_sample_weights_scale_each_rows_loss(tiny: str, data: tuple, fitted: FineTunedClassifier) -> None:
    """Weight 1 everywhere is the plain fit; rows weighted 0 teach nothing: flipping their labels
    leaves the fit as it was."""
    X, y, Xt, _ = data
    ones = FineTunedClassifier(LABELS, model=tiny, **TINY).fit(X, y, sample_weight=[1.0] * len(X))
    np.testing.assert_allclose(ones.predict_proba(Xt), fitted.predict_proba(Xt), atol=1e-4)
    w = np.ones(len(X))
    w[:50] = 0.0
    flipped = [LABELS[(LABELS.index(v) + 1) % 3] if i < 50 else v for i, v in enumerate(y)]
    a = FineTunedClassifier(LABELS, model=tiny, **TINY).fit(X, y, sample_weight=w).predict_proba(Xt)
    b = FineTunedClassifier(LABELS, model=tiny, **TINY).fit(X, flipped, sample_weight=w).predict_proba(Xt)
    np.testing.assert_allclose(a, b, atol=1e-4)
    c = FineTunedClassifier(LABELS, model=tiny, **TINY).fit(X, flipped).predict_proba(Xt)
    assert np.abs(c - a).max() > 0.05  # unweighted, the flipped labels do change it
    with pytest.raises(SpecialistError, match="sample_weight must be 150 finite weights >= 0"):
        FineTunedClassifier(LABELS, model=tiny, **TINY).fit(X, y, sample_weight=[-1.0] * len(X))


def test_save_load_round_trip_and_plain_transformers(tmp_path: Path, data: tuple,
                                                     fitted: FineTunedClassifier) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, _, Xt, _ = data
    fitted.save(tmp_path / "ckpt")
    loaded = FineTunedClassifier.load(tmp_path / "ckpt")
    P = fitted.predict_proba(Xt)
    np.testing.assert_array_equal(loaded.predict_proba(Xt), P)
    assert loaded.params() == fitted.params() and loaded.history == fitted.history

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert [model.config.id2label[i] for i in range(3)] == LABELS
    with torch.no_grad():
        logits = model(**tokenizer(Xt, padding=True, return_tensors="pt")).logits
    np.testing.assert_array_equal(logits.argmax(dim=1).numpy(), P.argmax(axis=1))
    meta = json.loads((tmp_path / "ckpt" / "labeljury.json").read_text())
    assert meta["class"] == "FineTunedClassifier" and meta["params"]["labels"] == LABELS


def test_unfitted_save_load(tmp_path: Path, tiny: str) -> None:
    FineTunedClassifier(LABELS, model=tiny).save(tmp_path / "empty")
    loaded = FineTunedClassifier.load(tmp_path / "empty")
    assert not loaded.is_fitted and np.isnan(loaded.predict_proba(["great"])).all()


def test_errors_are_one_line_specialist_errors(tmp_path: Path, tiny: str) -> None:
    clf = FineTunedClassifier(LABELS, model=tiny)
    with pytest.raises(SpecialistError, match="not a task label"):
        clf.fit(["great"], ["happy"])
    with pytest.raises(SpecialistError, match="2 texts but 1 labels"):
        clf.fit(["great", "awful"], ["positive"])
    with pytest.raises(SpecialistError, match="single string"):
        clf.predict_proba("great")
    with pytest.raises(SpecialistError, match="could not be loaded"):
        FineTunedClassifier(LABELS, model=str(tmp_path / "missing")).fit(["great"], ["positive"])
    with pytest.raises(SpecialistError, match="at least 2 distinct labels"):
        FineTunedClassifier(["positive"])
    with pytest.raises(SpecialistError, match="does not exist"):
        FineTunedClassifier.load(tmp_path / "nothing")


def test_lora_without_peft_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tiny: str) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` raise ImportError
    with pytest.raises(SpecialistError, match=r"pip install 'labeljury\[lora\]'"):
        FineTunedClassifier(LABELS, model=tiny, lora=True).fit(["great", "awful"], ["positive", "negative"])


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft not installed (pip install 'labeljury[lora]')")
def test_lora_trains_merges_and_saves_a_plain_model(tmp_path: Path, tiny: str, data: tuple) -> None:
    from transformers import AutoModelForSequenceClassification

    X, y, Xt, yt = data
    base = FineTunedClassifier(LABELS, model=tiny, seed=0)
    base._load_base()
    frozen = {k: v for k, v in weights(base).items() if "embeddings" in k}
    clf = FineTunedClassifier(LABELS, model=tiny, lora=True, epochs=20, lr=3e-2, batch_size=16).fit(X, y)
    assert type(clf._model).__name__ == "BertForSequenceClassification"  # merged, no peft wrapper
    assert accuracy(clf, Xt, yt) >= 0.6  # only adapters + head train on a random model: less, but learns
    # LoRA leaves the layers it does not adapt (here the embeddings) exactly as they were.
    after = weights(clf)
    assert all(np.array_equal(frozen[k], after[k]) for k in frozen)
    clf.save(tmp_path / "lora")
    assert not (tmp_path / "lora" / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "lora")
    assert not any("lora" in k for k in plain.state_dict())
    np.testing.assert_array_equal(FineTunedClassifier.load(tmp_path / "lora").predict_proba(Xt), clf.predict_proba(Xt))
    clf.update(Xt[:8], yt[:8])  # a second adapter on top of the merged weights
    assert type(clf._model).__name__ == "BertForSequenceClassification" and len(clf.history) == 2


def test_catalog_builds_it_with_the_task_labels(tiny: str) -> None:
    task = Task(name="toy", labels={"negative": "", "neutral": "", "positive": ""}, seed=7)
    spec = SpecialistSpec(id="finetune", options={"model": tiny, "epochs": 2})
    clf = build_specialist(spec, task, name="ft")
    assert isinstance(clf, FineTunedClassifier)
    assert clf.name == "ft" and list(clf.classes_) == LABELS and clf.epochs == 2 and clf.seed == 7
    with pytest.raises(SpecialistError, match="no option 'epoch'"):
        build_specialist(SpecialistSpec(id="finetune", options={"epoch": 2}), task)


@pytest.mark.slow
def test_real_minilm_fine_tunes_on_a_few_texts(tmp_path: Path) -> None:
    from transformers import AutoConfig

    train, test = make_rows(60, seed=1), make_rows(60, seed=2)
    clf = FineTunedClassifier(LABELS, epochs=1, lr=2e-4, batch_size=8)  # default model: packaged MiniLM
    clf.fit(list(train.text), list(train.label))
    assert clf._model.config.hidden_size == 384  # really all-MiniLM-L6-v2
    assert accuracy(clf, list(test.text), list(test.label)) >= 0.5  # 8 steps from chance (1/3)
    clf.save(tmp_path / "minilm")
    assert AutoConfig.from_pretrained(tmp_path / "minilm").id2label == dict(enumerate(LABELS))


def test_mixed_precision_on_cuda_float32_on_the_cpu(fitted: FineTunedClassifier, monkeypatch) -> None:
    import torch

    from labeljury.specialists import finetune

    assert fitted.history[0]["device"] == "cpu" and fitted.history[0]["precision"] == "float32"
    assert finetune.precision_for("cpu") == "float32"
    for supported, dtype in [(True, torch.bfloat16), (False, torch.float16)]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert finetune.precision_for("cuda:0") == str(dtype).removeprefix("torch.")
        with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
            ctx = finetune._mixed_precision(finetune.precision_for("cuda"))  # no GPU here: torch disables it, with a warning
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == dtype
