"""The human reviewer: people answer on the review page (`labeljury review RUN_DIR`), through its API
or in Label Studio. Rows without an answer wait in the people's queue (`queue`), and the run waits
(status 3) until they are answered, or goes on without them with `labeljury run --finish`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ..sources import queued, reviewed
from .base import ReviewItem, ReviewResult
from .queue import HumanQueue


class HumanReviewer:
    kind = "human"

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._queue: HumanQueue | None = None

    @property
    def queue(self) -> HumanQueue:
        if self._queue is None:  # opened when first asked: the run store exists by then
            self._queue = HumanQueue(self.run_dir)
        return self._queue

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        items = list(items)
        if not items:
            return
        answered = self.queue.answered([it.key for it in items])
        waiting = [it for it in items if it.key not in answered]
        self.queue.enqueue(waiting)
        for it in items:
            if it.key in answered:
                label, via = answered[it.key]
                yield ReviewResult(it.key, label, reviewed(via), 1.0)
        for it in waiting:
            yield ReviewResult(it.key, None, queued("human"), pending=True)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
            self._queue = None
