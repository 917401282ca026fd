"""What LLM calls cost, and a ledger that keeps spending under hard caps.

Prices are list prices in US dollars per million tokens. A cap must hold even with many calls in
flight, so before each call the ledger *reserves* that call's worst case (an upper bound of its prompt
tokens plus `max_tokens` of output) and refuses it when the reservation could cross a cap; after the
call it settles to the tokens the API reports. Money is counted in integer nano-dollars so that
summing thousands of tiny costs never drifts past a cap by float rounding.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import BudgetExceeded, LLMError
from ..task import LLMSpec
from .journal import SpendJournal

log = logging.getLogger(__name__)

# $ per 1M tokens (input, output), provider list prices (standard tier, no cached-input discount),
# checked 2025-10. A dated snapshot ("gpt-4o-mini-2024-07-18") or a router prefix ("openai/gpt-4o")
# matches its base name. Override or extend with the task's `llm.prices`.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "deepseek-chat": (0.28, 0.42),
}

CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English; tiktoken is not a dependency
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators a chat template adds per message
REQUEST_OVERHEAD_TOKENS = 16  # the template's fixed prefix/suffix (assistant priming, BOS...)
_NANOS_PER_USD = 1_000_000_000


@dataclass(frozen=True)
class Price:
    """Dollars per million input and output tokens. `known` is False when the model is not in the
    table and no override was given: its calls are counted as $0, so a dollar cap cannot hold."""

    input: float
    output: float
    known: bool = True

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return _to_nanos(self, prompt_tokens, completion_tokens) / _NANOS_PER_USD


def _to_nanos(price: Price, prompt_tokens: int, completion_tokens: int) -> int:
    # $/1M tokens * tokens = micro-dollars; * 1000 = nano-dollars. Round up: never under-count.
    nanos = (prompt_tokens * price.input + completion_tokens * price.output) * 1000
    return max(0, math.ceil(nanos - 1e-6))


def is_local(spec: LLMSpec) -> bool:
    """A GGUF file or a server on this machine: no one bills for it."""
    if spec.gguf:
        return True
    host = urlparse(spec.base_url or "").hostname or ""
    return host in {"localhost", "::1", "0.0.0.0"} or host.startswith("127.")


def price_for(spec: LLMSpec) -> Price:
    """The price of `spec.model`: `spec.prices` if given, else the table, else $0 (local servers
    are free; an unknown hosted model is flagged `known=False`)."""
    if spec.prices is not None:
        missing = {"input", "output"} - set(spec.prices)
        if missing:
            raise LLMError(
                f"llm.prices needs both `input` and `output` ($ per 1M tokens); `{sorted(missing)[0]}` is missing"
            )
        return Price(float(spec.prices["input"]), float(spec.prices["output"]))
    if is_local(spec):
        return Price(0.0, 0.0)
    name = spec.model.rsplit("/", 1)[-1].lower()
    matches = [m for m in PRICES if name == m or name.startswith(m + "-")]
    if matches:
        return Price(*PRICES[max(matches, key=len)])
    return Price(0.0, 0.0, known=False)


def estimate_tokens(text: str) -> int:
    """A planning estimate: ~4 characters per token (English). It can be off by 2x on code or
    non-Latin scripts, so it is used for `plan`, never to enforce a cap."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def max_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """An upper bound of a chat request's prompt tokens: byte-level BPE tokenizers never produce
    more tokens than UTF-8 bytes, plus the chat template's per-message overhead."""
    body = sum(len(m.get("content", "").encode("utf-8")) for m in messages)
    return body + MESSAGE_OVERHEAD_TOKENS * len(messages) + REQUEST_OVERHEAD_TOKENS


@dataclass(frozen=True)
class Reservation:
    """A call's worst case, held against the caps while the call is in flight (`entry`: its line in
    the spend journal, if there is one)."""

    price: Price
    tokens_in: int
    tokens_out: int
    nanos: int
    entry: int | None = None


