"""The multi-label run (`labeljury.multilabel`): label sets end to end with the real encoder, run store and
reviewers; its heads, vote and estimate on their own."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from labeljury import pipeline
from labeljury.errors import LabeljuryError, ReviewError, TaskError
from labeljury.labelsets import LabelSets, multilabel_scores
from labeljury.multilabel import OneVsRestHead, SetAnnotator, plan_sets, trust, vote
from labeljury.review.base import ReviewItem, ReviewResult
from labeljury.review.gold import GoldReviewer
from labeljury.store import RunStore
from labeljury.task import SpecialistSpec, Task

LABELS = ["sports", "politics", "weather", "music"]
SENTENCES = {
    "sports": ["the striker scored twice in the derby", "our team won the championship final",
               "the coach praised the defence after the match", "a late goal sealed the league title",
               "the tennis star reached the semifinal", "fans cheered as the runner broke the record"],
    "politics": ["parliament passed the budget bill", "the senator announced her campaign",
                 "voters head to the polls next week", "the minister resigned after the scandal",
                 "the president signed the new law", "the opposition party demanded an inquiry"],
    "weather": ["heavy rain is expected tomorrow", "a storm warning covers the coast",
                "temperatures will drop below freezing", "sunny skies and a light breeze today",
                "the forecast calls for snow overnight", "a heatwave grips the region"],
    "music": ["the band released a new album", "the concert sold out in minutes",
              "the singer won a grammy award", "the orchestra played a symphony",
              "the guitarist announced a world tour", "fans streamed the hit single"],
}


def _sets_data(n: int, seed: int = 0) -> tuple[list[str], list[tuple[str, ...]]]:
    rng = np.random.default_rng(seed)
    texts, sets = [], []
    for i in range(n):
        k = 1 if rng.random() < 0.6 else 2
        chosen = sorted(rng.choice(len(LABELS), k, replace=False).tolist())
        parts = [SENTENCES[LABELS[j]][rng.integers(6)] for j in chosen]
        rng.shuffle(parts)
        texts.append(" and ".join(parts) + f" (story {i})")
        sets.append(tuple(LABELS[j] for j in chosen))
    return texts, sets


def _write(tmp_path: Path, n: int = 400, **review: object) -> tuple[Path, Task, list[tuple[str, ...]]]:
    texts, sets = _sets_data(n)
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": texts, "labels": ["|".join(s) for s in sets]}).to_csv(data, index=False)
    task = Task.model_validate({"name": "news", "labels": LABELS, "multi_label": True,
                                "reviewer": [{"kind": "gold", "column": "labels"}],
                                "review": {"budget": 0.3, **review}})
    return data, task, sets


def _indicators(sets: Sequence[Sequence[str]]) -> np.ndarray:
    Y = np.zeros((len(sets), len(LABELS)), np.int8)
    for i, s in enumerate(sets):
        for name in s:
            Y[i, LABELS.index(name)] = 1
    return Y


def card_label_sets(card: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The `label_sets` of a model card's code, run as a user would: only the hub is out of reach here, so
    SentenceTransformer is the encoder labeljury loads from its package."""
    import types

    from labeljury.specialists import get_encoder

    class Encoder:
        def __init__(self, name: str) -> None:
            assert name == "sentence-transformers/all-MiniLM-L6-v2"

        def encode(self, texts: list[str], normalize_embeddings: bool = False) -> np.ndarray:
            assert normalize_embeddings
            return get_encoder().encode(texts)

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=Encoder))
    code = card.split("```python\n")[1].split("```")[0].replace(repr("model"), repr(str(folder)))
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - the card's own example
    return namespace["label_sets"]


def answer_queue(task: Task, data: Path, out: Path, truth: Sequence[Sequence[str]], **run: Any) -> Any:
    """Run `task` with a file reviewer to the end, each round's queue answered with the true sets."""
    queue = pipeline.default_run_dir(out) / "review_queue.jsonl"
    report = pipeline.run(task, data, out, **run)
    while report.status == "waiting":
        lines = [json.loads(x) for x in queue.read_text().splitlines()]
        for x in lines:
            x["label"] = list(truth[x["row"]])
        queue.write_text("".join(json.dumps(x) + "\n" for x in lines))
        report = pipeline.run(task, data, out, **run)
    return report


