"""Prices, the budget ledger and the plan estimate."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import pytest

from labeljury.errors import BudgetExceeded, LLMError
from labeljury.llm import Ledger, LLMClient, Price, estimate_tokens, price_for
from labeljury.llm.cost import max_prompt_tokens
from labeljury.review.llm import estimate_review_cost
from labeljury.task import Example, LLMSpec

sys.path.insert(0, str(Path(__file__).parent))  # llm_fakes, whether or not tests/ is a package
from llm_fakes import make_spec, make_task


def test_prices_match_models_snapshots_and_router_prefixes():
    assert price_for(LLMSpec(model="gpt-4o-mini")) == Price(0.15, 0.60)
    assert price_for(LLMSpec(model="gpt-4o-mini-2024-07-18")) == Price(0.15, 0.60)
    assert price_for(LLMSpec(model="gpt-4o-2024-08-06")) == Price(2.50, 10.00)
    assert price_for(LLMSpec(model="openai/gpt-4.1-nano")) == Price(0.10, 0.40)
    assert price_for(LLMSpec(model="gpt-3.5-turbo")) == Price(0.50, 1.50)


def test_local_servers_are_free_and_unknown_models_are_flagged():
    assert price_for(LLMSpec(model="anything", base_url="http://localhost:8000/v1")) == Price(0.0, 0.0)
    assert price_for(LLMSpec(model="x", gguf="/models/x.gguf")) == Price(0.0, 0.0)
    unknown = price_for(LLMSpec(model="mystery-model", base_url="https://api.example.com/v1"))
    assert unknown.known is False and unknown.cost_usd(1000, 1000) == 0


def test_prices_can_be_overridden():
    spec = LLMSpec(model="gpt-4o", prices={"input": 1.0, "output": 3.0})
    assert price_for(spec).cost_usd(1_000_000, 1_000_000) == pytest.approx(4.0)
    with pytest.raises(LLMError, match="output"):
        price_for(LLMSpec(model="gpt-4o", prices={"input": 1.0}))


def test_a_dollar_cap_on_a_model_without_a_price_is_refused():
    spec = LLMSpec(model="mystery-model", base_url="https://api.example.com/v1", api_key_env=None, budget_usd=1.0)
    with pytest.raises(LLMError, match=r"llm\.prices"):
        LLMClient(spec)


def test_token_estimates():
    assert estimate_tokens("a" * 400) == 100
    messages = [{"role": "user", "content": "héllo wörld"}]
    assert max_prompt_tokens(messages) >= len("héllo wörld".encode()) > estimate_tokens("héllo wörld")


def test_ledger_holds_the_cap_with_many_calls_in_flight():
    price = Price(1000.0, 1000.0)  # $0.001 a token
    ledger = Ledger(budget_usd=0.5)
    rng = random.Random(0)
    refused = 0

    async def call() -> None:
        nonlocal refused
        try:
            reservation = await ledger.reserve(price, 60, 40)  # worst case $0.10
        except BudgetExceeded:
            refused += 1
            return
        await asyncio.sleep(rng.random() / 100)
        ledger.settle(reservation, rng.randint(20, 60), rng.randint(5, 40))

    async def main() -> None:
        await asyncio.gather(*(call() for _ in range(50)))

    asyncio.run(main())
    assert ledger.spent_usd <= 0.5
    assert 0.5 - ledger.spent_usd < 0.10  # it spent the budget up to the last affordable worst case
    assert refused > 0 and ledger.exhausted and ledger.calls + refused == 50


def test_token_cap_and_resumed_spending():
    ledger = Ledger(budget_tokens=1000, spent_tokens=900)

    async def main() -> None:
        with pytest.raises(BudgetExceeded, match="1000 tokens"):
            await ledger.reserve(Price(0, 0), 80, 30)

    asyncio.run(main())
    assert ledger.exhausted and ledger.spent_tokens == 900


def test_timed_out_calls_count_their_worst_case():
    ledger = Ledger(budget_usd=1.0)
    price = Price(1000.0, 1000.0)

    async def main() -> None:
        reservation = await ledger.reserve(price, 100, 50)
        ledger.settle(reservation, reservation.tokens_in, reservation.tokens_out)

    asyncio.run(main())
    assert ledger.spent_usd == pytest.approx(0.15)


def test_review_cost_estimate_counts_shared_instructions_once_per_request():
    spec = make_spec("https://api.openai.com/v1")
    examples = [Example(text=f"example {i}", label="positive") for i in range(3)]
    single = estimate_review_cost(make_task(spec, examples=examples), 1000, 120)
    batched = estimate_review_cost(make_task(spec.model_copy(update={"batch_size": 8}), examples=examples), 1000, 120)
    assert single["calls"] == 1000 and batched["calls"] == 125
    assert batched["tokens_in"] < single["tokens_in"] and batched["tokens_out"] == single["tokens_out"]
    assert single["usd"] == pytest.approx(Price(0.15, 0.60).cost_usd(single["tokens_in"], single["tokens_out"]))
    assert single["tokens_in"] > 1000 * 120 / 4  # the text and the instructions
    assert estimate_review_cost(make_task(spec), 0, 100)["usd"] == 0
