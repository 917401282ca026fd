"""The gold reviewer: answers from a column of the input itself.

This is the paper's human-reviewer setting, used to evaluate: the dataset's own labels stand in for
a person. Every answer counts as one review against the budget, so results are honest about cost.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from .. import data
from ..errors import ReviewError
from ..labels import LabelMatcher
from ..labelsets import LabelSetError, LabelSets, looks_like_a_set
from ..sources import queued, reviewed
from .base import ReviewItem, ReviewResult


def _unknown(value: object, labels: Sequence[str]) -> str:
    """Why gold `value` answers nothing: not a task label, or a set of them in a single-label task."""
    if looks_like_a_set(value, labels):
        return (f"gold value {value!r} is a set of labels, but the task is single-label; add `multi_label: true` "
                "to the task if a text may carry several labels")
    return f"gold value {value!r} is not a task label"


class GoldReviewer:
    kind = "gold"

    def __init__(self, input_path: str | Path, column: str, labels: Sequence[str], sets: LabelSets | None = None):
        self.input_path = Path(input_path)
        self.column = column
        self.labels = list(labels)
        self.sets = sets  # a multi-label task's sets: each gold value is read as one (stored as `sets.text`)

    def check(self) -> None:
        """Fail early, with one line, if the gold column is missing."""
        cols = data.input_columns(self.input_path)
        if self.column not in cols:
            raise ReviewError(
                f"the gold reviewer's column {self.column!r} is not in {self.input_path.name} "
                f"(columns: {', '.join(map(str, cols))}); set reviewer.column in the task file")

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        wanted = {it.row: it for it in items}
        if not wanted:
            return
        matcher = LabelMatcher(self.labels)
        last = max(wanted)
        for chunk in data.iter_chunks(self.input_path, columns=[self.column]):
            lo, hi = chunk.index[0], chunk.index[-1]
            for row in [r for r in wanted if lo <= r <= hi]:
                item = wanted.pop(row)
                value = chunk.at[row, self.column]
                if self.sets is not None:
                    yield self._set_answer(item, value)
                    continue
                label = matcher.match(value)
                if label is None:
                    missing = matcher.missing(value)
                    yield ReviewResult(item.key, None, queued("gold-label-missing") if missing
                                       else queued("gold-label-unknown"),
                                       reason=None if missing else _unknown(value, self.labels))
                else:
                    yield ReviewResult(item.key, label, reviewed("gold"), 1.0)
            if hi >= last or not wanted:
                break
        for item in wanted.values():  # rows past the end: the input shrank since ingest
            raise ReviewError(f"input row {item.row} is gone from {self.input_path.name}; the input changed "
                              "since the run started — rerun with a new --run-dir")

    def _set_answer(self, item: ReviewItem, value: object) -> ReviewResult:
        sets = self.sets
        assert sets is not None
        try:
            found = sets.parse(value)
        except LabelSetError as err:
            return ReviewResult(item.key, None, queued("gold-label-unknown"), reason=f"gold value {value!r}: {err}")
        if found is None:
            return ReviewResult(item.key, None, queued("gold-label-missing"))
        return ReviewResult(item.key, sets.text(found), reviewed("gold"), 1.0)
