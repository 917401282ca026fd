"""A reviewer that is often wrong, for benchmarks only (not a reviewer kind users can choose).

It answers from the gold column, but a seeded share of its answers is a wrong label, drawn uniformly
from the other labels. Two variants:
- `uniform`: every row is wrong with the same probability, 1 - accuracy;
- `hard`: the wrong answers fall on the rows the specialists find hardest, as an LLM's mistakes do:
  within each batch of rows it is asked about, ranked by the vote's confidence (lowest first), the
  row at rank r in [0, 1] is wrong with probability min(1, 2 * (1 - accuracy) * (1 - r)), so the
  mean error is still 1 - accuracy (for accuracy >= 0.5). Rows asked without a vote (the bootstrap
  and audit samples) get the uniform rate.
Every answer states the same confidence (as in the issue's measurement, where the stated confidence
carries no information).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from labeljury.review.base import ReviewItem, ReviewResult
from labeljury.review.gold import GoldReviewer

STATED_CONFIDENCE = 0.9


def _unit(seed: int, key: int, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, row, salt): the same row gets the same answer on a resume."""
    h = hashlib.blake2b(f"{seed}:{key}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class SimulatedReviewer:
    kind = "simulated"

    def __init__(self, input_path: str | Path, column: str, labels: Sequence[str], accuracy: float,
                 variant: str = "uniform", seed: int = 0, weigh: bool = True):
        if variant not in ("uniform", "hard"):
            raise ValueError(f"variant must be 'uniform' or 'hard', not {variant!r}")
        self.gold = GoldReviewer(input_path, column, labels)
        self.labels = list(labels)
        self.accuracy = accuracy
        self.variant = variant
        self.seed = seed
        self.weigh = weigh  # read by labeljury: weigh this reviewer's answers against the vote, or obey them
        self.truth: dict[int, str] = {}  # text id -> the gold answer it replaced (for the oracle bound)

    def check(self) -> None:
        self.gold.check()

    def _p_wrong(self, items: Sequence[ReviewItem]) -> dict[int, float]:
        base = 1.0 - self.accuracy
        if self.variant == "uniform":
            return {it.key: base for it in items}
        ranked = sorted((it for it in items if it.confidence is not None), key=lambda it: (it.confidence, it.key))
        out = {it.key: base for it in items}
        for i, it in enumerate(ranked):
            r = i / max(len(ranked) - 1, 1)
            out[it.key] = min(1.0, 2 * base * (1 - r))
        return out

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        p_wrong = self._p_wrong(items)
        for res in self.gold.review(items):
            if res.label is None:
                yield res
                continue
            label = self.truth[res.key] = res.label
            if _unit(self.seed, res.key, "wrong") < p_wrong[res.key]:
                others = [lab for lab in self.labels if lab != label]
                label = others[int(_unit(self.seed, res.key, "which") * len(others))]
            yield replace(res, label=label, source="reviewed:simulated", confidence=STATED_CONFIDENCE)
