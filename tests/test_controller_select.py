"""Model selection: hub candidates from recorded answers, the LLM's typed pick over real HTTP, the
re-ask, and the fallback to the catalog's defaults."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from labeljury.controller import gather_candidates, hub_candidates, search_terms, select, select_specialists
from labeljury.controller.candidates import Candidate
from labeljury.llm import Ledger, LLMClient, MemoryCallCache, RetryPolicy
from labeljury.specialists import auto_specialists, build_specialist
from labeljury.task import Task

sys.path.insert(0, str(Path(__file__).parent))
from hub_fakes import patch_hub
from llm_fakes import FakeLLMServer, ScriptedLLMServer, make_spec

FAST = RetryPolicy(base=0.01, cap=0.05)
SENTIMENT = Task(name="tweet-sentiment", labels={"negative": "dislikes", "neutral": "no opinion", "positive": "likes"},
                 instructions="Classify the sentiment of a tweet.", reviewer={"kind": "gold", "column": "label"})
GOOD = {"picks": [
    {"id": "cardiffnlp/twitter-roberta-base-sentiment-latest", "reason": "Trained on tweets with these labels.",
     "label_map": [{"model_label": "negative", "task_label": "negative"}, {"model_label": "neutral", "task_label": "neutral"},
                   {"model_label": "positive", "task_label": "positive"}]},
    {"id": "finiteautomata/bertweet-base-sentiment-analysis", "reason": "Another tweet model.",
     "label_map": [{"model_label": "neg", "task_label": "negative"}, {"model_label": "NEU", "task_label": "neutral"},
                   {"model_label": "POS", "task_label": "positive"}]},
    {"id": "hybrid-head", "reason": "Learns from the reviewed tweets.", "label_map": []},
]}


def test_hub_candidates_are_ranked_with_labels_from_their_config(monkeypatch):
    api, download = patch_hub(monkeypatch)
    found = hub_candidates(SENTIMENT, limit=6)
    assert api.calls and api.calls[0]["search"] == "sentiment"
    ids = [c.id for c in found]
    assert ids == ["distilbert/distilbert-base-uncased-finetuned-sst-2-english",
                   "cardiffnlp/twitter-roberta-base-sentiment-latest",
                   "nlptown/bert-base-multilingual-uncased-sentiment",
                   "cardiffnlp/twitter-roberta-base-sentiment", "ProsusAI/finbert",
                   "finiteautomata/bertweet-base-sentiment-analysis"]
    by_id = {c.id: c for c in found}
    assert by_id["ProsusAI/finbert"].labels == ["positive", "negative", "neutral"]  # id2label order, not sorted
    assert by_id["nlptown/bert-base-multilingual-uncased-sentiment"].labels[0] == "1 star"
    assert all(c.source == "hub" and c.own_labels and c.downloads for c in found)
    assert "some-lab/sentiment-gated-large" not in download.calls  # gated: skipped before any download


def test_unusable_hub_models_are_skipped(monkeypatch):
    patch_hub(monkeypatch)
    ids = [c.id for c in hub_candidates(SENTIMENT, limit=50)]
    assert "someone/sentiment-no-config" not in ids and "some-lab/sentiment-gated-large" not in ids
    assert len(ids) == 7


def test_search_terms_follow_the_task():
    toxic = Task(name="comments", labels=["toxic", "non-toxic"], reviewer={"kind": "gold", "column": "y"})
    assert search_terms(SENTIMENT) == ["sentiment"]
    assert search_terms(toxic) == ["toxic"]
    assert search_terms(Task(name="bug-reports", labels=["crash", "feature"], reviewer={"kind": "file"})) == ["bug", "reports"]


def test_an_unreachable_hub_leaves_the_catalog(monkeypatch, caplog):
    patch_hub(monkeypatch, fail=True)
    with caplog.at_level(logging.WARNING):
        pool = gather_candidates(SENTIMENT)
    assert pool and all(c.source == "catalog" for c in pool)
    assert "hub search" in caplog.text


@pytest.fixture
def hub(monkeypatch):
    return patch_hub(monkeypatch)


def _select(server, **kw):
    client = LLMClient(make_spec(server.base_url), retry=FAST)
    try:
        return select(SENTIMENT, client, **kw)
    finally:
        client.close()


def test_the_llm_picks_k_candidates_with_label_maps(hub):
    with ScriptedLLMServer([GOOD]) as server:
        result = _select(server)
    assert not result.fallback and server.counts["requests"] == 1
    ids = [s.id for s in result.specs]
    assert ids == ["cardiffnlp/twitter-roberta-base-sentiment-latest", "finiteautomata/bertweet-base-sentiment-analysis",
                   "hybrid-head"]
    assert result.specs[1].label_map == {"NEG": "negative", "NEU": "neutral", "POS": "positive"}  # canonical case
    assert result.specs[2].label_map is None
    assert result.specs[2].options == next(s.options for s in auto_specialists(SENTIMENT) if s.id == "hybrid-head")
    body = server.bodies[0]
    schema = body["response_format"]["json_schema"]["schema"]
    pick_ids = schema["$defs"]["Pick"]["properties"]["id"]["enum"]
    assert "ProsusAI/finbert" in pick_ids and "vader" in pick_ids and "someone/sentiment-no-config" not in pick_ids
    assert '"labels":["NEG","NEU","POS"]' in body["messages"][1]["content"]
    assert result.reasons["hybrid-head"] == "Learns from the reviewed tweets."
    # the specs are valid task specialists (the hub model's config is not read until used)
    assert build_specialist(result.specs[2], SENTIMENT).name == "hybrid-head"


def test_an_invalid_answer_is_asked_again_once(hub):
    bad = json.loads(json.dumps(GOOD))
    bad["picks"][0]["label_map"][0]["model_label"] = "NEG"  # a label of another model
    with ScriptedLLMServer([bad, GOOD]) as server:
        result = _select(server)
    assert not result.fallback and server.counts["requests"] == 2
    feedback = server.bodies[1]["messages"][-1]["content"]
    assert "invalid" in feedback and "has no label 'NEG'" in feedback


@pytest.mark.parametrize("answer", [
    {"picks": GOOD["picks"][:2]},  # too few
    {"picks": [GOOD["picks"][0]] * 3},  # the same model three times
    {"picks": [{**GOOD["picks"][0], "label_map": [{"model_label": "negative", "task_label": "negative"}]},
               *GOOD["picks"][1:]]},  # a map onto one task label only
    {"picks": [{**GOOD["picks"][0], "id": "evil/not-a-candidate"}, *GOOD["picks"][1:]]},
    "I would pick the RoBERTa model.",
])
def test_a_twice_invalid_answer_falls_back_to_the_defaults(hub, answer):
    with ScriptedLLMServer([answer]) as server:
        result = _select(server)
    assert result.fallback and result.why == "invalid-answer" and server.counts["requests"] == 2
    assert result.specs == auto_specialists(SENTIMENT)


def test_a_spent_budget_falls_back_without_a_call(hub):
    with ScriptedLLMServer([GOOD]) as server:
        result = _select(server, ledger=Ledger(budget_tokens=10))
    assert result.fallback and result.why == "budget" and server.counts["requests"] == 0


def test_the_fake_servers_wrong_sized_answer_also_falls_back(hub):
    with FakeLLMServer() as server:  # answers one pick where three are asked for
        assert _select(server, k=3).fallback


def test_selection_is_cached(hub):
    cache = MemoryCallCache()
    with ScriptedLLMServer([GOOD]) as server:
        client = LLMClient(make_spec(server.base_url), retry=FAST)
        first = select_specialists(SENTIMENT, client, cache=cache)
        again = select_specialists(SENTIMENT, client, cache=cache)
        client.close()
    assert first == again and server.counts["requests"] == 1


def test_k_is_capped_by_the_candidates_and_legacy_hub_ids_get_a_prefix():
    legacy = Candidate(id="distilbert-base-uncased-finetuned-sst-2-english", source="hub", description="old",
                       labels=["NEGATIVE", "POSITIVE"], own_labels=True)
    answer = {"picks": [{"id": legacy.id, "reason": "r", "label_map": [
        {"model_label": "NEGATIVE", "task_label": "negative"}, {"model_label": "POSITIVE", "task_label": "positive"}]}]}
    with ScriptedLLMServer([answer]) as server:
        result = _select(server, candidates=[legacy], k=3)
    assert not result.fallback
    assert result.specs[0].id == "hf:distilbert-base-uncased-finetuned-sst-2-english"


def test_the_pipeline_runs_the_llms_pick_and_keeps_it_on_resume(tmp_path, hub):
    """`specialists: auto` with an `llm:` section: the LLM's picks plus the trainable heads label the
    data; the choice is stored in the run, so resuming asks the LLM nothing and keeps it."""
    from labeljury import run
    from labeljury.store import RunStore

    from .conftest import make_rows

    data = tmp_path / "in.csv"
    make_rows(300, seed=3).to_csv(data, index=False)
    pick = {"picks": [
        {"id": "vader", "reason": "A sentiment lexicon.", "label_map": [
            {"model_label": "negative", "task_label": "negative"}, {"model_label": "neutral", "task_label": "neutral"},
            {"model_label": "positive", "task_label": "positive"}]},
        {"id": "zeroshot", "reason": "Label descriptions are clear.", "label_map": []},
        {"id": "hybrid-head", "reason": "Learns from the reviewed rows.", "label_map": []},
    ]}
    with ScriptedLLMServer([pick]) as server:
        task = Task(name="toy", labels={"negative": "dislikes", "neutral": "no opinion", "positive": "likes"},
                    reviewer={"kind": "gold", "column": "label"}, review={"budget": 0.2},
                    llm=make_spec(server.base_url).model_dump())
        first = run(task, data, tmp_path / "out.csv")
        asked = server.counts["ok"]
        with RunStore(tmp_path / "out.csv.run") as s:
            chosen = [sp["id"] for sp in s.get_meta("selected_specialists")]
        (tmp_path / "out.csv").rename(tmp_path / "first.csv")
        again = run(task, data, tmp_path / "out.csv")  # the same run directory: resumes
        assert server.counts["ok"] == asked == 1
    assert chosen == ["vader", "zeroshot", "hybrid-head", "embedding-head", "nb-head"]
    assert [s["name"] for s in first.specialists] == chosen and first.status == again.status == "complete"
    assert (tmp_path / "first.csv").read_bytes() == (tmp_path / "out.csv").read_bytes()