def test_a_gold_run_labels_every_row_with_a_set_and_estimates_its_micro_f1_honestly(tmp_path: Path) -> None:
    data, task, truth = _write(tmp_path, audit=60)  # audit rows a stage finds hard leave the estimate: 60 keep 30+
    out = tmp_path / "out.csv"
    report = pipeline.run(task, data, out, details=True)
    assert report.status == "complete" and report.reviews == report.budget == 120
    df = pd.read_csv(out, keep_default_na=False)
    sets = LabelSets(LABELS)
    got = [sets.parse(v) for v in df["annotation"]]
    assert all(g for g in got)  # every row a non-empty set (no allow_empty), in the task's order
    assert all(list(g) == sorted(g, key=LABELS.index) for g in got)
    reviewed = df["annotation_source"].eq("reviewed:gold").to_numpy()
    assert reviewed.sum() == 120 and set(df["annotation_source"]) == {"reviewed:gold", "vote"}
    assert [got[i] for i in np.flatnonzero(reviewed)] == [truth[i] for i in np.flatnonzero(reviewed)]
    scores = multilabel_scores(_indicators(truth), _indicators(got), LABELS)
    assert scores["micro_f1"] > 0.9, scores  # four well separated topics: the heads learn them
    with RunStore(pipeline.default_run_dir(out)) as s:
        est = {e["metric"]: e for e in s.get_meta("set_estimate")["estimates"]}
    f1 = est["micro_f1"]
    assert f1["low"] <= scores["micro_f1"] <= f1["high"], (f1, scores["micro_f1"])
    assert f1["reviewed_rows"] == 120 and f1["unreviewed_rows"] == 280 and f1["audit_rows"] >= trust.MIN_AUDIT
    exact = est["exact_set_accuracy"]
    assert exact["low"] <= scores["exact_set_accuracy"] <= exact["high"]
    # --details: each label's calibrated probability; the row's confidence is the chance the whole set is right
    per = [json.loads(v) for v in df["annotation_votes"]]
    assert all(set(p) <= set(LABELS) and all(0 <= x <= 1 for x in p.values()) for p in per)
    conf = df["annotation_confidence"].to_numpy()
    assert ((conf >= 0) & (conf <= 1)).all() and (conf[reviewed] == 1.0).all()


def test_jsonl_output_holds_lists_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    data, task, _ = _write(tmp_path, n=200)
    out = tmp_path / "out.jsonl"
    pipeline.run(task, data, out)
    first = pd.read_json(out, lines=True)
    assert all(isinstance(v, list) and v for v in first["annotation"])
    pipeline.run(task, data, out)  # everything done: the same output again
    assert pd.read_json(out, lines=True).equals(first)


class _Interrupted(Exception):
    pass


class _StopsAfter:
    """The gold reviewer, killed after `n` answers (as a crash would)."""

    kind = "gold"

    def __init__(self, gold: GoldReviewer, n: int):
        self.gold, self.n = gold, n

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        for r in self.gold.review(items):
            if self.n == 0:
                raise _Interrupted
            self.n -= 1
            yield r


def test_a_run_killed_mid_review_resumes_to_the_same_labels(tmp_path: Path) -> None:
    data, task, _ = _write(tmp_path, n=300)
    whole = tmp_path / "whole.csv"
    pipeline.run(task, data, whole)
    out = tmp_path / "out.csv"
    gold = GoldReviewer(data, "labels", LABELS, task.label_sets)
    for n in (50, 25):  # killed in the first sample, then in a stage
        with pytest.raises(_Interrupted):
            pipeline.run(task, data, out, reviewer=_StopsAfter(gold, n))
    report = pipeline.run(task, data, out)
    assert report.status == "complete" and report.reviews == 90  # no review asked twice
    assert pd.read_csv(out)["annotation"].tolist() == pd.read_csv(whole)["annotation"].tolist()


def test_the_file_queue_takes_lists_and_refuses_an_unknown_name_with_its_line(tmp_path: Path) -> None:
    data, task, truth = _write(tmp_path, n=300)
    task = task.model_copy(update={"reviewer": [task.reviewer[0].model_copy(update={"kind": "file", "column": None})],
                                   "review": task.review.model_copy(update={"budget": 80, "audit": 30})})
    out = tmp_path / "out.csv"
    queue = pipeline.default_run_dir(out) / "review_queue.jsonl"
    report = pipeline.run(task, data, out)
    assert report.status == "waiting" and report.pending == 40 and report.queue == queue  # the audit + the first sample
    lines = [json.loads(x) for x in queue.read_text().splitlines()]
    lines[0]["label"] = ["sports", "dancing"]
    queue.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(ReviewError, match=r"line 1: label \['sports', 'dancing'\]: 'dancing' is not a task label"):
        pipeline.run(task, data, out)
    rounds = 0
    while report.status == "waiting":
        lines = [json.loads(x) for x in queue.read_text().splitlines()]
        assert all(x["suggestion"] is None or isinstance(x["suggestion"], list) for x in lines)
        for x in lines:  # a list, or the names joined by the separator
            x["label"] = list(truth[x["row"]]) if x["id"] % 2 else "|".join(truth[x["row"]])
        queue.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        report = pipeline.run(task, data, out)
        rounds += 1
    assert rounds == 2 and report.reviews == 80
    df = pd.read_csv(out)
    answered = df["annotation_source"].eq("reviewed:file").to_numpy()
    assert answered.sum() == 80
    assert [tuple(v.split("|")) for v in df["annotation"][answered]] == [truth[i] for i in np.flatnonzero(answered)]


def test_a_gold_set_with_an_unknown_name_leaves_its_row_to_the_vote_and_says_why(tmp_path: Path) -> None:
    data, task, _ = _write(tmp_path, n=200)
    df = pd.read_csv(data)
    df.loc[:, "labels"] = "sports|dancing"  # every gold value is wrong: the first reviewed rows say so
    df.to_csv(data, index=False)
    out = tmp_path / "out.csv"
    report = pipeline.run(task, data, out)
    assert report.status == "complete"
    got = pd.read_csv(out)
    assert set(got["annotation_source"]) == {"queued:gold-label-unknown", "skipped:no-vote"}
    with RunStore(pipeline.default_run_dir(out)) as s:
        reasons = {r.reason for r in s.reviews().values()}
        assert "no reviewed row" in s.get_meta("set_estimate")["why"]
    assert reasons == {"gold value 'sports|dancing': 'dancing' is not a task label (labels: sports, politics, weather, "
                       "music); fix the name or add the label"}


