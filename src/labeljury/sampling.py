"""Drawing a sample with known, unequal inclusion probabilities (the audit's draw; see `trust`).

The audit measures the rows left unreviewed: a row drawn with probability pi counts (1 - pi)/pi times
in every mean it enters (Horvitz-Thompson weights in a Hajek ratio: it is one of the rows left
unreviewed with probability 1 - pi), so any pi > 0 measures without bias and the draw may favour the
rows a stage would find hard: such a row is also worth reviewing for its own sake (it is more often
labeled wrong) and worth training on ("active statistical inference", Zrnic & Candes 2024). The
probabilities mix a uniform part with a part proportional to hardness (defensive importance
sampling): no row's weight exceeds 1 / (1 - tilt) times a uniform draw's, so a hardness score that
ranks badly costs at most that much variance.
"""

from __future__ import annotations

import numpy as np


def inclusion_probabilities(hardness: np.ndarray, n: int, tilt: float) -> np.ndarray:
    """(len(hardness),) probabilities in (0, 1] summing to `n` (at most the number of rows): a share
    `1 - tilt` spread evenly, `tilt` in proportion to `hardness` (>= 0); probabilities that would
    pass 1 are 1, and what they shed goes to the others in the same proportions."""
    h = np.clip(np.asarray(hardness, dtype=np.float64), 0.0, None)
    m = len(h)
    if not 0 <= tilt < 1:
        raise ValueError(f"tilt must be in [0, 1), got {tilt}")
    if n >= m:
        return np.ones(m)
    if n <= 0:
        return np.zeros(m)
    base = np.full(m, (1.0 - tilt) / m) + (tilt * h / h.sum() if h.sum() > 0 else tilt / m)
    pi = np.zeros(m)
    capped = np.zeros(m, bool)
    for _ in range(m):  # each round caps at least one row more, or stops
        left = n - capped.sum()
        free = ~capped
        pi[free] = left * base[free] / base[free].sum()
        over = free & (pi >= 1.0)
        if not over.any():
            break
        capped |= over
        pi[capped] = 1.0
    return pi


def systematic_sample(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of a sample in which position i is drawn with probability exactly `pi[i]`
    (each <= 1): systematic sampling over a random order with one uniform start. Its size is
    round(sum(pi)) whenever that sum is a whole number, as `inclusion_probabilities` makes it."""
    pi = np.asarray(pi, dtype=np.float64)
    if not len(pi):
        return np.zeros(0, np.int64)
    if (pi < 0).any() or (pi > 1 + 1e-9).any():
        raise ValueError("inclusion probabilities must lie in [0, 1]")
    order = rng.permutation(len(pi))
    u = rng.random()
    steps = np.floor(np.cumsum(pi[order]) - u + 1e-9)
    prev = np.r_[np.floor(-u + 1e-9), steps[:-1]]
    return np.sort(order[steps > prev])
