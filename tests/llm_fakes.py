"""A fault-injecting OpenAI-compatible server on loopback, for the LLM tests and benchmark.

`/v1/chat/completions` answers with JSON that fits the request's schema (from `response_format`, or
written in the system message in the lenient modes), with usage filled in (~4 characters a token).
At `fault_rate` a request instead gets one of `faults`: `429` (with Retry-After), `500`, `hang`
(no answer until long after the client's timeout), `malformed` (truncated JSON content) or
`bad-label` (a label outside the set). It counts what it saw, including the most requests it had
in flight at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from labeljury.review.base import ReviewItem
from labeljury.task import LLMSpec, ReviewerSpec, Task

FAULTS = ("429", "500", "hang", "malformed", "bad-label")


def _choose(options: list[Any], seed_text: str) -> Any:
    digest = hashlib.sha256(seed_text.encode()).digest()
    return options[digest[0] % len(options)]


def _instance(schema: dict[str, Any], root: dict[str, Any], seed_text: str, n_items: int, index: int = 0) -> Any:
    """A value that validates against `schema` (the subset pydantic models produce)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _instance(root["$defs"][name], root, seed_text, n_items, index)
    if "anyOf" in schema:
        return _instance(schema["anyOf"][0], root, seed_text, n_items, index)
    if "enum" in schema:
        return _choose(schema["enum"], f"{seed_text}/{index}")
    kind = schema.get("type")
    if kind == "object":
        out = {}
        for key, sub in schema.get("properties", {}).items():
            out[key] = index if key == "index" else _instance(sub, root, seed_text, n_items, index)
        return out
    if kind == "array":
        return [_instance(schema["items"], root, seed_text, n_items, i) for i in range(n_items)]
    if kind == "number":
        return 0.8
    if kind == "integer":
        return index
    if kind == "boolean":
        return True
    return "The wording points to this label."


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"]
    if fmt.get("schema"):
        return fmt["schema"]
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    marker = "JSON schema: "
    if marker in system:
        return json.JSONDecoder().raw_decode(system, system.index(marker) + len(marker))[0]
    return None


def _corrupt_label(value: Any) -> bool:
    if isinstance(value, dict):
        if "label" in value:
            value["label"] = "not-a-label"
            return True
        return any(_corrupt_label(v) for v in value.values())
    if isinstance(value, list):
        return any(_corrupt_label(v) for v in value)
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog (5) drops connections under concurrency

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, json.JSONDecodeError)):
            return  # a client that gave up (timeout, cancelled call) mid-request: expected here
        super().handle_error(request, client_address)


class FakeLLMServer:
    """Start with `with FakeLLMServer(...) as server:`; `server.base_url` is the `/v1` URL."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        hang_s: float = 3.0,
        retry_after_ms: int = 50,
        reject_formats: frozenset[str] = frozenset(),
        require_key: str | None = None,
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self.fault_rate = fault_rate
        self.faults = faults
        self.hang_s = hang_s
        self.retry_after_ms = retry_after_ms
        self.reject_formats = reject_formats
        self.require_key = require_key
        self.counts: Counter[str] = Counter()
        self.usage: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.usage.clear()
            self.bodies.clear()
            self.max_in_flight = 0

    def _pick_fault(self) -> str | None:
        with self._lock:
            if self.faults and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.faults)
        return None

    def respond(self, body: dict[str, Any], auth: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one chat-completion request."""
        if self.require_key is not None and auth != f"Bearer {self.require_key}":
            sent = auth.removeprefix("Bearer ")
            # Like some real servers, echo the rejected key: the client must not repeat it.
            return 401, {}, json.dumps({"error": {"message": f"Incorrect API key provided: {sent}"}}).encode()
        fmt = (body.get("response_format") or {}).get("type")
        if fmt in self.reject_formats:
            message = f"response_format type {fmt!r} is not supported by this server"
            return 400, {}, json.dumps({"error": {"message": message}}).encode()
        fault = self._pick_fault()
        with self._lock:
            self.counts[fault or "ok"] += 1
        if fault == "429":
            headers = {"retry-after-ms": str(self.retry_after_ms), "Retry-After": "1"}
            return 429, headers, json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit"}}).encode()
        if fault == "500":
            return 500, {}, json.dumps({"error": {"message": "The server had an error"}}).encode()
        if fault == "hang":
            time.sleep(self.hang_s)
        schema = _schema_of(body)
        user = body["messages"][-1]["content"]
        n_items = max(1, user.count("### Item "))
        value = _instance(schema, schema, user, n_items) if schema else {"answer": "ok"}
        if fault == "bad-label":
            _corrupt_label(value)
        content = json.dumps(value)
        if fault == "malformed":
            content = content[: len(content) // 2]
        elif body.get("response_format") is None:
            content = f"Sure, here it is:\n```json\n{content}\n```"
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        usage = {
            "prompt_tokens": math.ceil(prompt_chars / 4) + 3 * len(body["messages"]),
            "completion_tokens": max(1, math.ceil(len(content) / 4)),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self._lock:
            self.usage["prompt_tokens"] += usage["prompt_tokens"]
            self.usage["completion_tokens"] += usage["completion_tokens"]
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        }
        return 200, {}, json.dumps(answer).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out in separate writes: without this, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every response
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    server.counts["requests"] += 1
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.latency:
                        time.sleep(server.latency)
                    status, headers, payload = server.respond(body, self.headers.get("Authorization", ""))
                finally:
                    with server._lock:
                        server.in_flight -= 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout)

        return Handler


