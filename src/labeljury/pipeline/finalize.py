"""Finalize: one label per text — the reviewer's where there is one, else the vote of the final
specialist versions — with its confidence and provenance (`annotation_source`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..scoring import Scorer
from ..store import RunStore

STEP = "finalize"


def finalize(store: RunStore, scorer: Scorer, labels: list[str]) -> None:
    if store.is_done(STEP):
        return
    reviews = store.reviews()
    scorer.ensure()
    vote = scorer.vote(np.arange(store.n_texts))
    result, P, names = vote.result, vote.P, vote.names

    def records() -> Iterator[tuple[Any, ...]]:
        for t in range(len(vote.ids)):
            lab = int(result.label[t])
            voted = None if lab < 0 else labels[lab]
            vconf = None if lab < 0 else round(float(result.confidence[t]), 6)
            votes = json.dumps({nm: None if np.isnan(P[t, j]).any() else labels[int(P[t, j].argmax())]
                                for j, nm in enumerate(names)})
            r = reviews.get(t)
            if r is not None and r.label is not None:
                yield (t, r.label, r.confidence, r.source, voted, vconf, votes)
            elif voted is None:
                yield (t, None, None, r.source if r is not None else "skipped:no-vote", None, None, votes)
            else:
                source = r.source if r is not None else (
                    "consensus" if result.unanimous[t] and result.n_votes[t] == len(names) else "vote")
                yield (t, voted, vconf, source, voted, vconf, votes)

    store.put_final(records())
