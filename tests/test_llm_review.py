"""The LLM reviewer end to end against the fault-injecting loopback server."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labeljury.errors import LLMError
from labeljury.llm import Ledger, LLMClient, RetryPolicy, SQLiteCallCache
from labeljury.llm.cost import Price, max_prompt_tokens
from labeljury.llm.prompt import ExampleSelector
from labeljury.review.base import Reviewer
from labeljury.review.llm import LLMReviewer, make_llm_reviewer
from labeljury.task import Example

sys.path.insert(0, str(Path(__file__).parent))  # llm_fakes, whether or not tests/ is a package
from llm_fakes import LABELS, FakeLLMServer, make_items, make_spec, make_task

FAST = RetryPolicy(base=0.01, cap=0.05)
ABSTAIN_REASONS = {"invalid-answer", "timeout", "http-429", "http-500", "connection", "budget"}
PRICES = {"input": 1000.0, "output": 1000.0}  # $0.001 a token: a small budget runs out quickly


def review(server: FakeLLMServer, items: list[Any], *, cache: Any = None, ledger: Ledger | None = None, **spec: Any):
    """Review `items`; returns (results, reviewer)."""
    client = LLMClient(make_spec(server.base_url, **spec), retry=FAST)
    try:
        reviewer = LLMReviewer(make_task(client.spec), client, cache, ledger)
        results = list(reviewer.review(items))
    finally:
        client.close()
    return results, reviewer


def check_complete(results: list[Any], items: list[Any]) -> None:
    assert sorted(r.key for r in results) == sorted(i.key for i in items)
    for r in results:
        if r.label is None:
            assert r.source.removeprefix("queued:llm-") in ABSTAIN_REASONS, r.source
        else:
            assert r.label in LABELS and r.source == "reviewed:llm" and 0 <= r.confidence <= 1 and r.reason


def test_is_a_reviewer_that_answers_each_item_once_with_a_task_label():
    items = make_items(12)
    with FakeLLMServer() as server:
        results, reviewer = review(server, items)
    assert isinstance(reviewer, Reviewer) and reviewer.kind == "llm"
    check_complete(results, items)
    assert len(results) == len(items) and all(r.label is not None and not r.pending for r in results)
    assert server.counts["ok"] >= len(items)  # every row was asked of the server, none made up


def test_review_survives_faults(tmp_path):
    items = make_items(60)
    with FakeLLMServer(fault_rate=0.3, hang_s=1.5, seed=1) as server:
        results, reviewer = review(server, items, cache=SQLiteCallCache(tmp_path / "run.db"), timeout=0.4)
    check_complete(results, items)
    assert sum(r.label is not None for r in results) >= 50
    assert all(server.counts[f] > 0 for f in ("429", "500", "hang", "malformed", "bad-label"))
    stats = reviewer.client.stats
    assert stats.retries >= server.counts["429"] + server.counts["500"]
    assert 0 < stats.retry_after_waits <= server.counts["429"]
    assert reviewer.ledger.spent_tokens >= server.usage["prompt_tokens"] + server.usage["completion_tokens"]


def test_budget_cap_holds_and_queues_the_rest_in_order():
    items = make_items(40)
    with FakeLLMServer() as server:
        results, reviewer = review(server, items, prices=PRICES, budget_usd=2.0, concurrency=1)
    check_complete(results, items)
    ledger = reviewer.ledger
    assert ledger.spent_usd <= 2.0
    reasons = [r.source for r in sorted(results, key=lambda r: r.key)]
    first_refused = reasons.index("queued:llm-budget")
    assert 0 < first_refused < len(items)
    assert all(s == "reviewed:llm" for s in reasons[:first_refused])
    assert all(s == "queued:llm-budget" for s in reasons[first_refused:])
    worst_case = Price(1000.0, 1000.0).cost_usd(max_prompt_tokens(server.bodies[-1]["messages"]), 256)
    assert 2.0 - ledger.spent_usd < worst_case  # spent up to the last call it could afford
    assert sum(r.cost_usd for r in results) == pytest.approx(ledger.spent_usd)
    assert server.counts["requests"] == first_refused


def test_budget_cap_holds_with_calls_in_flight():
    items = make_items(60)
    with FakeLLMServer(latency=0.02) as server:
        results, reviewer = review(server, items, prices=PRICES, budget_usd=3.0, budget_tokens=None, concurrency=8)
    check_complete(results, items)
    assert reviewer.ledger.spent_usd <= 3.0
    assert Counter(r.source for r in results)["queued:llm-budget"] > 0
    assert reviewer.ledger.spent_tokens == server.usage["prompt_tokens"] + server.usage["completion_tokens"]


def test_token_budget_caps_too():
    items = make_items(30)
    with FakeLLMServer() as server:
        results, reviewer = review(server, items, budget_tokens=3000, concurrency=4)
    assert reviewer.ledger.spent_tokens <= 3000
    assert Counter(r.source for r in results)["queued:llm-budget"] > 0


def test_a_second_run_is_served_by_the_cache(tmp_path):
    items = make_items(20)
    db = tmp_path / "run.db"
    with FakeLLMServer() as server:
        first, _ = review(server, items, cache=SQLiteCallCache(db), prices=PRICES)
        calls = server.counts["requests"]
        second, reviewer = review(server, items, cache=SQLiteCallCache(db), prices=PRICES)
    assert calls == 20 and server.counts["requests"] == calls  # zero HTTP calls the second time
    key = lambda r: r.key  # noqa: E731
    assert [(r.key, r.label) for r in sorted(first, key=key)] == [(r.key, r.label) for r in sorted(second, key=key)]
    assert reviewer.ledger.hits == 20 and reviewer.ledger.spent_usd == 0 and reviewer.ledger.saved_usd > 0
    assert all(r.cost_usd == 0 for r in second)


def test_prompt_carries_instructions_labels_and_votes():
    with FakeLLMServer() as server:
        review(server, make_items(1))
        system, user = (m["content"] for m in server.bodies[0]["messages"])
    assert "Label the opinion the text expresses." in system
    assert all(f"- {name}: {desc}" in system for name, desc in LABELS.items())
    assert "roberta: neutral (0.50)" in user and "bertweet: negative (0.60)" in user and "vader: abstained" in user
    assert "Combined vote: neutral (0.48)" in user and "the service was slow" in user


def test_batches_share_requests_and_reask_bad_items_alone():
    items = make_items(16)
    with FakeLLMServer(fault_rate=0.25, faults=("bad-label",), seed=3) as server:
        results, _ = review(server, items, batch_size=8)
        batch_calls = [b for b in server.bodies if "### Item " in b["messages"][-1]["content"]]
        alone_calls = [b for b in server.bodies if "### Item " not in b["messages"][-1]["content"]]
    check_complete(results, items)
    assert len(batch_calls) == 2 and server.counts["bad-label"] > 0
    assert 0 < len(alone_calls) <= server.counts["bad-label"] * 8
    assert sum(r.label is not None for r in results) >= 14


def test_results_arrive_as_they_complete_and_closing_stops_spending():
    with FakeLLMServer(latency=0.2) as server:
        client = LLMClient(make_spec(server.base_url, concurrency=2), retry=FAST)
        reviewer = LLMReviewer(make_task(client.spec), client)
        started = time.monotonic()
        stream = reviewer.review(make_items(20))
        first = next(stream)
        assert time.monotonic() - started < 1.0 and first.label is not None
        stream.close()
        time.sleep(0.5)
        seen = server.counts["requests"]
        time.sleep(0.5)
        assert server.counts["requests"] == seen <= 6
        client.close()


def test_many_examples_are_chosen_by_similarity():
    examples = [Example(text=f"{word} example", label="positive") for word in "abcdefghijkl"]

    def embed(texts: list[str]) -> np.ndarray:
        return np.array([[float(t[0] == c) for c in "abcdefghijkl"] + [0.1] for t in texts])

    selector = ExampleSelector(examples, k=2, embed=embed)
    chosen = selector.choose([["c text"], ["k text", "a text"]])
    assert "c example" in {e.text for e in chosen[0]} and len(chosen[0]) == 2
    assert {e.text for e in chosen[1]} == {"a example", "k example"}
    balanced = ExampleSelector(
        [Example(text=f"p{i}", label="positive") for i in range(9)] + [Example(text="n", label="negative")], k=3
    ).choose([["x"]])[0]
    assert {e.label for e in balanced} == {"positive", "negative"} and len(balanced) == 3


def test_the_api_key_never_leaks(tmp_path, monkeypatch, caplog):
    secret = "sk-lj-test-SECRET-9f8e7d6c5b4a3210"
    monkeypatch.setenv("LJ_TEST_API_KEY", secret)
    monkeypatch.setenv("LABELJURY_KEY_HOSTS", "127.0.0.1")  # the user allows the key to go to the test server
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "run.db"
    items = make_items(12)
    with FakeLLMServer(fault_rate=0.3, hang_s=1.0, require_key=secret, seed=2) as server:
        results, reviewer = review(server, items, cache=SQLiteCallCache(db), api_key_env="LJ_TEST_API_KEY", timeout=0.4)
        check_complete(results, items)
        monkeypatch.setenv("LJ_TEST_API_KEY", secret[::-1])  # a wrong key, which the server echoes back
        with pytest.raises(LLMError) as err:
            review(server, make_items(1, start=100), api_key_env="LJ_TEST_API_KEY")
    assert sum(r.label is not None for r in results) > 0
    for leaked in (secret, secret[::-1]):
        assert leaked not in caplog.text
        assert leaked not in str(err.value) and leaked not in repr(err.value)
        assert leaked not in repr(results)
        assert leaked not in repr(reviewer.client) and leaked not in repr(reviewer.client.backend)
        for path in tmp_path.iterdir():
            assert leaked.encode() not in path.read_bytes(), path.name
    assert caplog.text  # there was logging to check


def test_the_pipeline_reviewer_resumes_from_the_run_db(tmp_path):
    with FakeLLMServer() as server:
        task = make_task(make_spec(server.base_url, prices=PRICES, budget_usd=5.0))
        first = make_llm_reviewer(task, tmp_path)
        list(first.review(make_items(5)))
        spent = first.ledger.spent_usd
        first.close()
        second = make_llm_reviewer(task, tmp_path)
        assert spent > 0 and second.ledger.spent_usd == pytest.approx(spent)  # the cap counts what was paid
        again = list(second.review(make_items(5)))
        second.close()
    assert server.counts["requests"] == 5 and all(r.cost_usd == 0 and r.label for r in again)