def test_a_multi_label_run_refuses_what_it_cannot_do_before_writing(tmp_path: Path) -> None:
    data, task, _ = _write(tmp_path, n=50)
    out = tmp_path / "out.csv"
    with pytest.raises(TaskError, match="nb-head.*no multi-label form yet"):
        pipeline.run(task.model_copy(update={"specialists": [SpecialistSpec(id="nb-head")]}), data, out)
    with pytest.raises(LabeljuryError, match="is not a run directory"):
        pipeline.run(task, data, out, from_run=tmp_path)
    assert not out.exists() and not pipeline.default_run_dir(out).exists()
    with pytest.raises(TaskError, match="single-label"):
        SetAnnotator(task.model_copy(update={"multi_label": False}), data, tmp_path / "r")


# -- the parts ------------------------------------------------------------------------------------------------------
def test_the_one_vs_rest_head_is_one_logistic_regression_a_label_and_a_constant_for_an_unseen_one() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    Y = np.stack([(X[:, 0] > 0), (X[:, 1] + X[:, 2] > 0.5), np.zeros(200, bool)], axis=1).astype(np.int8)
    head = OneVsRestHead(["a", "b", "c"], C=0.7).fit(X, Y)
    P = head.predict_proba(X[:20])
    for j in range(2):
        ref = LogisticRegression(max_iter=1000, C=0.7).fit(X, Y[:, j]).predict_proba(X[:20])[:, 1]
        assert np.allclose(P[:, j], ref, atol=1e-6)
    assert (P[:, 2] == 0).all() and list(head.classes_) == ["a", "b", "c"]


def test_the_vote_takes_each_labels_larger_probability_and_never_leaves_a_set_empty_unless_allowed() -> None:
    a = np.array([[0.9, 0.2, 0.1], [0.3, 0.4, 0.2]])
    b = np.array([[0.1, 0.6, 0.1], [0.2, 0.1, 0.45]])
    P = vote.combine([a, b])
    assert np.allclose(P, [[0.9, 0.6, 0.1], [0.3, 0.4, 0.45]])
    assert vote.decide(P, allow_empty=False).tolist() == [[1, 1, 0], [0, 0, 1]]
    assert vote.decide(P, allow_empty=True).tolist() == [[1, 1, 0], [0, 0, 0]]
    assert np.allclose(vote.set_probability(P, vote.decide(P, False)), [0.9 * 0.6 * 0.9, 0.7 * 0.6 * 0.45])
    assert np.allclose(vote.hardness(P), [0.1 + 0.4 + 0.1, 0.3 + 0.4 + 0.45])


def _coverage(T: np.ndarray, S: np.ndarray, P: np.ndarray, proxies: bool, draws: int = 300) -> float:  # noqa: N803
    """How often the 95% interval covers the output's true micro-F1: 150 rows reviewed (right), a uniform
    audit of 120 of the others, the rest labeled `S`."""
    rng = np.random.default_rng(1)
    n = len(T)
    reviewed = np.zeros(n, bool)
    reviewed[:150] = True
    covered = 0
    for _ in range(draws):
        pool = np.flatnonzero(~reviewed)
        audit = rng.choice(pool, 120, replace=False)
        rest = np.setdiff1d(pool, audit)
        out = np.where(np.isin(np.arange(n), rest)[:, None], S, T)
        tp, fp, fn = (out & T).sum(), ((1 - T) & out).sum(), (T & (1 - out)).sum()
        truth = 2 * tp / (2 * tp + fp + fn)
        known = np.concatenate([np.flatnonzero(reviewed), audit])
        rest_proxy = trust.proxy_counts(P[rest], S[rest], np.ones(len(rest))).sum(0)
        f1 = trust.estimate(T[audit], S[audit], P[audit] if proxies else None, np.ones(len(audit)),
                            T[known].sum(axis=1), np.ones(len(known)), len(rest), len(rest),
                            rest_proxy if proxies else None)[0]
        covered += f1.low <= truth <= f1.high
    return covered / draws


def test_the_interval_covers_the_micro_f1_of_the_rows_left_to_the_vote() -> None:
    """The 95% interval covers the output's true micro-F1 in about 95 of 100 draws (both chances counted:
    which rows the audit drew, and the rows left to the vote), with or without the proxies."""
    rng = np.random.default_rng(1)
    n, k = 1200, 6
    T = (rng.random((n, k)) < 0.2).astype(np.int8)  # noqa: N806
    S = np.where(rng.random((n, k)) < 0.12, 1 - T, T).astype(np.int8)  # noqa: N806
    P = np.clip(np.where(S == 1, 0.8, 0.15) + rng.normal(0, 0.05, (n, k)), 0.01, 0.99)  # noqa: N806
    assert _coverage(T, S, P, proxies=False) >= 0.91
    assert _coverage(T, S, P, proxies=True) >= 0.91


