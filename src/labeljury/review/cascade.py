"""A cascade of reviewers, tried in order (e.g. an LLM, then people).

A row the first reviewer cannot settle goes to the next: no answer (an invalid one, a refusal, a
server failure after retries, the LLM budget spent) or one below that reviewer's `min_confidence`.
The next reviewer sees what the one before said (`ReviewItem.previous`). The last reviewer is the
most trusted: the audit sample goes to it directly. Every reviewer's own answer is kept
(`ReviewResult.trail`); the row's source names the one that decided it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from .base import Checked, Closeable, Reviewer, ReviewItem, ReviewResult


class CascadeReviewer:
    def __init__(self, reviewers: Sequence[tuple[Reviewer, float | None]]):
        if not reviewers:
            raise ValueError("a cascade needs at least one reviewer")
        self.reviewers = list(reviewers)  # (reviewer, min_confidence)
        self.kind = "+".join(r.kind for r, _ in self.reviewers)

    @property
    def last(self) -> Reviewer:
        return self.reviewers[-1][0]

    def check(self) -> None:
        for r, _ in self.reviewers:
            if isinstance(r, Checked):
                r.check()

    def close(self) -> None:
        for r, _ in self.reviewers:
            if isinstance(r, Closeable):
                r.close()

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        trails: dict[int, tuple[ReviewResult, ...]] = {}
        first = [it for it in items if it.reason != "audit"]
        straight = [it for it in items if it.reason == "audit"]  # the audit: to the most trusted reviewer
        todo = first
        for i, (reviewer, min_conf) in enumerate(self.reviewers):
            last = i == len(self.reviewers) - 1
            if last:
                todo = todo + straight
            by_key = {it.key: it for it in todo}
            passed: list[ReviewItem] = []
            for res in reviewer.review(todo) if todo else ():
                res = replace(res, trail=trails.get(res.key, ()))
                if last or res.pending or self._settles(res, min_conf):  # pending: a person will answer
                    yield res
                else:
                    trails[res.key] = (*res.trail, res)
                    passed.append(replace(by_key[res.key], previous=res))
            todo = passed

    @staticmethod
    def _settles(res: ReviewResult, min_conf: float | None) -> bool:
        if res.pending or res.label is None:
            return False
        return min_conf is None or (res.confidence is not None and res.confidence >= min_conf)
