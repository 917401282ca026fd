"""Typed answers: ask for JSON matching a pydantic model, validate it, re-ask once, else abstain.

The schema is sent the strictest way the server accepts: `response_format` `json_schema`, then
`json_object` carrying the schema (llama.cpp, Together, Fireworks constrain decoding with it), then
plain `json_object`, then plain text; each step down is remembered on the client, so a server that
rejects a mode is asked that way once. In the lenient modes the schema is also written into the
system message (it costs tokens, so only there). An answer that does not validate is re-asked once
with the validation error; after that, and after any failure, the answer abstains: `value` is None
and `reason` says why. A failure never becomes a label.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import BudgetExceeded
from .backend import CallFailed, WireRequest
from .cache import CallCache, cache_key
from .client import Completion, FormatMode, LLMClient
from .cost import Ledger

T = TypeVar("T", bound=BaseModel)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A validated answer, or none and the `reason` why (`invalid-answer`, `budget`, `timeout`,
    `http-500`...). Costs and tokens add up every call made for it, re-asks included."""

    value: T | None
    reason: str | None = None
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0  # calls paid for; cache hits are not
    cached: bool = False  # every call came from the cache
    raw: str | None = None  # the last answer text (to salvage the valid part of a batch answer)


@functools.lru_cache(maxsize=64)
def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form OpenAI's strict structured outputs require: every
    object closed (`additionalProperties: false`) and every property required. Cached: do not
    modify the result."""
    schema = copy.deepcopy(model.model_json_schema())

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for child in node.values():
                close(child)
        elif isinstance(node, list):
            for child in node:
                close(child)

    close(schema)
    return schema


def _without_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def extract_json(text: str) -> Any:
    """The JSON value in an answer: the whole text, a fenced block, or the first object or array
    embedded in prose. Raw newlines inside strings (which small models emit) are accepted. Raises
    ValueError when there is none."""
    decoder = json.JSONDecoder(strict=False)
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    for candidate in candidates:
        try:
            return decoder.decode(candidate)
        except json.JSONDecodeError:
            pass
    for match in re.finditer(r"[\[{]", text):
        try:
            return decoder.raw_decode(text, match.start())[0]
        except json.JSONDecodeError:
            continue
    raise ValueError("the answer contains no JSON object")


def _feedback(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "answer"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_answer(text: str, schema: type[T]) -> tuple[T | None, str | None]:
    """(value, None) when `text` holds valid JSON for `schema`, else (None, what is wrong)."""
    try:
        data = extract_json(text)
    except ValueError as err:
        return None, str(err)
    try:
        return schema.model_validate(data), None
    except ValidationError as err:
        return None, _feedback(err)


def _wire(
    messages: list[dict[str, str]],
    mode: FormatMode,
    name: str,
    schema: dict[str, Any],
    max_tokens: int,
    temperature: float,
) -> WireRequest:
    if mode == "json_schema":
        return WireRequest(
            messages,
            {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
            max_tokens,
            temperature,
        )
    described = json.dumps(_without_titles(schema), separators=(",", ":"), ensure_ascii=False)
    instruction = f"Reply with only a JSON object that follows this JSON schema: {described}"
    if messages and messages[0]["role"] == "system":
        messages = [{"role": "system", "content": f"{messages[0]['content']}\n\n{instruction}"}, *messages[1:]]
    else:
        messages = [{"role": "system", "content": instruction}, *messages]
    formats: dict[FormatMode, dict[str, Any] | None] = {
        "json_object_schema": {"type": "json_object", "schema": schema},
        "json_object": {"type": "json_object"},
        "text": None,
    }
    return WireRequest(messages, formats[mode], max_tokens, temperature)


async def _complete(
    client: LLMClient,
    messages: list[dict[str, str]],
    schema: type[BaseModel],
    max_tokens: int,
    cache: CallCache | None,
    ledger: Ledger | None,
) -> Completion:
    json_schema = strict_schema(schema)
    name = re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64]
    named = {"name": name, "schema": json_schema}
    key = cache_key(client.model_id, messages, named, client.spec.temperature, max_tokens)
    while True:
        mode = client.format_mode
        request = _wire(messages, mode, name, json_schema, max_tokens, client.spec.temperature)
        try:
            return await client.complete(request, key=key, cache=cache, ledger=ledger)
        except CallFailed as failure:
            if failure.reason != "format-rejected" or mode == "text":
                raise
            client.degrade_format(mode)


async def ask(
    client: LLMClient,
    messages: Sequence[dict[str, str]],
    schema: type[T],
    *,
    cache: CallCache | None = None,
    ledger: Ledger | None = None,
    max_tokens: int | None = None,
    reask: bool = True,
) -> Answer[T]:
    """Ask `client` for an answer that validates as `schema`. With `reask`, an invalid answer is
    asked again once with the validation error appended; then the answer abstains."""
    convo = [dict(m) for m in messages]
    limit = max_tokens or client.spec.max_tokens
    cost, tokens_in, tokens_out, calls, all_cached = 0.0, 0, 0, 0, True
    raw: str | None = None
    for _ in range(2 if reask else 1):
        try:
            done = await _complete(client, convo, schema, limit, cache, ledger)
        except BudgetExceeded:
            return Answer(None, "budget", cost, tokens_in, tokens_out, calls, False, raw)
        except CallFailed as failure:
            return Answer(None, failure.reason, cost, tokens_in, tokens_out, calls, False, raw)
        cost += done.cost_usd
        tokens_in += done.prompt_tokens
        tokens_out += done.completion_tokens
        calls += not done.cached
        all_cached = all_cached and done.cached
        raw = done.content
        value, problem = parse_answer(done.content, schema)
        if value is not None:
            return Answer(value, None, cost, tokens_in, tokens_out, calls, all_cached, raw)
        if done.finish_reason == "length":
            problem = f"{problem} (the answer was cut off: keep it shorter)"
        convo = [
            *convo,
            {"role": "assistant", "content": done.content[:1000]},
            {"role": "user", "content": f"That answer is invalid: {problem}. Reply again with only corrected JSON."},
        ]
    return Answer(None, "invalid-answer", cost, tokens_in, tokens_out, calls, all_cached, raw)