def test_a_few_texts_with_many_labels_do_not_make_the_interval_miss() -> None:
    """Reuters' shape, exaggerated: 1% of the texts carry 20 labels and the vote finds one of them. A 120-row
    audit often draws none of them, and the audit's plain counts then say too high a micro-F1; the
    probabilities know those texts are uncertain (if not how much), and with them as proxies the interval
    covers nearly as often as it should."""
    rng = np.random.default_rng(2)
    n, k = 3000, 40
    T = np.zeros((n, k), np.int8)  # noqa: N806
    S = np.zeros((n, k), np.int8)  # noqa: N806
    P = np.full((n, k), 0.01)  # noqa: N806
    heavy = rng.random(n) < 0.01
    for i in range(n):
        if heavy[i]:
            labels = rng.choice(k, 20, replace=False)
            T[i, labels], S[i, labels[0]] = 1, 1
            P[i, labels] = 0.5
            P[i, labels[0]] = 0.7
        else:
            true = rng.integers(k)
            T[i, true] = 1
            said = true if rng.random() < 0.85 else rng.integers(k)
            S[i, said] = 1
            P[i, said] = 0.85
    assert _coverage(T, S, P, proxies=False) < 0.86  # the plain audit misses: what the proxies fix (0.82)
    assert _coverage(T, S, P, proxies=True) >= 0.89  # 0.91


def test_the_plan_keeps_within_the_budget_and_drops_an_audit_too_small_to_measure() -> None:
    task = Task.model_validate({"name": "n", "labels": LABELS, "multi_label": True, "review": {"budget": 0.2}})
    plan = plan_sets(task, n_rows=5000, n_texts=5000)
    assert plan.audit + plan.bootstrap + sum(plan.stages) == plan.total == 1000
    assert plan.audit == 333 and len(plan.stages) == 8
    small = plan_sets(task.model_copy(update={"review": task.review.model_copy(update={"budget": 60})}), 5000, 5000)
    assert small.audit == 0 and small.bootstrap + sum(small.stages) == 60


# -- an LLM answers with sets ---------------------------------------------------------------------------------------
def _llm_task(base_url: str, **extra: object) -> Task:
    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fakes import make_spec

    return Task.model_validate({"name": "news", "labels": LABELS, "multi_label": True, "reviewer": [{"kind": "llm"}],
                                "llm": make_spec(base_url).model_dump(), **extra})


def test_the_llm_reviewer_answers_with_a_validated_set_and_sees_the_scores() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fakes import FakeLLMServer

    from labeljury.llm import LLMClient
    from labeljury.review.llm import LLMReviewer

    items = [ReviewItem(key=i, text=f"story {i}: the band played at the election rally", row=i,
                        vote="politics|music", confidence=0.31, prior=[0.02, 0.6, 0.01, 0.55]) for i in range(6)]
    for batch in (1, 3):
        with FakeLLMServer() as server:
            task = _llm_task(server.base_url)
            client = LLMClient(task.llm.model_copy(update={"batch_size": batch}))
            try:
                results = list(LLMReviewer(task, client).review(items))
            finally:
                client.close()
            system = server.bodies[0]["messages"][0]["content"]
            user = server.bodies[0]["messages"][-1]["content"]
        assert sorted(r.key for r in results) == list(range(6))
        for r in results:
            assert r.source == "reviewed:llm" and r.label is not None and 0 <= r.confidence <= 1
            assert task.label_sets.parse(r.label)  # stored as the task's set text
        assert "A text may carry several of these labels; every text carries at least one" in system
        assert "Specialist scores: politics 0.60; music 0.55" in user and "Combined vote: politics|music (0.31)" in user
    schema = LLMReviewer(task, LLMClient(task.llm))._single.model_json_schema()
    assert schema["properties"]["labels"]["minItems"] == 1
    assert schema["properties"]["labels"]["items"]["enum"] == LABELS


