"""The typed records the run store keeps about reviews: what a reviewer said of a row (`ReviewResult`,
also what every reviewer yields), one reviewer's own answer among several (`Answer`), and the weighing's
decision on a reviewed row (`Verdict`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReviewResult:
    """A review of one row: its deciding answer, or why there is none yet."""

    key: int  # text id in the run store
    label: str | None  # None: the reviewer could not answer (see `source`)
    source: str  # "reviewed:<reviewer>" (gold, file, human, llm, label-studio) or "queued:<why>" (`sources`)
    confidence: float | None = None
    reason: str | None = None  # the reviewer's one-sentence justification, when it gives one
    pending: bool = False  # waiting for a person; ask again on the next run
    cost_usd: float = 0.0
    trail: tuple[ReviewResult, ...] = ()  # the answers of the reviewers before, in a cascade (stored as answers)


@dataclass(frozen=True)
class Answer:
    """One reviewer's own answer to a row, whatever decided the row in the end (or a mark: a row sent on
    for a second look is marked by the reviewer `sources.SENT_ON`)."""

    label: str | None
    confidence: float | None
    reason: str | None
    source: str


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~0.85 us a row to build, slots ~0.2 (10M rows)
class FinalLabel:
    """A text's final label, as written to the output."""

    label: str | None  # None: the row could not be labeled (see `source`)
    confidence: float | None
    source: str  # `annotation_source` (`sources`)
    vote: str | None  # the vote's label, whatever decided the row
    vote_confidence: float | None
    specialist_votes: str  # JSON {specialist: label or null}


@dataclass(frozen=True)
class Verdict:
    """The weighing's decision on a reviewed row (`weighing`)."""

    label: str | None  # the decided label
    belief: float  # the posterior that it is right
    answer: str | None  # the weighed reviewer's own answer (None: an obeyed reviewer's row, flagged)
    flagged: bool  # the out-of-sample vote contradicts it with confidence: worth a second look
    train: str | None  # the label to learn from (None: not learned from)
    weight: float | None = 1.0  # how much it counts when learned from with weights
