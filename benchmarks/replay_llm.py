"""A real LLM's recorded answers, replayed: a local OpenAI-compatible server (loopback only) that answers
each review request with the label a real model gave that text (../shared/data/llm-answers: gpt-3.5-turbo
and gpt-4, zero-shot and 12-shot). labeljury's own `llm` reviewer and client talk to it as to any server,
so the whole path (prompt, structured answer, retries, cache, cost, weighing) runs as with the real API.

    with ReplayLLMServer({"some text": "offensive", ...}) as server:
        task: llm: {model: gpt-3.5-turbo, base_url: server.base_url, api_key_env: null}

The text is read from the prompt's `Text: "..."` line (one row a request: `llm.batch_size: 1`), matched
after stripping surrounding spaces (as the recorded texts were). No confidence was recorded: every answer
states `stated_confidence`. A text with no recorded answer gets an HTTP 500 (counted in `missing`).
Requests that are not reviews (e.g. choosing specialists) are refused with HTTP 400: give the task an
explicit specialist list.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ReplayLLMServer:
    def __init__(self, answers: dict[str, str], stated_confidence: float = 0.9) -> None:
        self.answers = {t.strip(): a for t, a in answers.items()}
        self.stated_confidence = stated_confidence
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ReplayLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def respond(self, body: dict[str, Any]) -> tuple[int, bytes]:
        users = [m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"]
        line = next((ln for u in users for ln in str(u).splitlines() if ln.startswith("Text: ")), None)
        if line is None:
            with self._lock:
                self.counts["not-a-review"] += 1
            return 400, json.dumps({"error": {"message": "this replay server only answers reviews"}}).encode()
        text = json.loads(line[len("Text: "):]).strip()
        label = self.answers.get(text)
        with self._lock:
            self.counts["answered" if label is not None else "missing"] += 1
        if label is None:
            return 500, json.dumps({"error": {"message": "no recorded answer for this text"}}).encode()
        content = json.dumps({"label": label, "confidence": self.stated_confidence, "reason": "Recorded answer."})
        usage = {"prompt_tokens": 60, "completion_tokens": 12, "total_tokens": 72}
        answer = {"id": "chatcmpl-replay", "object": "chat.completion", "created": int(time.time()),
                  "model": body.get("model", "replay"), "usage": usage,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                               "finish_reason": "stop"}]}
        return 200, json.dumps(answer).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                status, payload = server.respond(json.loads(self.rfile.read(length) or b"{}"))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
