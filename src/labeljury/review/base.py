"""The reviewer protocol: who labels the rows the specialists find hard.

The pipeline hands a reviewer `ReviewItem`s (the text plus everything the specialists said) and
stores each `ReviewResult` as soon as it is yielded, so a killed run never asks for a review twice.
A reviewer that cannot answer a row yields a result with `label=None` and a `source` saying why
(e.g. `queued:llm-invalid-answer`); such a row keeps the specialists' vote, goes on to the next reviewer
of a cascade, and is asked again on a later run.
A reviewer that must wait for a person (the file reviewer) yields `pending=True` results; the run
stops and resumes when rerun.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..sources import reviewer_of  # noqa: F401 - re-exported: the reviewer a source names
from ..store.records import ReviewResult  # noqa: F401 - re-exported: what a reviewer yields


@dataclass(frozen=True)
class ReviewItem:
    """One unique text to review, with the specialists' opinions."""

    key: int  # text id in the run store
    text: str
    row: int  # the first input row holding this text (0-based), for gold lookups
    vote: str | None = None  # the aggregated label before review
    confidence: float | None = None  # the aggregate confidence of `vote`
    votes: dict[str, str | None] = field(default_factory=dict)  # specialist -> its label (None: abstained)
    probabilities: dict[str, list[float]] = field(default_factory=dict)  # specialist -> task-ordered probs
    reason: str = "hard"  # why it is reviewed: `sources.BOOTSTRAP`, `AUDIT`, `HARD`, or `SECOND_LOOK`
    prior: list[float] | None = None  # the vote's distribution over the task's labels, before review
    previous: ReviewResult | None = None  # in a cascade, what the reviewer before said (could not settle)


@runtime_checkable
class Reviewer(Protocol):
    kind: str

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        """Yield one result per item, in any order, as each is ready."""
        ...


@runtime_checkable
class Checked(Protocol):
    """A reviewer that can tell before the run starts that it cannot work (e.g. a missing gold column)."""

    def check(self) -> None: ...


@runtime_checkable
class Closeable(Protocol):
    """A reviewer holding resources (connections, threads) to release when the run ends."""

    def close(self) -> None: ...


@runtime_checkable
class Queued(Protocol):
    """A reviewer whose pending rows wait in a file a person fills in."""

    path: Path

