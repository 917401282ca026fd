"""The file reviewer: a JSONL queue that a person fills in.

The run writes the rows to review to the queue file and stops. The reviewer opens the file, sets
`"label"` on each line (to one of the task's labels), and reruns the same command: answered lines
become reviews, unanswered ones stay in the queue. Nothing is asked twice: answers are stored in the
run store as soon as they are read.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ReviewError
from .base import ReviewItem, ReviewResult


class FileReviewer:
    kind = "file"

    def __init__(self, path: str | Path, labels: Sequence[str]):
        self.path = Path(path)
        self.labels = list(labels)

    def answers(self) -> dict[int, tuple[str, str | None]]:
        """{text id: (label, note)} for the lines a person has answered."""
        if not self.path.exists():
            return {}
        by_lower = {label.lower(): label for label in self.labels}
        out: dict[int, tuple[str, str | None]] = {}
        with self.path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key = int(rec["id"])
                except (ValueError, KeyError, TypeError):
                    raise ReviewError(f"review file {str(self.path)!r} line {n} is not a JSON object with an "
                                      "\"id\"; restore the line as written and only edit \"label\"") from None
                label = rec.get("label")
                if label is None or (isinstance(label, str) and not label.strip()):
                    continue
                found = by_lower.get(str(label).strip().lower())
                if found is None:
                    raise ReviewError(f"review file {str(self.path)!r} line {n}: label {label!r} is not one of "
                                      f"{self.labels}; fix it and rerun")
                out[key] = (found, rec.get("note"))
        return out

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        answered = self.answers()
        pending: list[dict[str, Any]] = []
        for it in items:
            if it.key in answered:
                label, note = answered[it.key]
                # yielded (and so stored by the caller) before the queue drops the line
                yield ReviewResult(it.key, label, "reviewed:file", 1.0, note)
            else:
                pending.append({"id": it.key, "row": it.row, "text": it.text, "why": it.reason,
                                "suggestion": it.vote, "confidence": None if it.confidence is None
                                else round(float(it.confidence), 4), "votes": it.votes, "label": None})
        self._write_queue(pending)
        for rec in pending:
            yield ReviewResult(rec["id"], None, "queued:human", pending=True)

    def _write_queue(self, pending: list[dict[str, Any]]) -> None:
        # Atomic: a person may have the old file open; never leave it half-written.
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