def test_a_run_reviewed_by_an_llm_says_its_estimate_is_agreement_with_the_llm(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fakes import FakeLLMServer

    from labeljury.status import run_status

    data, _, _ = _write(tmp_path, n=200)
    out = tmp_path / "out.csv"
    with FakeLLMServer() as server:
        task = _llm_task(server.base_url, review={"budget": 0.5, "audit": 50})
        report = pipeline.run(task, data, out)
        asked = server.counts["ok"]
    assert report.status == "complete" and report.reviews == 100 and asked >= 100
    assert pd.read_csv(out)["annotation_source"].eq("reviewed:llm").sum() == 100
    info = run_status(pipeline.default_run_dir(out))
    assert info["kind"] == "multi-label" and info["estimates"], info["no_estimate"]
    assert "agreement with the LLM, not accuracy" in \
        info["measured_against"]


def test_an_audit_row_is_scored_by_heads_that_never_learned_from_it(tmp_path: Path) -> None:
    from labeljury.multilabel.run import FOLDS
    from labeljury.multilabel.views import Views
    from labeljury.multilabel.specialists import set_specialists

    data, task, _ = _write(tmp_path, n=300, audit=60)
    out = tmp_path / "out.csv"
    pipeline.run(task, data, out)
    annotator = SetAnnotator(task, data, pipeline.default_run_dir(out))
    with RunStore(pipeline.default_run_dir(out)) as s:
        views = Views(s, task.seed, set_specialists(task))
        annotator.specialists = set_specialists(task)
        folds = annotator._audit_folds(s)
        assert sorted(folds) == sorted(s.routed("audit")) and set(folds.values()) == set(range(FOLDS))
        assert annotator._audit_folds(s) == folds  # fixed for the run: every stage splits the audit alike
        rows = sorted(annotator._measuring(s))[:6]
        crossed = annotator._cross_fitted(s, views, rows)
        full = annotator._fit(s, views)(views.of(rows))
        for i, t in enumerate(rows):
            part = [u for u, f in folds.items() if f == folds[t]]
            alone = annotator._fit(s, views, leave_out=part)(views.of([t]))[0]
            assert np.allclose(crossed[i], alone)  # the heads without its part of the audit
            train_ids, _ = annotator._train_rows(s)
            assert t in train_ids  # ... while the output's heads learn from it
        assert not np.allclose(crossed, full)


def test_the_commands_around_a_multi_label_run_score_export_or_refuse_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labeljury.cli import app

    data, task, truth = _write(tmp_path, n=200)
    out = tmp_path / "out.csv"
    pipeline.run(task, data, out)
    runner = CliRunner()
    run_dir = str(pipeline.default_run_dir(out))
    scored = runner.invoke(app, ["eval", str(out), "--gold-column", "labels", "--json"])
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.output[scored.output.index("{"):])
    got = [tuple(v.split("|")) for v in pd.read_csv(out)["annotation"]]
    expected = multilabel_scores(_indicators(truth), _indicators(got), LABELS)
    assert report["micro_f1"] == pytest.approx(expected["micro_f1"])  # sets, without --multi-label
    again = tmp_path / "again.parquet"
    assert runner.invoke(app, ["export", run_dir, "-o", str(again)]).exit_code == 0
    assert [list(v) for v in pd.read_parquet(again)["annotation"]] == [list(g) for g in got]
    for args, said in ((["report", run_dir, "-o", str(tmp_path / "r.html"), "--gold-column", "nope"], "'nope' is not"),
                       (["export-model", run_dir, "-o", str(tmp_path / "model"), "--specialist", "tfidf-head"],
                        "leave out --specialist")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "model").exists()


def test_the_report_of_a_multi_label_run_draws_its_estimates_and_each_label_in_a_browser(tmp_path: Path) -> None:
    from labeljury.report import write_report

    from .conftest import CHROMIUM, require
    from .test_report import _assert_nothing_empty, _look

    require(Path(CHROMIUM).exists(), "Debian's chromium")
    data, task, truth = _write(tmp_path, audit=60)
    out = tmp_path / "out.csv"
    pipeline.run(task, data, out)
    plots, text = _look(write_report(pipeline.default_run_dir(out), tmp_path / "r.html", gold_column="labels"))
    assert {p["id"] for p in plots} == {"estimate", "labels", "label_f1", "reliability", "spend", "sources"}
    _assert_nothing_empty(plots)
    got = [tuple(v.split("|")) for v in pd.read_csv(out)["annotation"]]
    expected = multilabel_scores(_indicators(truth), _indicators(got), LABELS)
    assert f"true micro-F1 {expected['micro_f1']:.3f}" in text and "Estimated micro-F1" in text
    labels_plot = next(p for p in plots if p["id"] == "labels")
    assert set(LABELS) <= set(labels_plot["ticks"])  # every label on the axis
    plain, _ = _look(write_report(pipeline.default_run_dir(out), tmp_path / "plain.html"))  # no gold: no truth charts
    assert {p["id"] for p in plain} == {"estimate", "labels", "spend", "sources"}


def test_export_model_writes_the_run_s_heads_and_a_card_whose_code_labels_like_the_run(tmp_path: Path,
                                                                                      monkeypatch) -> None:

    from typer.testing import CliRunner

    from labeljury.cli import app
    from labeljury.multilabel.export import SetModel
    from labeljury.specialists import get_encoder

    data, task, truth = _write(tmp_path, audit=60)
    out = tmp_path / "out.csv"
    run_dir = pipeline.default_run_dir(out)
    runner = CliRunner()
    waiting = tmp_path / "waiting"  # a run that has not finished has no model yet
    waiting.mkdir()
    queued = task.model_copy(update={"reviewer": [task.reviewer[0].model_copy(update={"kind": "file", "column": None})]})
    pipeline.run(queued, data, waiting / "out.csv")
    early = runner.invoke(app, ["export-model", str(waiting / "out.csv.run"), "-o", str(tmp_path / "m0")])
    assert early.exit_code == 2 and "no model yet" in early.output and not (tmp_path / "m0").exists()

    pipeline.run(task, data, out, details=True)
    res = runner.invoke(app, ["export-model", str(run_dir), "-o", str(tmp_path / "model")])
    assert res.exit_code == 0 and "micro-F1" in res.output, res.output
    model = SetModel.load(tmp_path / "model")
    assert model.labels == LABELS and json.loads((tmp_path / "model" / "labels.json").read_text())[1]["label"] == LABELS[1]
    score = model.meta["score"]
    assert score["rows"] >= 30 and 0 < score["micro_f1"] <= 1
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"micro-F1 {score['micro_f1']:.3f}" in card and "out of fold" in card
    df = pd.read_csv(out, keep_default_na=False)
    texts = df.text.tolist()
    embeddings = get_encoder().encode(texts)
    voted = [tuple(v.split("|")) for v in df.annotation_vote]
    predicted = model.predict(embeddings, texts)
    assert np.mean([p == v for p, v in zip(predicted, voted)]) >= 0.98  # the run's own vote, from the folder alone

    from_card = card_label_sets(card, tmp_path / "model", monkeypatch)(texts[:50])  # the card's code, as a user runs it
    assert [tuple(s) for s in from_card] == predicted[:50]


