"""One LLM client for every provider: cache, budget, bounded concurrency and retries around a backend.

A call goes: cache lookup (a hit is free) -> a concurrency slot -> a budget reservation -> one attempt
-> settle the ledger to the real usage -> store in the cache. Rate limits (honouring Retry-After),
server errors, timeouts and dropped connections are retried by tenacity with exponential backoff and
jitter; the SDK's own retries are off so that every retry is counted in `stats` and can be tested.

The client is async; callers that are not (the pipeline calls `Reviewer.review` synchronously) use
`submit`/`run`, which run coroutines on the client's own event-loop thread. All of a client's async
calls must run on one event loop: use `submit` unless you own the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ..errors import LLMError
from ..task import LLMSpec
from .backend import CallFailed, ChatBackend, OpenAIBackend, RawCompletion, WireRequest
from .cache import CallCache, CallRecord
from .cost import Ledger, Reservation, max_prompt_tokens, price_for

log = logging.getLogger(__name__)
T = TypeVar("T")

FormatMode = Literal["json_schema", "json_object_schema", "json_object", "text"]
FORMAT_MODES: tuple[FormatMode, ...] = ("json_schema", "json_object_schema", "json_object", "text")


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff before retry n (0-based): `min(cap, base * 2**n)` scaled by a random factor in
    [0.5, 1]; a server's Retry-After (capped at `max_retry_after`) replaces it."""

    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after) + random.uniform(0, self.base / 2)
        return min(self.cap, self.base * 2**retry) * random.uniform(0.5, 1.0)


@dataclass
class ClientStats:
    """What happened on the wire, for logs, tests and benchmarks."""

    attempts: int = 0
    retries: int = 0
    cache_hits: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    waited_s: float = 0.0
    retry_after_waits: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


@dataclass(frozen=True)
class Completion:
    """A finished call. `cost_usd` is what this call cost now: 0 when it came from the cache."""

    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool


