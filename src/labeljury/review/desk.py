"""The review desk: hands the routed rows that have no answer yet to the reviewer and stores each answer
in the run store the moment it is given, so a killed run never asks for a review twice.

It is where every row sent for review passes: the bootstrap sample and each stage's hard rows.
A reviewer that cannot answer a row returns it with `label=None` and a `queued:<why>` source (the
row keeps the specialists' vote); one that must wait for a person returns it `pending`, and the run
stops with status "waiting" until it is rerun.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..progress import Progress, SilentProgress
from ..store import RunStore
from .base import Reviewer, ReviewItem

Opinions = Callable[[list[int]], dict[int, dict[str, Any]]]


class ReviewDesk:
    def __init__(self, store: RunStore, reviewer: Reviewer, progress: Progress | None = None):
        self.store = store
        self.reviewer = reviewer
        self.progress = progress or SilentProgress()

    def ask(self, ids: Sequence[int], why: str, opinions: Opinions | None = None) -> bool:
        """Ask about the rows `ids` that have no answer yet, with what the specialists said of them
        (`opinions`) when given. Returns False while some answers are pending."""
        s = self.store
        done = s.reviews()
        todo = [t for t in ids if t not in done]
        if not todo:
            return True
        texts = s.texts_by_id(todo)
        said = opinions(todo) if opinions is not None else {}
        items = [ReviewItem(key=t, text=texts[t][0], row=texts[t][1], reason=why, **said.get(t, {})) for t in todo]
        pending = 0
        with self.progress.bar(f"review ({why}, {self.reviewer.kind})", len(items)) as bar:
            for res in self.reviewer.review(items):
                s.put_review(res)
                pending += res.pending
                bar.advance()
        return pending == 0

    def pending(self) -> int:
        return len(self.store.reviews(include_pending=True)) - len(self.store.reviews())
