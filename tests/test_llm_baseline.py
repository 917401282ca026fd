"""The LLM-only baselines (zero-shot, few-shot, chain of thought, vote of several LLMs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from labeljury.baseline import label_with_llm
from labeljury.errors import LLMError
from labeljury.llm import LLMClient, MemoryCallCache, RetryPolicy
from labeljury.task import Example

sys.path.insert(0, str(Path(__file__).parent))  # llm_fakes, whether or not tests/ is a package
from llm_fakes import LABELS, FakeLLMServer, make_spec, make_task

TEXTS = [f"text {i}: what a day" for i in range(6)]
FAST = RetryPolicy(base=0.01, cap=0.05)


@pytest.fixture
def server():
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def client(server):
    c = LLMClient(make_spec(server.base_url), retry=FAST)
    yield c
    c.close()


def test_zero_shot_labels_every_row_in_order(server, client):
    rows = label_with_llm(make_task(client.spec), TEXTS, "zero-shot", [client])
    assert len(rows) == len(TEXTS)
    assert all(label in LABELS and 0 <= conf <= 1 and source == "llm:zero-shot" for label, conf, source in rows)
    users = [b["messages"][-1]["content"] for b in server.bodies]
    assert sorted(users) == sorted(f'Text: "{t}"' for t in TEXTS)
    assert "reason" not in server.bodies[0]["response_format"]["json_schema"]["schema"]["properties"]


def test_few_shot_puts_examples_in_the_prompt(server, client):
    task = make_task(client.spec, examples=[Example(text="I adore it", label="positive")])
    rows = label_with_llm(task, TEXTS[:2], "few-shot", [client])
    assert all(source == "llm:few-shot" for _, _, source in rows)
    assert '"I adore it" -> positive' in server.bodies[0]["messages"][0]["content"]
    with pytest.raises(LLMError, match="examples"):
        label_with_llm(make_task(client.spec), TEXTS, "few-shot", [client])


def test_cot_reasons_before_the_label(server, client):
    label_with_llm(make_task(client.spec), TEXTS[:1], "cot", [client])
    properties = list(server.bodies[0]["response_format"]["json_schema"]["schema"]["properties"])
    assert properties.index("reasoning") < properties.index("label")


def test_vote_takes_the_majority_and_survives_a_broken_voter():
    broken = FakeLLMServer(fault_rate=1.0, faults=("bad-label",))
    with FakeLLMServer() as good, FakeLLMServer(seed=5) as also_good, broken as bad:
        servers = (good, also_good, bad)
        clients = [LLMClient(make_spec(s.base_url, model=f"voter-{i}"), retry=FAST) for i, s in enumerate(servers)]
        cache = MemoryCallCache()
        rows = label_with_llm(make_task(clients[0].spec), TEXTS, "vote", clients, cache=cache)
        again = label_with_llm(make_task(clients[0].spec), TEXTS, "vote", clients, cache=cache)
        for c in clients:
            c.close()
    assert again == rows and all(s.counts["requests"] == len(TEXTS) * (1 + (s is bad)) for s in servers)
    for label, confidence, source in rows:
        assert source == "llm:vote" and label in LABELS
        assert confidence == pytest.approx(2 / 3)  # the two good voters agree (same fake answers), the third abstains


def test_every_voter_failing_queues_the_row():
    with FakeLLMServer(fault_rate=1.0, faults=("bad-label",)) as bad:
        clients = [LLMClient(make_spec(bad.base_url), retry=FAST) for _ in range(2)]
        rows = label_with_llm(make_task(clients[0].spec), TEXTS[:2], "vote", clients)
        for c in clients:
            c.close()
    assert rows == [(None, None, "queued:llm-invalid-answer")] * 2


def test_client_counts_are_checked(client):
    task = make_task(client.spec)
    with pytest.raises(LLMError, match="at least two"):
        label_with_llm(task, TEXTS, "vote", [client])
    with pytest.raises(LLMError, match="exactly one"):
        label_with_llm(task, TEXTS, "zero-shot", [client, client])
    with pytest.raises(LLMError, match="unknown baseline"):
        label_with_llm(task, TEXTS, "ten-shot", [client])  # type: ignore[arg-type]
