"""The file reviewer: a JSONL queue that a person fills in.

The run writes the rows to review to the queue file and stops. The reviewer opens the file, sets
`"label"` on each line (to one of the task's labels; in a multi-label task, a list of them), and reruns the same command: answered lines
become reviews, unanswered ones stay in the queue. Nothing is asked twice: answers are stored in the
run store as soon as they are read.

A line is refused (one error naming its line number, nothing applied) when it is not a JSON object,
its `id` is not a whole number of a row waiting for review, its `text` is not that row's text, its
label is not a task label, or another line gives the same id a different label.

The queue is written only where it is safe: a file that exists and is not a labeljury review queue
is never replaced.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ReviewError
from ..labels import LabelMatcher
from ..labelsets import LabelSetError, LabelSets
from ..sources import queued, reviewed
from .base import ReviewItem, ReviewResult

QUEUE_KEYS = {"id", "text", "why", "label"}  # every line labeljury writes has these


def is_queue(path: Path) -> bool:
    """Whether `path` is absent, empty, or a labeljury review queue (so it may be replaced)."""
    if not path.exists():
        return True
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8") as fh:
            lines = [line for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return all(isinstance(rec := json.loads(line), dict) and QUEUE_KEYS <= rec.keys() for line in lines)
    except ValueError:
        return False


class FileReviewer:
    kind = "file"

    def __init__(self, path: str | Path, labels: Sequence[str], sets: LabelSets | None = None):
        self.path = Path(path)
        self.labels = list(labels)
        self.sets = sets  # a multi-label task's sets: "label" is a list of names (or names joined by the separator)

    def check(self) -> None:
        if not is_queue(self.path):
            raise ReviewError(f"reviewer.path {str(self.path)!r} is a file that is not a labeljury review queue; "
                              "labeljury will not replace it: choose another path (or leave reviewer.path out "
                              "to keep the queue in the run directory)")

    def answers(self, items: Sequence[ReviewItem]) -> dict[int, tuple[str, str | None]]:
        """{text id: (label, note)} for the lines a person has answered (see the module doc)."""
        if not self.path.exists():
            return {}
        matcher = LabelMatcher(self.labels)
        waiting = {it.key: it for it in items}
        out: dict[int, tuple[str, str | None]] = {}
        first_line: dict[int, int] = {}
        where = f"review file {str(self.path)!r}"
        with self.path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if not isinstance(rec, dict) or "id" not in rec:
                    raise ReviewError(f"{where} line {n} is not a JSON object with an \"id\"; restore the line "
                                      "as written and only edit \"label\"")
                key = rec["id"]
                if isinstance(key, bool) or not isinstance(key, int):
                    raise ReviewError(f"{where} line {n}: id {key!r} is not a whole number; restore the id as written")
                if key not in waiting:
                    raise ReviewError(f"{where} line {n}: id {key} is not a row waiting for review in this run; "
                                      "remove the line (or restore its id)")
                if "text" in rec and rec["text"] != waiting[key].text:
                    raise ReviewError(f"{where} line {n}: the text of id {key} is not the run's text for that row; "
                                      "restore the text as written (only edit \"label\")")
                value = rec.get("label")
                if self.sets is not None:
                    try:
                        found = self.sets.parse(value)
                    except LabelSetError as err:
                        raise ReviewError(f"{where} line {n}: label {value!r}: {err}; fix it and rerun") from None
                    if found is None:
                        continue
                    label = self.sets.text(found)
                elif matcher.missing(value):
                    continue
                else:
                    label = matcher.match(value)
                if label is None:
                    raise ReviewError(f"{where} line {n}: label {value!r} is not one of {self.labels}; fix it and rerun")
                if key in out and out[key][0] != label:
                    raise ReviewError(f"{where} line {n}: id {key} has label {label!r} here but {out[key][0]!r} on "
                                      f"line {first_line[key]}; keep one answer per id")
                first_line.setdefault(key, n)
                out[key] = (label, rec.get("note"))
        return out

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        answered = self.answers(items)
        pending: list[dict[str, Any]] = []
        for it in items:
            if it.key in answered:
                label, note = answered[it.key]
                # yielded (and so stored by the caller) before the queue drops the line
                yield ReviewResult(it.key, label, reviewed("file"), 1.0, note)
            else:
                pending.append({"id": it.key, "row": it.row, "text": it.text, "why": it.reason,
                                "suggestion": self._shown(it.vote), "confidence": None if it.confidence is None
                                else round(float(it.confidence), 4), "votes": it.votes, "label": None})
        self._write_queue(pending)
        for rec in pending:
            yield ReviewResult(rec["id"], None, queued("human"), pending=True)

    def _shown(self, vote: str | None) -> str | list[str] | None:
        """The suggestion as a person writes the answer: a list of names in a multi-label task."""
        if vote is None or self.sets is None:
            return vote
        return list(self.sets.parse(vote) or ())

    def _write_queue(self, pending: list[dict[str, Any]]) -> None:
        # Atomic: a person may have the old file open; never leave it half-written.
        self.check()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".queue-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for rec in pending:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