class _LoopThread:
    """An event loop on a daemon thread, so sync code can run the client's coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="labeljury-llm", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class LLMClient:
    """Calls one model (`spec`) through an OpenAI-compatible server, or a GGUF file when
    `spec.gguf` is set. `backend` replaces the transport (tests, other SDKs)."""

    def __init__(self, spec: LLMSpec, *, backend: ChatBackend | None = None, retry: RetryPolicy | None = None) -> None:
        if spec.max_tokens < 1:
            raise LLMError("llm.max_tokens must be at least 1: it caps each answer and prices the worst case")
        self.spec = spec
        self.price = price_for(spec)
        if not self.price.known:
            if spec.budget_usd is not None:
                raise LLMError(
                    f"llm.budget_usd is set but the price of model {spec.model!r} is unknown; "
                    "add llm.prices: {input: <$ per 1M tokens>, output: <$ per 1M tokens>}"
                )
            log.warning("the price of model %r is unknown: its calls are counted as $0 (set llm.prices)", spec.model)
        if backend is None:
            if spec.gguf:
                from .local import LlamaBackend

                backend = LlamaBackend(spec)
            else:
                backend = OpenAIBackend(spec)
        self.backend = backend
        self.model_id = backend.model_id
        self.retry = retry or RetryPolicy()
        self.format_mode: FormatMode = "json_schema"
        self.stats = ClientStats()
        self._semaphore = asyncio.Semaphore(max(1, spec.concurrency))
        self._loop: _LoopThread | None = None
        self._loop_lock = threading.Lock()
        self._warned_usage = False
        self._closed = False

    def __repr__(self) -> str:
        return f"LLMClient(model={self.spec.model!r}, base_url={self.spec.base_url!r})"

    # -- the sync facade -------------------------------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the client's loop thread; cancel the future to cancel it."""
        with self._loop_lock:
            if self._closed:
                coro.close()
                raise LLMError("this LLM client is closed; make a new one")
            if self._loop is None:
                self._loop = _LoopThread()
            return self._loop.submit(coro)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop thread and wait for its result."""
        return self.submit(coro).result()

    def close(self) -> None:
        """Close the connections and stop the loop thread; the client cannot be used after."""
        with self._loop_lock:
            loop, self._loop, self._closed = self._loop, None, True
        if loop is not None:
            loop.submit(self.backend.aclose()).result(timeout=10)
            loop.stop()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------------

    def degrade_format(self, rejected: FormatMode) -> FormatMode:
        """The server refused `rejected`: remember to use the next, more lenient mode."""
        following = FORMAT_MODES[min(FORMAT_MODES.index(rejected) + 1, len(FORMAT_MODES) - 1)]
        if FORMAT_MODES.index(following) > FORMAT_MODES.index(self.format_mode):
            log.info("%s does not accept response_format %s; using %s", self.model_id, rejected, following)
            self.format_mode = following
        return self.format_mode

    async def complete(
        self,
        request: WireRequest,
        *,
        key: str | None = None,
        cache: CallCache | None = None,
        ledger: Ledger | None = None,
    ) -> Completion:
        """One chat completion, from the cache when `key` is in `cache`. Raises `CallFailed` when
        retries did not help, `BudgetExceeded` when the ledger refuses, `LLMError` for settings
        the user must fix (a rejected key, an unknown model)."""
        if cache is not None and key is not None:
            record = cache.get(key)
            if record is not None:
                self.stats.cache_hits += 1
                if ledger is not None:
                    ledger.record_hit(record.cost_usd)
                return Completion(
                    record.content, record.finish_reason, record.prompt_tokens, record.completion_tokens, 0.0, True
                )
        bound = max_prompt_tokens(request.messages)
        completion = await self._with_retries(lambda: self._attempt(request, bound, ledger))
        if cache is not None and key is not None:
            cache.put(
                key,
                CallRecord(
                    model=self.model_id,
                    request=request.to_json(self.model_id),
                    content=completion.content,
                    finish_reason=completion.finish_reason,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    cost_usd=completion.cost_usd,
                    created_at=time.time(),
                ),
            )
        return completion

    async def _with_retries(self, attempt: Callable[[], Awaitable[Completion]]) -> Completion:
        """`attempt()`, retried by tenacity on retryable failures (`CallFailed.retryable`) up to
        `spec.max_retries` times, waiting as the `RetryPolicy` says (a server's Retry-After first)."""
        stats, policy = self.stats, self.retry

        def failed(outcome: Any) -> CallFailed | None:
            exc = outcome.exception() if outcome is not None and outcome.failed else None
            return exc if isinstance(exc, CallFailed) else None

        def wait(state: RetryCallState) -> float:
            failure = failed(state.outcome)
            return policy.delay(state.attempt_number - 1, failure.retry_after if failure else None)

        def before_sleep(state: RetryCallState) -> None:
            failure = failed(state.outcome)
            wait_s = state.upcoming_sleep
            stats.retries += 1
            stats.waited_s += wait_s
            stats.retry_after_waits += failure is not None and failure.retry_after is not None
            log.info("LLM call failed (%s); retry %d of %d in %.2fs", failure.reason if failure else "?",
                     state.attempt_number, self.spec.max_retries, wait_s)

        async def counted() -> Completion:
            try:
                return await attempt()
            except CallFailed as failure:
                stats.errors[failure.reason] += 1
                raise

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.spec.max_retries + 1),
            retry=retry_if_exception(lambda e: isinstance(e, CallFailed) and e.retryable),
            wait=wait, before_sleep=before_sleep, reraise=True)
        return await retrying(counted)

    async def _attempt(self, request: WireRequest, bound: int, ledger: Ledger | None) -> Completion:
        async with self._semaphore:
            reservation = await ledger.reserve(self.price, bound, request.max_tokens) if ledger is not None else None
            self.stats.attempts += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                raw = await self.backend.complete(request, self.spec.timeout)
            except CallFailed as failure:
                self._unreserve(ledger, reservation, maybe_billed=failure.reason == "timeout")
                raise
            except LLMError:  # a settings error (rejected key, unknown model): not billed
                self._unreserve(ledger, reservation, maybe_billed=False)
                raise
            except BaseException:  # cancelled mid-call: the request may have been billed
                self._unreserve(ledger, reservation, maybe_billed=True)
                raise
            finally:
                self.stats.in_flight -= 1
        prompt_tokens, completion_tokens = self._usage(raw, request, bound)
        if ledger is not None and reservation is not None:
            cost = ledger.settle(reservation, prompt_tokens, completion_tokens)
        else:
            cost = self.price.cost_usd(prompt_tokens, completion_tokens)
        return Completion(raw.content, raw.finish_reason, prompt_tokens, completion_tokens, cost, False)

    @staticmethod
    def _unreserve(ledger: Ledger | None, reservation: Reservation | None, *, maybe_billed: bool) -> None:
        # A call that timed out or was cancelled may still be billed by the provider: count its
        # worst case, so that the cap holds whatever the provider decides.
        if ledger is None or reservation is None:
            return
        if maybe_billed:
            ledger.settle(reservation, reservation.tokens_in, reservation.tokens_out)
        else:
            ledger.release(reservation)

    def _usage(self, raw: RawCompletion, request: WireRequest, bound: int) -> tuple[int, int]:
        """The server's usage; when it reports none, upper bounds (never under-count spending)."""
        if raw.prompt_tokens is not None and raw.completion_tokens is not None:
            return raw.prompt_tokens, raw.completion_tokens
        if not self._warned_usage:
            log.warning("%s reported no token usage: counting upper bounds", self.model_id)
            self._warned_usage = True
        completion = min(request.max_tokens, len(raw.content.encode("utf-8")))
        return raw.prompt_tokens if raw.prompt_tokens is not None else bound, completion
