"""The LLM layer: one client for every OpenAI-compatible server (or a local GGUF file), typed
answers, a call cache and hard budgets. See `client`, `structured`, `cache` and `cost`."""

from .backend import CallFailed, WireRequest
from .cache import CallCache, CallRecord, MemoryCallCache, SQLiteCallCache, cache_key
from .client import ClientStats, Completion, LLMClient, RetryPolicy
from .cost import Ledger, Price, estimate_tokens, price_for
from .structured import Answer, ask, extract_json, parse_answer

__all__ = [
    "Answer",
    "CallCache",
    "CallFailed",
    "CallRecord",
    "ClientStats",
    "Completion",
    "LLMClient",
    "Ledger",
    "MemoryCallCache",
    "Price",
    "RetryPolicy",
    "SQLiteCallCache",
    "WireRequest",
    "ask",
    "cache_key",
    "estimate_tokens",
    "extract_json",
    "parse_answer",
    "price_for",
]
