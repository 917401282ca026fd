"""The first sample of a multi-label run: half of it the texts most like each label's name or description in
turn (so that a rare label has positives from the start), half uniformly at random. A stage's hard rows are
ranked by `run.SetAnnotator._route_stage` (it needs the fold heads)."""

from __future__ import annotations

import numpy as np

from ..sources import AUDIT, BOOTSTRAP, ROUTE_BOOTSTRAP
from ..specialists import DEFAULT_ENCODER, get_encoder
from ..store import RunStore
from ..task import Task
from .views import Views


def route_first(store: RunStore, views: Views, task: Task, m: int) -> None:
    """Half of the first sample by the labels' names (each label in turn, the texts most like its name or
    description), half uniformly at random. Audit rows met on the way count as found, not asked twice."""
    audit = set(store.routed(AUDIT))
    taken: list[int] = []
    marked: list[int] = []
    by_names = m // 2
    n = store.n_input_texts
    if by_names and n:
        prompts = [(d or name).replace("_", " ").replace("-", " ") for name, d in task.labels.items()]
        L = get_encoder(DEFAULT_ENCODER).encode(prompts)  # noqa: N806
        L = L / np.maximum(np.linalg.norm(L, axis=1, keepdims=True), 1e-12)  # noqa: N806
        depth = min(n, by_names + len(audit) + 1)  # deep enough for every label's turn
        best = np.zeros((0, len(prompts)), np.int64)
        scores = np.zeros((0, len(prompts)), np.float32)
        for ids, v in views.chunks():
            E = v["embedding"]  # noqa: N806
            s = (E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)) @ L.T
            scores = np.concatenate([scores, s])
            best = np.concatenate([best, np.repeat(ids[:, None], len(prompts), axis=1)])
            keep = np.argsort(-scores, axis=0, kind="stable")[:depth]
            scores = np.take_along_axis(scores, keep, axis=0)
            best = np.take_along_axis(best, keep, axis=0)
        seen: set[int] = set()
        for row in best:
            for t in row:
                t = int(t)
                if len(taken) >= by_names:
                    break
                if t in seen:
                    continue
                seen.add(t)
                (marked if t in audit else taken).append(t)
    rest = np.setdiff1d(np.arange(n), np.array(sorted(audit | set(taken) | set(marked)), dtype=np.int64))
    rng = np.random.default_rng(task.seed + 1)
    extra = rng.choice(rest, min(len(rest), m - len(taken)), replace=False) if len(rest) else rest
    taken += [int(t) for t in extra]
    store.add_routing(sorted(taken), BOOTSTRAP, None, 0, done_step=ROUTE_BOOTSTRAP,
                      audit_hard=(marked, [0.0] * len(marked)))
