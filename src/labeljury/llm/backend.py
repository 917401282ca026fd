"""The transport under `LLMClient`: one chat-completion attempt, no retries, no accounting.

Two backends implement `ChatBackend`: `OpenAIBackend` (any OpenAI-compatible HTTP server, through the
`openai` SDK) and `local.LlamaBackend` (a GGUF file in this process). Both turn every failure into a
`CallFailed` with a machine-readable `reason`, so the client can decide what to retry and the
reviewer can say why a row was not answered.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from ..errors import LLMError
from ..task import LLMSpec

NO_KEY = "no-key-needed"  # a placeholder for local servers: the SDK refuses an empty key
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_*\-]{8,}")  # OpenAI-style keys, masked echoes included


@dataclass(frozen=True)
class WireRequest:
    """What is sent: messages, the `response_format` (None: plain text) and sampling limits."""

    messages: list[dict[str, str]]
    response_format: dict[str, Any] | None
    max_tokens: int
    temperature: float

    def to_json(self, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": self.messages,
            "response_format": self.response_format,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class RawCompletion:
    """The answer text and the usage the server reported (None when it reported none)."""

    content: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class CallFailed(LLMError):
    """One attempt (or, raised by the client, all attempts) failed.

    `reason` is machine-readable: `timeout`, `connection`, `http-<status>`, `format-rejected` (the
    server does not accept this `response_format`), `bad-response`, `context-overflow`.
    """

    def __init__(self, reason: str, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(f"LLM call failed ({reason}): {message}")
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class ChatBackend(Protocol):
    model_id: str  # what identifies the model in cache keys

    async def complete(self, request: WireRequest, timeout: float) -> RawCompletion: ...

    async def aclose(self) -> None: ...


KEY_HOSTS_ENV = "LABELJURY_KEY_HOSTS"  # the hosts (comma-separated) the user lets receive an API key
DEFAULT_HOST = "api.openai.com"  # where the openai SDK sends a request without llm.base_url
_ANNOUNCED: set[tuple[str, str]] = set()


def key_host(spec: LLMSpec) -> str:
    """The host (with its port, if the URL names one) that would receive the API key."""
    if not spec.base_url:
        return DEFAULT_HOST
    url = urlparse(spec.base_url)
    return (url.hostname or "") + (f":{url.port}" if url.port else "")


def allowed_key_hosts() -> set[str]:
    return {h.strip().lower() for h in os.environ.get(KEY_HOSTS_ENV, "").split(",") if h.strip()}


def read_api_key(spec: LLMSpec) -> str:
    """The key from the environment variable the task names; never from the task file itself.

    A task file is often shared, so by itself it cannot send a secret anywhere: a key goes to
    OpenAI's own API (no `base_url`), or to a host the user allowed outside the task file (the
    environment variable LABELJURY_KEY_HOSTS, or `--allow-key-host` on the command line). Which
    variable goes to which host is printed once, before the first call."""
    if spec.api_key_env is None:
        return NO_KEY
    host = key_host(spec)
    allowed = allowed_key_hosts()
    if host != DEFAULT_HOST and host.lower() not in allowed and host.split(":")[0].lower() not in allowed:
        raise LLMError(
            f"the task sends the API key in ${spec.api_key_env} to {host}, which you have not allowed: a task file "
            f"alone may only send a key to {DEFAULT_HOST}; if {host} is yours, allow it with "
            f"{KEY_HOSTS_ENV}={host} in your environment or --allow-key-host {host}"
        )
    key = os.environ.get(spec.api_key_env, "").strip()
    if not key:
        raise LLMError(
            f"the LLM API key is missing: set the environment variable {spec.api_key_env} "
            "(named by llm.api_key_env), or set api_key_env: null for a local server that needs no key"
        )
    if (spec.api_key_env, host) not in _ANNOUNCED:
        _ANNOUNCED.add((spec.api_key_env, host))
        print(f"labeljury: sending the API key in ${spec.api_key_env} to {host}", file=sys.stderr)
    return key


def parse_retry_after(headers: Any) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, else `retry-after` (seconds or a date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    """Any OpenAI-compatible `/chat/completions` endpoint via `AsyncOpenAI`, with the SDK's own
    retries off (`LLMClient` retries, observably). The key is handed to the SDK and otherwise only
    used to scrub it from server error messages."""

    def __init__(self, spec: LLMSpec) -> None:
        import openai

        self._openai = openai
        self.model_id = spec.model
        self._spec = spec
        self._key = read_api_key(spec)
        self._sdk = openai.AsyncOpenAI(api_key=self._key, base_url=spec.base_url, max_retries=0, timeout=spec.timeout)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_id!r}, base_url={self._spec.base_url!r})"

    def _scrub(self, text: str) -> str:
        """A server message made safe to show: one line, no key (not even a masked echo of one)."""
        if self._key != NO_KEY:
            text = str(text).replace(self._key, "***")
        return _KEY_LIKE.sub("***", " ".join(str(text).split()))[:300]

    async def complete(self, request: WireRequest, timeout: float) -> RawCompletion:
        openai = self._openai
        kwargs: dict[str, Any] = {}
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        try:
            async with asyncio.timeout(timeout):
                response = await self._sdk.chat.completions.create(
                    model=self._spec.model,
                    messages=request.messages,  # type: ignore[arg-type]
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    timeout=timeout,
                    **kwargs,
                )
        except (TimeoutError, openai.APITimeoutError):
            raise CallFailed("timeout", f"no answer within {timeout:g}s", retryable=True) from None
        except openai.APIConnectionError:
            where = self._spec.base_url or "the OpenAI API"
            raise CallFailed("connection", f"cannot reach {where}", retryable=True) from None
        except openai.APIStatusError as err:
            raise self._status_error(err, request) from None
        except openai.APIError as err:
            raise CallFailed("bad-response", self._scrub(err.message), retryable=True) from None
        choices = getattr(response, "choices", None)
        if not choices:
            raise CallFailed("bad-response", "the server's answer has no choices", retryable=True)
        usage = getattr(response, "usage", None)
        return RawCompletion(
            content=choices[0].message.content or "",
            finish_reason=choices[0].finish_reason,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
        )

    def _status_error(self, err: Any, request: WireRequest) -> LLMError:
        status = err.status_code
        where = self._spec.base_url or "the OpenAI API"
        if status == 401:
            fix = (
                f"check the key in {self._spec.api_key_env}"
                if self._spec.api_key_env
                else "set llm.api_key_env to the variable holding the key"
            )
            return LLMError(f"the LLM server at {where} rejected the API key (HTTP 401); {fix}")
        if status == 403:
            return LLMError(f"the LLM server at {where} denied access to model {self._spec.model!r} (HTTP 403)")
        if status == 404:
            return LLMError(
                f"model {self._spec.model!r} or its endpoint was not found at {where} (HTTP 404); "
                "check llm.model and llm.base_url"
            )
        message = self._scrub(err.message)
        lowered = str(err.message).lower()
        if (
            request.response_format is not None
            and status != 429
            and any(word in lowered for word in ("response_format", "json_schema", "json_object"))
        ):
            return CallFailed("format-rejected", message, retryable=False)
        retry_after = parse_retry_after(err.response.headers) if err.response is not None else None
        return CallFailed(
            f"http-{status}", message, retryable=status in RETRYABLE_STATUS or status >= 500, retry_after=retry_after
        )

    async def aclose(self) -> None:
        await self._sdk.close()
