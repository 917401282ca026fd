"""Checking a selected specialist's label map on the reviewed bootstrap rows.

The pipeline already drops a specialist whose bootstrap accuracy is below chance. Before that, a
specialist with labels of its own (a hub model, VADER) has its label map compared with the map that
agrees most with the reviewed labels (`label_map.check_label_map`); a clearly worse map is replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..specialists.base import LabelMap, MappedSpecialist
from .label_map import LabelMapCheck, check_label_map


def recheck_label_map(
    model: Any, X: Any, y: Sequence[str], *, tolerance: float | None = None, apply: bool = True
) -> LabelMapCheck | None:
    """Check `model`'s label map on the reviewed rows `X` (what the model reads: texts, or
    embeddings for an embedding-input model) and their labels `y`. With `apply`, a rejected map is
    replaced in place by the best one. Returns None for a model without labels of its own."""
    if not isinstance(model, MappedSpecialist) or len(y) == 0:
        return None
    current = model.label_map
    proba_own = np.asarray(model.inner.predict_proba(X), dtype=np.float64)
    result = check_label_map(current.source, current.target, dict(current.mapping), proba_own, list(y),
                             tolerance=tolerance)
    if apply and not result.accepted:
        model.label_map = LabelMap.build(current.source, current.target, result.best, specialist=model.name)
    return result
