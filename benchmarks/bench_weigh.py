"""What weighing the answers costs per reviewed row: memory (tracemalloc peak) and seconds.

    python benchmarks/bench_weigh.py [--reviews 400000] [--labels 3]

A run store with `--reviews` answered rows (gold answers, each with the vote's prior, as a run
stores them) is built in a temporary folder; then `weighing.weigh` runs as after every stage of
a run with an obeyed reviewer (it decides nothing, and flags the rows the vote contradicts with
cleanlab): once to warm up (imports), once timed, once under tracemalloc for its peak. The weighing
grows with the reviews, not with the input: this is the part of a run's memory that a large budget
adds (BENCHMARKS.md, section 9).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reviews", type=int, default=400_000)
    ap.add_argument("--labels", type=int, default=3)
    args = ap.parse_args()
    from labeljury.store import ReviewResult, RunStore
    from labeljury.store.reviews import write_review
    from labeljury.weighing import weigh

    n, k = args.reviews, args.labels
    labels = [f"label{i}" for i in range(k)]
    rng = np.random.default_rng(0)
    priors = rng.dirichlet(np.ones(k), n)
    with tempfile.TemporaryDirectory() as tmp, RunStore(tmp) as store:
        with store.transaction() as c:
            for i in range(n):
                write_review(c, ReviewResult(i, labels[int(rng.integers(k))], "reviewed:gold"))
            store.put_priors(dict(enumerate(priors)))
        weigh(store, labels, frozenset())  # imports, first use
        t0 = time.perf_counter()
        weigh(store, labels, frozenset())
        seconds = time.perf_counter() - t0
        tracemalloc.start()
        weigh(store, labels, frozenset())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps({"reviews": n, "labels": k, "seconds": round(seconds, 2),
                      "peak_bytes_per_review": round(peak / n, 1)}))


if __name__ == "__main__":
    main()
