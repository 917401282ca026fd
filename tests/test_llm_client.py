"""The LLM client and typed answers against the fault-injecting loopback server."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labeljury.errors import LLMError
from labeljury.llm import (
    Answer,
    LLMClient,
    MemoryCallCache,
    RetryPolicy,
    SQLiteCallCache,
    ask,
    extract_json,
)
from labeljury.llm.prompt import answer_model
from labeljury.task import LLMSpec

sys.path.insert(0, str(Path(__file__).parent))  # llm_fakes, whether or not tests/ is a package
from llm_fakes import LABELS, FakeLLMServer, make_spec

FAST = RetryPolicy(base=0.01, cap=0.05)
Schema = answer_model(list(LABELS))
MESSAGES = [{"role": "system", "content": "Label the opinion."}, {"role": "user", "content": 'Text: "lovely"'}]


def ask_once(client: LLMClient, messages: list[dict[str, str]] = MESSAGES, **kwargs: Any) -> Answer[Any]:
    return client.run(ask(client, messages, Schema, **kwargs))


@pytest.fixture
def server_factory():
    servers: list[FakeLLMServer] = []

    def start(**config: Any) -> FakeLLMServer:
        server = FakeLLMServer(**config).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture
def client_factory():
    clients: list[LLMClient] = []

    def make(base_url: str, **overrides: Any) -> LLMClient:
        client = LLMClient(make_spec(base_url, **overrides), retry=FAST)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_missing_key_env_is_one_line_error_naming_it(monkeypatch):
    monkeypatch.delenv("LJ_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("LABELJURY_KEY_HOSTS", "127.0.0.1")
    with pytest.raises(LLMError) as err:
        LLMClient(make_spec("http://127.0.0.1:9/v1", api_key_env="LJ_NO_SUCH_KEY"))
    assert "LJ_NO_SUCH_KEY" in str(err.value) and "\n" not in str(err.value)


def test_typed_answer_validates(server_factory, client_factory):
    server = server_factory()
    answer = ask_once(client_factory(server.base_url))
    assert answer.value is not None and answer.value.label in LABELS and 0 <= answer.value.confidence <= 1
    assert answer.reason is None and answer.calls == 1 and answer.prompt_tokens > 0
    sent = server.bodies[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"]["properties"]["label"]["enum"] == list(LABELS)


def test_rate_limits_are_retried_honouring_retry_after(server_factory, client_factory):
    server = server_factory(fault_rate=0.5, faults=("429",), retry_after_ms=80)
    client = client_factory(server.base_url, max_retries=8)
    answers = [client.submit(ask(client, MESSAGES, Schema)) for _ in range(12)]
    assert all(a.result().value is not None for a in answers)
    assert server.counts["429"] > 0
    assert client.stats.retries == server.counts["429"] == client.stats.retry_after_waits
    assert client.stats.waited_s >= 0.08 * server.counts["429"]


def test_server_errors_are_retried_then_abstain_with_reason(server_factory, client_factory):
    server = server_factory(fault_rate=1.0, faults=("500",))
    answer = ask_once(client_factory(server.base_url, max_retries=2))
    assert answer.value is None and answer.reason == "http-500"
    assert server.counts["requests"] == 3


def test_a_hang_times_out_and_abstains(server_factory, client_factory):
    server = server_factory(fault_rate=1.0, faults=("hang",), hang_s=2.0)
    client = client_factory(server.base_url, max_retries=1, timeout=0.3)
    started = time.monotonic()
    answer = ask_once(client)
    assert answer.value is None and answer.reason == "timeout"
    assert time.monotonic() - started < 1.5
    assert client.stats.errors["timeout"] == 2


def test_a_refused_connection_abstains(client_factory):
    client = client_factory("http://127.0.0.1:9/v1", max_retries=1)
    answer = ask_once(client)
    assert answer.value is None and answer.reason == "connection"


def test_invalid_answer_is_reasked_once_with_the_error_then_abstains(server_factory, client_factory):
    server = server_factory(fault_rate=1.0, faults=("bad-label",))
    answer = ask_once(client_factory(server.base_url))
    assert answer.value is None and answer.reason == "invalid-answer"
    assert server.counts["requests"] == 2
    reask = server.bodies[1]["messages"]
    assert reask[-2]["role"] == "assistant" and "not-a-label" in reask[-2]["content"]
    assert "invalid" in reask[-1]["content"] and "'positive'" in reask[-1]["content"]
    assert answer.calls == 2 and answer.cost_usd == 0 and answer.prompt_tokens > 0


class FirstFaulty(FakeLLMServer):
    """Malformed JSON on the first request only."""

    def _pick_fault(self) -> str | None:
        return "malformed" if self.counts["requests"] == 1 else None


def test_a_reask_can_recover():
    with FirstFaulty() as server:
        client = LLMClient(make_spec(server.base_url), retry=FAST)
        answer = ask_once(client)
        client.close()
    assert answer.value is not None and answer.calls == 2


def test_concurrency_is_bounded(server_factory, client_factory):
    server = server_factory(latency=0.2)
    client = client_factory(server.base_url, concurrency=8)
    started = time.monotonic()
    futures = [client.submit(ask(client, [{"role": "user", "content": f"text {i}"}], Schema)) for i in range(40)]
    assert all(f.result().value is not None for f in futures)
    elapsed = time.monotonic() - started
    assert server.max_in_flight == 8 and client.stats.max_in_flight == 8
    assert elapsed < 40 * 0.2 / 4  # concurrency was used, not one call after another


@pytest.mark.parametrize(
    ("rejected", "mode", "sent"),
    [
        ({"json_schema"}, "json_object_schema", "json_object"),
        ({"json_schema", "json_object"}, "text", None),
    ],
)
def test_response_format_falls_back_and_is_remembered(server_factory, client_factory, rejected, mode, sent):
    server = server_factory(reject_formats=frozenset(rejected))
    client = client_factory(server.base_url)
    first = ask_once(client)
    rejections = server.counts["requests"] - server.counts["ok"]
    second = ask_once(client, [{"role": "user", "content": "another text"}])
    assert first.value is not None and second.value is not None
    assert client.format_mode == mode
    assert server.counts["requests"] - server.counts["ok"] == rejections  # no new rejection
    last = server.bodies[-1]
    assert (last.get("response_format") or {}).get("type") == sent
    assert "JSON schema" in last["messages"][0]["content"]  # the lenient modes describe the schema


def test_cache_makes_a_repeat_free(server_factory, client_factory):
    server = server_factory()
    client = client_factory(server.base_url)
    cache = MemoryCallCache()
    first = ask_once(client, cache=cache)
    second = ask_once(client, cache=cache)
    assert server.counts["requests"] == 1
    assert second.cached and second.calls == 0 and second.cost_usd == 0
    assert second.value == first.value and client.stats.cache_hits == 1


def test_sqlite_cache_survives_a_restart(server_factory, client_factory, tmp_path):
    server = server_factory()
    db = tmp_path / "run.db"
    client = client_factory(server.base_url, prices={"input": 1.0, "output": 2.0})
    cache = SQLiteCallCache(db)
    first = ask_once(client, cache=cache)
    cache.close()
    reopened = SQLiteCallCache(db)
    second = ask_once(client, cache=reopened)
    assert server.counts["requests"] == 1 and second.cached and second.value == first.value
    usd, tokens = reopened.totals()
    assert usd == pytest.approx(first.cost_usd) and tokens == first.prompt_tokens + first.completion_tokens
    reopened.close()


def test_a_rejected_key_raises_without_repeating_it(server_factory, monkeypatch):
    secret = "sk-lj-wrong-5e6f7a8b9c0d"
    monkeypatch.setenv("LJ_TEST_WRONG_KEY", secret)
    monkeypatch.setenv("LABELJURY_KEY_HOSTS", "127.0.0.1")
    server = server_factory(require_key="sk-right")
    client = LLMClient(make_spec(server.base_url, api_key_env="LJ_TEST_WRONG_KEY"), retry=FAST)
    with pytest.raises(LLMError) as err:
        ask_once(client)
    client.close()
    assert "401" in str(err.value) and "LJ_TEST_WRONG_KEY" in str(err.value)
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert server.counts["requests"] == 1  # not retried


def test_extract_json_finds_json_in_prose():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Sure:\n```json\n{"a": 2}\n```') == {"a": 2}
    assert extract_json('The answer is {"a": 3} as asked.') == {"a": 3}
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_a_closed_client_refuses_work(server_factory):
    server = server_factory()
    client = LLMClient(make_spec(server.base_url))
    assert ask_once(client).value is not None
    client.close()
    with pytest.raises(LLMError, match="closed"):
        ask_once(client)


def test_local_backend_errors_are_one_line(monkeypatch, tmp_path):
    spec = LLMSpec(model="local", gguf=str(tmp_path / "missing.gguf"), api_key_env=None)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(LLMError, match=r"pip install 'labeljury\[llama\]'"):
        LLMClient(spec)
    monkeypatch.undo()
    pytest.importorskip("llama_cpp")
    with pytest.raises(LLMError, match="does not exist"):
        LLMClient(spec)
