"""A GGUF model in this process (llama-cpp-python), behind the same `ChatBackend` as HTTP servers.

Structured answers are grammar-constrained: a `json_schema` response format is compiled into a
llama.cpp grammar (`LlamaGrammar.from_json_schema`), so the model can only emit JSON of that shape.
Free-text fields get a `maxLength` in the grammar, because a small model otherwise rambles inside a
string until `max_tokens` cuts the JSON off.
The model is not thread-safe, so calls run one at a time on a worker thread; a running generation
cannot be interrupted, so `timeout` is not enforced here.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from ..errors import LLMError
from ..task import LLMSpec
from .backend import CallFailed, RawCompletion, WireRequest


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise LLMError(
            "llm.gguf needs llama-cpp-python, which is not installed: pip install 'labeljury[llama]'"
        ) from None
    return llama_cpp


class LlamaBackend:
    """Runs `spec.gguf` with llama.cpp. `n_ctx` bounds prompt plus answer, in tokens."""

    def __init__(
        self, spec: LLMSpec, *, n_ctx: int = 4096, n_threads: int | None = None, max_string_chars: int = 200
    ) -> None:
        llama_cpp = _import_llama()
        if not spec.gguf:
            raise LLMError("the local LLM backend needs llm.gguf: the path of a .gguf model file")
        path = Path(spec.gguf).expanduser()
        if not path.is_file():
            raise LLMError(f"llm.gguf {str(path)!r} does not exist; give the path of a .gguf model file")
        try:
            self._llama = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        except (ValueError, RuntimeError) as err:
            raise LLMError(f"llm.gguf {str(path)!r} cannot be loaded by llama.cpp ({err})") from None
        self._grammar_type = llama_cpp.LlamaGrammar
        self._grammars: dict[str, Any] = {}
        self._max_string_chars = max_string_chars
        self._lock = threading.Lock()
        self.model_id = f"gguf:{path.name}"

    def _bounded(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self._bounded(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: self._bounded(v) for k, v in node.items()}
        if out.get("type") == "string" and "enum" not in out and "maxLength" not in out:
            out["maxLength"] = self._max_string_chars
        return out

    def _grammar(self, schema: dict[str, Any]) -> Any:
        text = json.dumps(self._bounded(schema), sort_keys=True)
        if text not in self._grammars:
            self._grammars[text] = self._grammar_type.from_json_schema(text, verbose=False)
        return self._grammars[text]

    def _run(self, request: WireRequest) -> RawCompletion:
        kwargs: dict[str, Any] = {}
        response_format = request.response_format
        if response_format is not None and response_format["type"] == "json_schema":
            kwargs["grammar"] = self._grammar(response_format["json_schema"]["schema"])
        elif response_format is not None:
            kwargs["response_format"] = response_format
        with self._lock:
            try:
                out = self._llama.create_chat_completion(
                    messages=request.messages,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    **kwargs,
                )
            except ValueError as err:
                if "context" in str(err).lower():
                    raise CallFailed("context-overflow", str(err), retryable=False) from None
                raise CallFailed("bad-response", str(err), retryable=False) from None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return RawCompletion(
            content=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )

    async def complete(self, request: WireRequest, timeout: float) -> RawCompletion:
        return await asyncio.to_thread(self._run, request)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._llama.close)
