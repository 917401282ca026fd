"""A cascade of reviewers, tried in order (e.g. an LLM, then people).

A row the first reviewer cannot settle goes to the next: no answer (an invalid one, a refusal, a
server failure after retries, the LLM budget spent) or one below that reviewer's `min_confidence`.
The next reviewer sees what the one before said (`ReviewItem.previous`). The last reviewer is the
most trusted: the audit sample goes to it directly. A row an earlier reviewer answered but whose
answer was flagged as doubtful afterwards (`weighing`) comes back with reason "flagged" and that
answer as `previous`, and goes to the reviewers after the one that gave it. Every reviewer's own
answer is kept (`ReviewResult.trail`); the row's source names the one that decided it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from ..sources import SECOND_LOOK, reviewer_of
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

    @property
    def kinds(self) -> list[str]:
        return [r.kind for r, _ in self.reviewers]

    def start(self, item: ReviewItem) -> int:
        """The position of the first reviewer to ask about `item`."""
        last = len(self.reviewers) - 1
        if item.reason == "audit":  # the audit: to the most trusted reviewer
            return last
        if item.reason == SECOND_LOOK and item.previous is not None:
            kinds = self.kinds
            who = reviewer_of(item.previous.source)
            return min(kinds.index(who) + 1, last) if who in kinds else last
        return 0

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        trails: dict[int, tuple[ReviewResult, ...]] = {
            it.key: (it.previous,) for it in items if it.reason == SECOND_LOOK and it.previous is not None}
        starts: dict[int, list[ReviewItem]] = {}
        for it in items:
            starts.setdefault(self.start(it), []).append(it)
        passed: list[ReviewItem] = []
        for i, (reviewer, min_conf) in enumerate(self.reviewers):
            last = i == len(self.reviewers) - 1
            todo = passed + starts.get(i, [])
            by_key = {it.key: it for it in todo}
            passed = []
            for res in reviewer.review(todo) if todo else ():
                res = replace(res, trail=trails.get(res.key, ()))
                if last or res.pending or self._settles(res, min_conf):  # pending: a person will answer
                    yield res
                else:
                    trails[res.key] = (*res.trail, res)
                    passed.append(replace(by_key[res.key], previous=res))

    @staticmethod
    def _settles(res: ReviewResult, min_conf: float | None) -> bool:
        if res.pending or res.label is None:
            return False
        return min_conf is None or (res.confidence is not None and res.confidence >= min_conf)
