"""One rule for matching a label value to a task label, used everywhere a label comes from outside
(a gold column, a review queue, an imported review, `labeljury eval`).

A value matches a label when their canonical forms are equal ignoring case: the canonical form of a
string is the string without surrounding whitespace; of a boolean `true` / `false`; of a whole number
(also a float such as 1.0, as pandas reads integers with gaps) its digits. So the labels `0`, `1`, `2`
match integer gold labels from JSONL or Parquet, and `true` matches a JSON boolean. "Ignoring case" is
Unicode's: the forms are NFKC-normalised (a `café` typed as e + combining accent is the `café` of one code
point; a full-width `Ａ` is `A`) and case-folded (`straße` is `STRASSE`). The task refuses two labels
with the same key (`task.Task`), so a value never matches two labels.
"""

from __future__ import annotations

import math
import numbers
import unicodedata
from collections.abc import Sequence

import numpy as np


def canonical(value: object) -> str | None:
    """The canonical text of a label value, or None for a missing one (None, NaN, empty text)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return None
        return str(int(f)) if f.is_integer() else repr(f)
    text = str(value).strip()
    return text or None


def key(value: object) -> str | None:
    """What two matching values share (the canonical form, NFKC-normalised and case-folded)."""
    c = canonical(value)
    return None if c is None else unicodedata.normalize("NFKC", c).casefold()


class LabelMatcher:
    """Matches outside values to the task's labels by the module's rule."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self._by_key = {key(label): label for label in self.labels}

    def match(self, value: object) -> str | None:
        """The task label `value` stands for, or None (missing, or not a task label)."""
        k = key(value)
        return None if k is None else self._by_key.get(k)

    def missing(self, value: object) -> bool:
        return canonical(value) is None
