"""Small statistics the rest of labeljury shares: intervals for proportions."""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` observed on `n` rows (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
