"""Label sets: the labels of a multi-label task (`multi_label: true`), read and written by one rule.

A set comes from outside (a gold column, `labeljury eval`) written as the task's label names joined by
the task's `label_separator` (`joy|surprise`), as a JSON list in text (`["joy", "surprise"]`), or, in
JSONL and Parquet, as a real list. Each name matches a task label by the rule of `labels` (case and
Unicode forms ignored). A missing value (empty cell, null, NaN) is no answer at all; the empty set is
written `[]` (an empty list), and is a valid answer only where the task says `allow_empty: true`.
A set is kept in the task's label order, so two spellings of one set compare equal. A set is written out
delimited in CSV (`[]` when empty, so that it differs from no label) and as a list in JSONL and Parquet.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .labels import canonical, key

DEFAULT_SEPARATOR = "|"
EMPTY = "[]"  # the empty set, in text


class LabelSetError(ValueError):
    """A value that is not a valid label set of the task: the message says what is wrong and how to fix it."""


class LabelSets:
    """The label sets of a task with `labels`, read from and written to outside values."""

    def __init__(self, labels: Sequence[str] | None, separator: str = DEFAULT_SEPARATOR, allow_empty: bool = False):
        # labels None: any name is a label, spelled as first seen (`labeljury eval` without a task)
        self.open = labels is None
        self.labels = list(labels or [])
        self.separator = separator
        self.allow_empty = allow_empty
        self._by_key = {key(label): label for label in self.labels}
        self._order = {label: i for i, label in enumerate(self.labels)}

    def parse(self, value: object) -> tuple[str, ...] | None:
        """The set `value` stands for, in the task's label order; None where it is missing. Raises
        `LabelSetError` for an unknown or repeated name, or an empty set the task does not allow."""
        names = self._names(value)
        if names is None:
            return None
        out: list[str] = []
        for name in names:
            if canonical(name) is None:
                raise LabelSetError("the set holds an empty name (an empty text or null); remove it")
            label = self._by_key.get(key(name))
            if label is None and self.open:
                label = self._by_key[key(name)] = str(canonical(name))
                self._order[label] = len(self.labels)
                self.labels.append(label)
            if label is None:
                shown = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
                raise LabelSetError(f"{canonical(name)!r} is not a task label (labels: {shown}); fix the name or add "
                                    "the label")
            if label in out:
                raise LabelSetError(f"{label!r} appears twice in one set; list each label once")
            out.append(label)
        if not out and not self.allow_empty:
            raise LabelSetError("the empty set is not allowed; set `allow_empty: true` in the task if a text may "
                                "have no label")
        return tuple(sorted(out, key=self._order.__getitem__))

    def _names(self, value: object) -> list[object] | None:
        if isinstance(value, (list, tuple, np.ndarray)):
            return [v for v in value]
        text = canonical(value)
        if text is None:
            return None
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                raise LabelSetError(f"{text[:60]!r} starts like a JSON list but is not one; write the set as "
                                    f"[\"a\", \"b\"] or as names joined by {self.separator!r}") from None
            if not isinstance(parsed, list):
                raise LabelSetError(f"{text[:60]!r} is not a list of label names")
            return parsed
        parts = text.split(self.separator)
        if any(canonical(p) is None for p in parts):
            raise LabelSetError(f"{text[:60]!r} has an empty name between separators {self.separator!r}; join the "
                                "names with one separator each")
        return parts

    def text(self, labels: Iterable[str]) -> str:
        """A set as CSV writes it: its names in the task's order, joined by the separator; `[]` when empty."""
        ordered = sorted(labels, key=self._order.__getitem__)
        return self.separator.join(ordered) if ordered else EMPTY


def looks_like_a_set(value: object, labels: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> bool:
    """Whether `value`, which is no single label of a single-label task, reads as a set of two or more of its
    labels (a JSON list, or names joined by `separator`): a multi-label value where one label was expected."""
    sets = LabelSets(labels, separator, allow_empty=True)
    try:
        s = sets.parse(value)
    except LabelSetError:
        return False
    return s is not None and len(s) >= 2


class SetScores:
    """Predicted label sets against true ones, counted a batch of rows at a time (memory does not grow with
    the rows): what `scores` reports."""

    def __init__(self) -> None:
        self.tp: Counter[str] = Counter()
        self.fp: Counter[str] = Counter()
        self.fn: Counter[str] = Counter()
        self.support: Counter[str] = Counter()
        self.rows = 0
        self.exact = 0
        self.true_labels = 0
        self.predicted_labels = 0

    def add(self, truth: Iterable[tuple[str, ...]], pred: Iterable[tuple[str, ...] | None]) -> None:
        """Rows whose true sets are `truth` and predicted sets `pred` (None: no prediction, the empty set)."""
        for t, p in zip(truth, pred, strict=True):
            ts, ps = set(t), set(p or ())
            self.rows += 1
            self.exact += ts == ps
            self.true_labels += len(ts)
            self.predicted_labels += len(ps)
            self.support.update(ts)
            self.tp.update(ts & ps)
            self.fp.update(ps - ts)
            self.fn.update(ts - ps)

    def scores(self, labels: Sequence[str]) -> dict[str, Any]:
        """micro- and macro-F1 (macro over the `labels` that occur in the truth or the predictions, as
        scikit-learn's `f1_score(average="macro")` over those), exact-set accuracy (the whole set right),
        Hamming loss (the share of (row, label) pairs wrong, over `labels`), the mean set sizes, and each
        label's precision, recall, F1 and support (rows that truly carry it)."""
        per: dict[str, dict[str, float]] = {}
        f1s = []
        for lab in labels:
            tp, fp, fn = self.tp[lab], self.fp[lab], self.fn[lab]
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
            per[lab] = {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
                        "f1": f1, "support": self.support[lab]}
            if tp + fp + fn:
                f1s.append(f1)
        tp, fp, fn = sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values())
        pairs = self.rows * len(labels)
        return {"rows": self.rows,
                "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
                "macro_f1": float(np.mean(f1s)) if f1s else 1.0,
                "exact_set_accuracy": self.exact / self.rows if self.rows else 0.0,
                "hamming_loss": (fp + fn) / pairs if pairs else 0.0,
                "true_labels_per_row": self.true_labels / self.rows if self.rows else 0.0,
                "predicted_labels_per_row": self.predicted_labels / self.rows if self.rows else 0.0,
                "per_label": per}


def multilabel_scores(truth: np.ndarray, pred: np.ndarray, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """`SetScores.scores` of (rows, labels) 0/1 matrices of true and predicted sets (label names: `labels`,
    else their column numbers)."""
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    names = [str(j) for j in range(t.shape[1])] if labels is None else list(labels)
    counts = SetScores()
    counts.add((tuple(names[j] for j in np.flatnonzero(r)) for r in t),
               (tuple(names[j] for j in np.flatnonzero(r)) for r in p))
    return counts.scores(names)
