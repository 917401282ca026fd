"""LLM review throughput vs concurrency, and tokens per reviewed row vs batch size.

Runs against the tests' loopback OpenAI-compatible server answering after a fixed latency, so it
measures the client (concurrency, overheads), not a model. Tokens are the fake server's usage
(~4 characters a token), so compare batch sizes with each other, not with a real tokenizer.

    python benchmarks/bench_llm_review.py [--latency 0.2] [--rows-per-slot 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llm_fakes import FakeLLMServer, make_items, make_spec, make_task

from labeljury.llm import LLMClient
from labeljury.llm.cost import price_for
from labeljury.review.llm import LLMReviewer
from labeljury.task import LLMSpec


def throughput(server: FakeLLMServer, concurrency: int, rows: int) -> float:
    client = LLMClient(make_spec(server.base_url, concurrency=concurrency, timeout=30))
    try:
        reviewer = LLMReviewer(make_task(client.spec), client)
        started = time.perf_counter()
        results = list(reviewer.review(make_items(rows)))
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    assert all(r.label is not None for r in results)
    return rows / elapsed


def tokens_per_row(server: FakeLLMServer, batch_size: int, rows: int) -> tuple[float, float, int]:
    server.reset_counts()
    client = LLMClient(make_spec(server.base_url, concurrency=8, batch_size=batch_size, timeout=30))
    try:
        results = list(LLMReviewer(make_task(client.spec), client).review(make_items(rows)))
    finally:
        client.close()
    assert all(r.label is not None for r in results)
    return server.usage["prompt_tokens"] / rows, server.usage["completion_tokens"] / rows, server.counts["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server latency in seconds")
    parser.add_argument("--rows-per-slot", type=int, default=20, help="rows per concurrency slot")
    args = parser.parse_args()

    with FakeLLMServer(latency=args.latency) as server:
        throughput(server, 4, 8)  # warm up imports and connections
        print(f"### Throughput (server latency {args.latency * 1000:.0f} ms)\n")
        print("| concurrency | rows | rows/s | ideal rows/s | efficiency |")
        print("|---:|---:|---:|---:|---:|")
        for concurrency in (1, 4, 8, 16):
            rows = concurrency * args.rows_per_slot
            measured = throughput(server, concurrency, rows)
            ideal = concurrency / args.latency
            print(f"| {concurrency} | {rows} | {measured:.1f} | {ideal:.1f} | {measured / ideal:.0%} |")

        price = price_for(LLMSpec(model="gpt-4o-mini"))
        print("\n### Tokens per reviewed row (64 rows; $ at gpt-4o-mini list prices)\n")
        print("| batch_size | requests | input tok/row | output tok/row | $ per 1000 rows |")
        print("|---:|---:|---:|---:|---:|")
        for batch_size in (1, 4, 8):
            tin, tout, requests = tokens_per_row(server, batch_size, 64)
            usd = price.cost_usd(round(tin * 1000), round(tout * 1000))
            print(f"| {batch_size} | {requests} | {tin:.0f} | {tout:.0f} | {usd:.4f} |")


if __name__ == "__main__":
    main()