def test_texts_without_a_word_of_two_letters_are_labeled_not_a_crash(tmp_path: Path) -> None:
    """TF-IDF of words finds no vocabulary in texts like "a", "b": the view falls back to characters."""
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": list("abcdefgh"), "labels": ["sports", "music", "sports|music", "weather"] * 2}).to_csv(
        data, index=False)
    task = Task.model_validate({"name": "news", "labels": LABELS, "multi_label": True,
                                "reviewer": [{"kind": "gold", "column": "labels"}], "review": {"budget": 0.5}})
    report = pipeline.run(task, data, tmp_path / "out.csv")
    assert report.status == "complete"
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert len(out) == 8 and all(LabelSets(LABELS).parse(a) for a in out.annotation)


def test_settings_a_multi_label_run_does_not_use_are_refused_not_ignored(tmp_path: Path) -> None:
    data, task, _ = _write(tmp_path, n=60)
    base = task.model_dump(mode="json", exclude_unset=True)
    for extra, named in (({"continual": {}}, "`continual`"),
                         ({"review": {**base["review"], "policy": "disagreement"}}, "`review.policy`")):
        with pytest.raises(TaskError, match=f"does not use {named}"):
            pipeline.run(Task.model_validate({**base, **extra}), data, tmp_path / "out.csv")
        assert not (tmp_path / "out.csv.run").exists() and not (tmp_path / "out.csv").exists()
    same = Task.model_validate({**base, "review": {**base["review"], "policy": "margin"}})  # the default
    assert pipeline.run(same, data, tmp_path / "out.csv").status == "complete"