class Ledger:
    """Hard caps on dollars and tokens, safe with many calls in flight (and across threads).

    `spent_usd`/`spent_tokens` let a resumed run start from what it already paid; with a `journal`
    (the run store's), it starts from the journal and writes every reservation there before the call
    is made, so the caps hold across restarts and kills (`journal` module). Once a call is refused
    with nothing else in flight the ledger is `exhausted` and refuses every later call, so the rows
    after the cap are the ones left unreviewed, in order.
    """

    def __init__(
        self,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        *,
        spent_usd: float = 0.0,
        spent_tokens: int = 0,
        journal: SpendJournal | None = None,
    ) -> None:
        self.journal = journal
        if journal is not None:
            nanos, tokens = journal.totals()
            spent_usd, spent_tokens = spent_usd + nanos / _NANOS_PER_USD, spent_tokens + tokens
        self.budget_usd = budget_usd
        self.budget_tokens = budget_tokens
        self._cap_nanos = None if budget_usd is None else math.floor(budget_usd * _NANOS_PER_USD + 1e-6)
        self._spent_nanos = math.ceil(spent_usd * _NANOS_PER_USD - 1e-6)
        self._spent_tokens = spent_tokens
        self._held_nanos = 0
        self._held_tokens = 0
        self._in_flight = 0
        self.calls = 0
        self.hits = 0
        self._saved_nanos = 0
        self.exhausted = False
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @classmethod
    def for_spec(cls, spec: LLMSpec, *, spent_usd: float = 0.0, spent_tokens: int = 0,
                 journal: SpendJournal | None = None) -> Ledger:
        return cls(spec.budget_usd, spec.budget_tokens, spent_usd=spent_usd, spent_tokens=spent_tokens,
                   journal=journal)

    @property
    def spent_usd(self) -> float:
        return self._spent_nanos / _NANOS_PER_USD

    @property
    def spent_tokens(self) -> int:
        return self._spent_tokens

    @property
    def saved_usd(self) -> float:
        """What the cache hits would have cost."""
        return self._saved_nanos / _NANOS_PER_USD

    def _fits(self, nanos: int, tokens: int, *, with_held: bool) -> bool:
        held_nanos, held_tokens = (self._held_nanos, self._held_tokens) if with_held else (0, 0)
        if self._cap_nanos is not None and self._spent_nanos + held_nanos + nanos > self._cap_nanos:
            return False
        return self.budget_tokens is None or self._spent_tokens + held_tokens + tokens <= self.budget_tokens

    async def reserve(self, price: Price, tokens_in: int, tokens_out: int) -> Reservation:
        """Hold a call's worst case; wait while other calls' reservations are what stands in the
        way; raise `BudgetExceeded` when even with nothing in flight it would cross a cap."""
        nanos = _to_nanos(price, tokens_in, tokens_out)
        while True:
            with self._lock:
                tokens = tokens_in + tokens_out
                if not self.exhausted and self._fits(nanos, tokens, with_held=True):
                    # on disk before the call is made: a kill now still counts it at its worst case
                    entry = self.journal.reserve(nanos, tokens) if self.journal is not None else None
                    self._held_nanos += nanos
                    self._held_tokens += tokens
                    self._in_flight += 1
                    return Reservation(price, tokens_in, tokens_out, nanos, entry)
                if self.exhausted or self._in_flight == 0 or not self._fits(nanos, tokens, with_held=False):
                    if not self.exhausted:
                        log.info("LLM budget exhausted: %s", self.summary())
                    self.exhausted = True
                    raise BudgetExceeded(
                        f"the LLM budget ({self._caps()}) would be exceeded by the next call; "
                        "raise llm.budget_usd / llm.budget_tokens to review more rows"
                    )
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            await waiter

    def settle(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int) -> float:
        """Replace a reservation by the call's real usage; returns the call's cost in dollars."""
        nanos = _to_nanos(reservation.price, prompt_tokens, completion_tokens)
        if prompt_tokens + completion_tokens > reservation.tokens_in + reservation.tokens_out:
            log.warning(
                "an LLM call used %d tokens, more than its reserved worst case %d",
                prompt_tokens + completion_tokens,
                reservation.tokens_in + reservation.tokens_out,
            )
        with self._lock:
            if self.journal is not None and reservation.entry is not None:
                self.journal.settle(reservation.entry, nanos, prompt_tokens + completion_tokens)
            self._spent_nanos += nanos
            self._spent_tokens += prompt_tokens + completion_tokens
            self.calls += 1
            self._unhold(reservation)
        return nanos / _NANOS_PER_USD

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was not billed (refused, rate-limited, server error)."""
        with self._lock:
            if self.journal is not None and reservation.entry is not None:
                self.journal.release(reservation.entry)
            self._unhold(reservation)

    def record_hit(self, cost_usd: float) -> None:
        """A call served from the cache: $0 now, `cost_usd` saved."""
        with self._lock:
            self.hits += 1
            self._saved_nanos += round(cost_usd * _NANOS_PER_USD)

    def _unhold(self, reservation: Reservation) -> None:
        self._held_nanos -= reservation.nanos
        self._held_tokens -= reservation.tokens_in + reservation.tokens_out
        self._in_flight -= 1
        waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)

    def _caps(self) -> str:
        caps = []
        if self.budget_usd is not None:
            caps.append(f"${self.budget_usd:g}")
        if self.budget_tokens is not None:
            caps.append(f"{self.budget_tokens} tokens")
        return " / ".join(caps)

    def summary(self) -> dict[str, float | int | bool]:
        """Spending so far, for logs and the run report."""
        return {
            "spent_usd": self.spent_usd,
            "spent_tokens": self.spent_tokens,
            "calls": self.calls,
            "cache_hits": self.hits,
            "saved_usd": self.saved_usd,
            "exhausted": self.exhausted,
        }


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