LABELS = {"positive": "a favourable opinion", "negative": "an unfavourable opinion", "neutral": "no opinion"}


def make_spec(base_url: str, **overrides: Any) -> LLMSpec:
    """An LLMSpec for the fake server: no key needed, quick timeouts."""
    settings: dict[str, Any] = {"model": "gpt-4o-mini", "base_url": base_url, "api_key_env": None, "timeout": 1.0}
    settings.update(overrides)
    return LLMSpec(**settings)


def make_task(spec: LLMSpec, **overrides: Any) -> Task:
    settings: dict[str, Any] = {
        "name": "sentiment",
        "labels": LABELS,
        "instructions": "Label the opinion the text expresses.",
        "reviewer": ReviewerSpec(kind="llm"),
        "llm": spec,
    }
    settings.update(overrides)
    return Task(**settings)


def make_items(n: int, start: int = 0) -> list[ReviewItem]:
    return [
        ReviewItem(
            key=start + i,
            text=f"review {start + i}: the food was fine but the service was slow",
            row=start + i,
            vote="neutral",
            confidence=0.48,
            votes={"roberta": "neutral", "bertweet": "negative", "vader": None},
            probabilities={"roberta": [0.2, 0.3, 0.5], "bertweet": [0.1, 0.6, 0.3]},
        )
        for i in range(n)
    ]


class ScriptedLLMServer(FakeLLMServer):
    """Answers the i-th chat request with `answers[i]` (the last one once they run out), as JSON
    content with usage filled in: for tests that need a particular answer over real HTTP."""

    def __init__(self, answers: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers = list(answers)
        self._served = 0

    def respond(self, body: dict[str, Any], auth: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            answer = self.answers[min(self._served, len(self.answers) - 1)]
            self._served += 1
            self.counts["ok"] += 1
        content = answer if isinstance(answer, str) else json.dumps(answer)
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        usage = {"prompt_tokens": math.ceil(prompt_chars / 4) + 3 * len(body["messages"]),
                 "completion_tokens": max(1, math.ceil(len(content) / 4))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        payload = {
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        }
        return 200, {}, json.dumps(payload).encode()


class OracleLLMServer(FakeLLMServer):
    """A fake LLM that answers each text as `decide(text)` says: (label, confidence) (or a whole answer, a dict), or None to
    fail that request with an HTTP 500 (so, with `max_retries: 0`, the row comes back unanswered).
    The text is read from the prompt's `Text: "..."` line (one row a request). It says which texts
    it was asked about in `asked`."""

    def __init__(self, decide: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decide = decide
        self.asked: list[str] = []

    def respond(self, body: dict[str, Any], auth: str) -> tuple[int, dict[str, str], bytes]:
        # the row's prompt; after an invalid answer the client re-asks, and the last message is the re-ask
        users = [m["content"] for m in reversed(body["messages"]) if m["role"] == "user"]
        line = next((ln for u in users for ln in u.splitlines() if ln.startswith("Text: ")), None)
        if line is None:  # not a review (model selection...): the generic answer
            return super().respond(body, auth)
        text = json.loads(line[len("Text: "):])
        with self._lock:
            self.asked.append(text)
        decided = self.decide(text)
        if decided is None:
            return 500, {}, json.dumps({"error": {"message": "The server had an error"}}).encode()
        if isinstance(decided, dict):  # a whole answer (a multi-label task's set)
            content = json.dumps(decided)
        else:
            label, confidence = decided
            content = json.dumps({"label": label, "confidence": confidence, "reason": "It reads that way."})
        usage = {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}
        answer = {"id": "chatcmpl-oracle", "object": "chat.completion", "created": int(time.time()),
                  "model": body.get("model", "fake"), "usage": usage,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
        return 200, {}, json.dumps(answer).encode()