def test_the_llm_baseline_labels_sets_and_a_vote_keeps_each_label_most_llms_chose(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fakes import FakeLLMServer, OracleLLMServer

    from labeljury.baseline import label_with_llm
    from labeljury.baseline_run import run_baseline
    from labeljury.llm import LLMClient

    texts, _ = _sets_data(12)
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    with FakeLLMServer() as server:
        task = _llm_task(server.base_url)
        report = run_baseline(task, data, tmp_path / "out.jsonl", "cot", [task.llm])
        schema = server.bodies[0]["response_format"]["json_schema"]["schema"]
        system = server.bodies[0]["messages"][0]["content"]
    assert report.rows == 12 and report.sources == {"llm:cot": 12}
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert all(isinstance(a, list) and a and set(a) <= set(LABELS) for a in out.annotation)  # real lists in JSONL
    assert list(schema["properties"]).index("reasoning") < list(schema["properties"]).index("labels")
    from typer.testing import CliRunner

    from labeljury.cli import app

    scored = CliRunner().invoke(app, ["eval", str(tmp_path / "out.jsonl"), "--gold-column", "labels"])
    assert scored.exit_code == 2 and "gold" in scored.output  # the output has no gold column: said in one line
    joined = out.assign(labels=["|".join(s) for s in _sets_data(12)[1]])
    joined.to_json(tmp_path / "scored.jsonl", orient="records", lines=True)
    scored = CliRunner().invoke(app, ["eval", str(tmp_path / "scored.jsonl"), "--gold-column", "labels", "--run-dir",
                                      str(tmp_path / "out.jsonl.run")])
    assert scored.exit_code == 0 and "scoring label sets" in scored.output and "micro" in scored.output.lower()
    assert "nswer with every label that applies" in system and "every text carries at least one" in system

    said = [{"the striker scored": ["sports", "music"], "a rainy day": ["music"]},
            {"the striker scored": ["sports"], "a rainy day": ["weather"]},
            {"the striker scored": ["music", "sports"], "a rainy day": ["politics"]}]
    servers = [OracleLLMServer(lambda text, say=say: {"labels": say[text], "confidence": 0.8}) for say in said]
    clients = []
    try:
        for s in servers:
            s.__enter__()
        clients = [LLMClient(task.llm.model_copy(update={"base_url": s.base_url, "model": f"m{i}"}))
                   for i, s in enumerate(servers)]
        rows = label_with_llm(task, ["the striker scored", "a rainy day"], "vote", clients)
    finally:
        for c in clients:
            c.close()
        for s in servers:
            s.__exit__(None, None, None)
    # sports 3 of 3, music 2 of 3: in; two voters said exactly that set
    assert rows[0] == ("sports|music", pytest.approx(2 / 3), "llm:vote")
    # no label more than half chose, and no empty sets: the most chosen, ties to the task's order (politics)
    assert rows[1] == ("politics", pytest.approx(1 / 3), "llm:vote")


def test_an_llm_then_gold_cascade_counts_the_llm_s_rows_as_right_as_it_measured_them(tmp_path: Path) -> None:
    """The LLM decides the hard rows it is sure of; the gold reviewer answers the audit, the first sample and the
    rest. The LLM is wrong on a third of the rows: the estimate counts its rows at its agreement with gold on
    audit rows a stage picked, so the interval covers the output's true micro-F1 (counting them as right would
    not)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fakes import OracleLLMServer, make_spec

    from labeljury.status import run_status

    data, base, truth = _write(tmp_path, n=2000)
    texts = pd.read_csv(data)["text"].tolist()
    truth_of = dict(zip(texts, truth, strict=True))
    rng = np.random.default_rng(4)  # which texts the LLM gets wrong: independent of the texts and of the audit
    wrong = {t: rng.random() < 0.35 for t in texts}
    sure = {t: rng.random() < 0.8 for t in texts}

    def decide(text: str) -> dict[str, object]:
        right = list(truth_of[text])
        labels = right if not wrong[text] else [LABELS[(LABELS.index(right[0]) + 1) % len(LABELS)]]
        return {"labels": labels, "confidence": 0.9 if sure[text] else 0.3, "reason": "it reads that way"}

    out = tmp_path / "out.csv"
    with OracleLLMServer(decide) as server:
        task = Task.model_validate({**base.model_dump(mode="json", exclude_unset=True), "llm": make_spec(
            server.base_url).model_dump(), "reviewer": [{"kind": "llm", "min_confidence": 0.5},
                                                        {"kind": "gold", "column": "labels"}],
            "review": {"budget": 0.3, "audit": 400}})
        report = pipeline.run(task, data, out)
        asked = list(server.asked)
    assert report.status == "complete" and report.reviews == report.budget == 600
    df = pd.read_csv(out, keep_default_na=False)
    run_dir = pipeline.default_run_dir(out)
    with RunStore(run_dir) as s:
        audit, first = set(s.routed("audit")), set(s.routed("bootstrap"))
        marked = set(s.audit_hard())
        said = s.answers()
        estimate = s.get_meta("set_estimate")
    sources = df["annotation_source"]
    by_llm = sources.eq("reviewed:llm").to_numpy()
    assert by_llm.sum() > 20 and sources.eq("reviewed:gold").sum() > len(audit)
    # the audit and the first sample go to gold; the LLM is asked about hard rows, and about audit rows a stage picked
    assert all(sources[i] == "reviewed:gold" for i in sorted(audit | first))
    asked_audit = {t for t in audit if "llm" in said.get(t, {})}
    assert asked_audit and asked_audit <= marked and {texts[t] for t in asked_audit} <= set(asked)
    assert not {texts[t] for t in first} & set(asked)
    # the rows the LLM decided carry its measured exact-set agreement as their confidence, not its own 0.9
    llm_conf = set(df["annotation_confidence"][by_llm])
    assert len(llm_conf) == 1
    shown = llm_conf.pop()
    got = [tuple(a.split("|")) for a in df["annotation"]]
    true_f1 = multilabel_scores(_indicators(truth), _indicators(got), LABELS)["micro_f1"]
    micro = next(e for e in estimate["estimates"] if e["metric"] == "micro_f1")
    assert micro["settled_rows"] == by_llm.sum() and micro["settled_measured"] >= 10
    assert micro["low"] <= true_f1 <= micro["high"], (micro, true_f1)
    llm_right = np.mean([got[i] == truth[i] for i in np.flatnonzero(by_llm)])
    assert llm_right < 0.8  # the LLM's rows are often wrong: counting them as right would overstate the output
    # the share measured on the audit rows a stage picked stands for the rows it decided (a sample of the same)
    assert abs(shown - llm_right) < 3 * np.sqrt(llm_right * (1 - llm_right) / micro["settled_measured"])
    info = run_status(run_dir)
    assert "the rows the LLM decided count as often right" in info["measured_against"]


def test_a_cascade_whose_llm_too_few_audit_rows_measure_shows_no_confidence_and_no_estimate(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fakes import OracleLLMServer, make_spec

    data, base, truth = _write(tmp_path, n=300)
    truth_of = dict(zip(pd.read_csv(data)["text"], truth, strict=True))
    out = tmp_path / "out.csv"
    with OracleLLMServer(lambda text: {"labels": list(truth_of[text]), "confidence": 0.95, "reason": "so"}) as server:
        task = Task.model_validate({**base.model_dump(mode="json", exclude_unset=True), "llm": make_spec(
            server.base_url).model_dump(), "reviewer": [{"kind": "llm"}, {"kind": "gold", "column": "labels"}],
            "review": {"budget": 0.3, "audit": 40}})
        assert pipeline.run(task, data, out).status == "complete"
    df = pd.read_csv(out, keep_default_na=False)
    by_llm = df["annotation_source"].eq("reviewed:llm")
    assert by_llm.sum() > 10 and (df["annotation_confidence"][by_llm] == "").all()  # not the LLM's own 0.95
    with RunStore(pipeline.default_run_dir(out)) as s:
        said = s.get_meta("set_estimate")
    assert said["estimates"] is None and "audit rows a stage picked measure how often it is right" in said["why"]


def test_a_cascade_to_a_file_queue_waits_on_the_queue_for_the_audit_and_the_first_sample(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fakes import OracleLLMServer, make_spec

    data, base, truth = _write(tmp_path, n=200)
    out = tmp_path / "out.csv"
    with OracleLLMServer(lambda text: {"labels": ["sports"], "confidence": 0.9, "reason": "so"}) as server:
        task = Task.model_validate({**base.model_dump(mode="json", exclude_unset=True), "llm": make_spec(
            server.base_url).model_dump(), "reviewer": [{"kind": "llm"}, {"kind": "file"}],
            "review": {"budget": 0.3, "audit": 40}})
        report = pipeline.run(task, data, out)
        assert not server.asked  # the audit and the first sample are the trusted reviewer's, before any stage
    queue = pipeline.default_run_dir(out) / "review_queue.jsonl"
    assert report.status == "waiting" and report.queue == queue and report.waiting_for == "file"
    assert report.pending == len(queue.read_text().splitlines()) > 40


def test_a_batch_continues_an_earlier_one_learning_from_its_reviews_and_reusing_their_sets(tmp_path: Path) -> None:
    """`--from`: the earlier batch's reviewed rows train this one's heads (no drift: no first sample), a text
    both batches hold keeps its earlier set without being asked again, and the run says what it carried."""
    from labeljury.multilabel.export import SetModel
    from labeljury.sources import DRIFT

    texts, sets = _sets_data(500)
    frame = pd.DataFrame({"text": texts, "labels": ["|".join(x) for x in sets]})
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    frame[::2].to_csv(first, index=False)  # two batches of one source (their texts' numbers interleave)
    pd.concat([frame[1::2], frame[::2][:40]]).to_csv(second, index=False)  # 40 texts of the first come again
    task = Task.model_validate({"name": "news", "labels": LABELS, "multi_label": True,
                                "reviewer": [{"kind": "gold", "column": "labels"}],
                                "review": {"budget": 0.3, "audit": 40}})
    earlier_out, out = tmp_path / "first_out.csv", tmp_path / "second_out.csv"
    assert pipeline.run(task, first, earlier_out).status == "complete"
    earlier = pipeline.default_run_dir(earlier_out)
    with RunStore(earlier) as s:
        answered = {t: r.label for t, r in s.reviews().items() if r.label is not None}
        by_id = s.texts_by_id(sorted(answered))
        reviewed_before = {by_id[t][0]: lab for t, lab in answered.items()}
    report = pipeline.run(task, second, out, from_run=earlier, details=True)
    assert report.status == "complete" and report.texts == 290 and report.reviews <= report.budget == 87
    df = pd.read_csv(out, keep_default_na=False)
    again = df[df.text.isin(reviewed_before)]
    assert len(again) and (again.annotation_source == "earlier:gold").all()
    assert all(a == reviewed_before[t] for t, a in zip(again.text, again.annotation, strict=True))
    run_dir = pipeline.default_run_dir(out)
    with RunStore(run_dir) as s:
        carried, _ = s.carried_totals()
        plan, drift = s.get_meta("budget_plan"), s.get_meta(DRIFT)
        asked = {t for t, r in s.reviews().items() if r.source == "reviewed:gold"}
    assert carried == len(reviewed_before) and drift["tested"] and not drift["drifted"]
    known = {i for i, t in enumerate(df.text) if t in reviewed_before}
    assert plan["bootstrap"] == 0 and known and not asked & known  # reviewed before: not asked again
    assert not drift["drifted"] or pytest.fail(f"two halves of one source drifted: {drift}")
    trained = SetModel.load(run_dir / "checkpoints" / "sets").meta["trained_rows"]
    assert trained >= len(asked) + carried - 40  # the earlier reviews train this batch's heads
    assert drift["estimate"]["metric"] == "micro_f1" and drift["estimate"]["dropped"] in (True, False)
    single = task.model_copy(update={"multi_label": False, "label_separator": None, "allow_empty": None,
                                     "reviewer": [task.reviewer[0].model_copy(update={"column": "label"})]})
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"text": texts[:60], "label": [x[0] for x in sets[:60]]}).to_csv(plain, index=False)
    pipeline.run(single, plain, tmp_path / "plain_out.csv")
    with pytest.raises(LabeljuryError, match="not a multi-label run"):
        pipeline.run(task, second, tmp_path / "third.csv", from_run=pipeline.default_run_dir(tmp_path / "plain_out.csv"))
    assert not (tmp_path / "third.csv.run").exists()


def test_a_batch_that_drifted_from_the_earlier_one_keeps_its_first_sample_and_learns_only_from_itself(
        tmp_path: Path) -> None:
    from labeljury.multilabel.export import SetModel
    from labeljury.sources import DRIFT

    texts, sets = _sets_data(500)
    frame = pd.DataFrame({"text": texts, "labels": ["|".join(x) for x in sets]})
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    frame[:250].to_csv(first, index=False)  # the texts' story numbers run 0-249, then 250-499: told apart
    frame[250:].to_csv(second, index=False)
    task = Task.model_validate({"name": "news", "labels": LABELS, "multi_label": True,
                                "reviewer": [{"kind": "gold", "column": "labels"}],
                                "review": {"budget": 0.3, "audit": 40}})
    pipeline.run(task, first, tmp_path / "a.csv")
    out = tmp_path / "b.csv"
    assert pipeline.run(task, second, out, from_run=pipeline.default_run_dir(tmp_path / "a.csv")).status == "complete"
    run_dir = pipeline.default_run_dir(out)
    with RunStore(run_dir) as s:
        drift, plan = s.get_meta(DRIFT), s.get_meta("budget_plan")
        own = sum(r.label is not None for t, r in s.reviews().items() if t < s.n_input_texts)
        carried, _ = s.carried_totals()
    assert drift["drifted"] and plan["bootstrap"] > 0 and carried > 0
    assert SetModel.load(run_dir / "checkpoints" / "sets").meta["trained_rows"] == own  # not the earlier rows
