"""Label maps checked against reviewed labels.

A model with labels of its own (a hub classifier, VADER) votes through a label map: model label ->
task label. The LLM proposes one from the label names; the reviewed rows say which map actually
agrees with the labels. `best_label_map` finds the map that agrees most (one-to-one by the
Hungarian method when the model has as many labels as the task, else each model label to the task
label it most often coincides with); `check_label_map` keeps the proposed map unless the best one is
clearly better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import SpecialistError
from ..specialists.base import LabelMap
from ..voting import hard_labels


def _task_indices(y_task: Sequence[str] | np.ndarray, task_labels: Sequence[str]) -> np.ndarray:
    y = np.asarray(y_task)
    if y.dtype.kind in "iu":
        idx = y.astype(np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(task_labels)):
            raise SpecialistError(f"reviewed label indices must be in 0..{len(task_labels) - 1}")
        return idx
    where = {str(t): j for j, t in enumerate(task_labels)}
    unknown = [str(v) for v in y if str(v) not in where]
    if unknown:
        raise SpecialistError(f"reviewed label {unknown[0]!r} is not a task label {list(task_labels)}")
    return np.array([where[str(v)] for v in y], dtype=np.int64)


def _check_shapes(model_labels: Sequence[str], proba_own: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(proba_own, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(model_labels) or p.shape[0] != n:
        raise SpecialistError(
            f"expected ({n}, {len(model_labels)}) model probabilities for {n} reviewed rows, got {p.shape}"
        )
    return p


def confusion(proba_own: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(hard, soft) (m, k) counts: rows whose top model label is i and reviewed label j; and the
    model's probability mass of label i on rows reviewed j. Rows where the model abstains (NaN) are
    left out."""
    voted = ~np.isnan(proba_own).any(axis=1)
    p, yy = proba_own[voted], y[voted]
    m = p.shape[1]
    hard = np.zeros((m, k))
    soft = np.zeros((m, k))
    if len(p):
        np.add.at(hard, (p.argmax(axis=1), yy), 1.0)
        for j in range(k):
            soft[:, j] = p[yy == j].sum(axis=0)
    return hard, soft


def best_label_map(
    model_labels: Sequence[str],
    task_labels: Sequence[str],
    proba_own: np.ndarray,
    y_task: Sequence[str] | np.ndarray,
) -> dict[str, str]:
    """The label map that agrees most with the reviewed labels `y_task` (task label names, or
    indices into `task_labels`), given the model's own-label probabilities `proba_own` (n, m) on
    those rows. With m == k, a one-to-one assignment (Hungarian method on the confusion matrix);
    otherwise many-to-one, each model label to the task label it most often coincides with. Ties
    and never-top labels are settled by probability mass; a model label with no mass is left out."""
    model_labels = [str(x) for x in model_labels]
    task_labels = [str(x) for x in task_labels]
    y = _task_indices(y_task, task_labels)
    p = _check_shapes(model_labels, proba_own, len(y))
    hard, soft = confusion(p, y, len(task_labels))
    total = soft.sum()
    score = hard + (soft / total if total > 0 else soft)  # mass only breaks ties between hard counts
    if len(model_labels) == len(task_labels):
        rows, cols = linear_sum_assignment(score, maximize=True)
        return {model_labels[i]: task_labels[j] for i, j in zip(rows, cols, strict=True)}
    return {model_labels[i]: task_labels[int(score[i].argmax())] for i in range(len(model_labels)) if score[i].sum() > 0}


def agreement(
    mapping: Mapping[str, str],
    model_labels: Sequence[str],
    task_labels: Sequence[str],
    proba_own: np.ndarray,
    y_task: Sequence[str] | np.ndarray,
) -> float:
    """The share of reviewed rows whose mapped vote (as the pipeline computes it: mass summed per
    task label, unmapped labels dropped) is the reviewed label. An abstention counts as wrong."""
    y = _task_indices(y_task, task_labels)
    p = _check_shapes(model_labels, proba_own, len(y))
    if not len(y) or not mapping:
        return 0.0
    mapped = LabelMap.build(model_labels, task_labels, dict(mapping)).apply(p)
    return float((hard_labels(mapped) == y).mean())


@dataclass(frozen=True)
class LabelMapCheck:
    proposed: dict[str, str]
    proposed_agreement: float
    best: dict[str, str]
    best_agreement: float
    rows: int
    tolerance: float

    @property
    def accepted(self) -> bool:
        """The proposed map is within `tolerance` of the best one."""
        return self.proposed_agreement >= self.best_agreement - self.tolerance

    @property
    def chosen(self) -> dict[str, str]:
        """The map to use: the proposed one when accepted, else the best one."""
        return self.proposed if self.accepted else self.best

    def note(self) -> str:
        if self.accepted:
            return f"label map kept: agreement {self.proposed_agreement:.3f} on {self.rows} reviewed rows"
        return (
            f"label map replaced: the proposed one agreed {self.proposed_agreement:.3f}, the best "
            f"{self.best_agreement:.3f} on {self.rows} reviewed rows"
        )


def default_tolerance(n: int) -> float:
    """How much worse than the in-sample best a proposed map may be: about one standard error of
    an accuracy on n rows, between 0.02 and 0.1 (the best map is fit to these rows, so it is
    optimistic, and a semantic map is worth keeping on a small sample)."""
    return 0.1 if n <= 0 else min(0.1, max(0.02, 0.5 / math.sqrt(n)))


def check_label_map(
    model_labels: Sequence[str],
    task_labels: Sequence[str],
    proposed: Mapping[str, str],
    proba_own: np.ndarray,
    y_task: Sequence[str] | np.ndarray,
    *,
    tolerance: float | None = None,
) -> LabelMapCheck:
    """Compare the proposed map's agreement with the reviewed labels to the best map's."""
    best = best_label_map(model_labels, task_labels, proba_own, y_task)
    n = len(np.asarray(y_task))
    return LabelMapCheck(
        proposed=dict(proposed),
        proposed_agreement=agreement(proposed, model_labels, task_labels, proba_own, y_task),
        best=best,
        best_agreement=agreement(best, model_labels, task_labels, proba_own, y_task),
        rows=n,
        tolerance=default_tolerance(n) if tolerance is None else tolerance,
    )
