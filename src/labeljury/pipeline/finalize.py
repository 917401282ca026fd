"""Finalize: one label per text — the reviewer's where there is one, else the vote of the final
specialist versions — with its confidence (a calibrated probability: `pipeline.calibrate`, `trust`)
and provenance (`annotation_source`); and the estimated accuracy of the whole output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..registry import Registry
from ..review.desk import reviewer_of
from ..scoring import Scorer
from ..store import RunStore
from ..training import Trainer
from .calibrate import fit_trust, vote_groups

STEP = "finalize"


def finalize(store: RunStore, scorer: Scorer, trainer: Trainer, registry: Registry, labels: list[str],
             seed: int) -> None:
    reviews = store.reviews(include_pending=True)  # a pending one still says where the row waits
    # answers that arrived after the run finished (people, with --finish) make a new final labeling
    signature = list(store.conn.execute("SELECT COUNT(*), MAX(created_at) FROM reviews WHERE pending=0").fetchone())
    signature.append(sum(r.pending for r in reviews.values()))
    if store.is_done(STEP) and store.get_meta("finalized_reviews") == signature:
        return
    scorer.ensure()
    vote = scorer.vote(np.arange(store.n_texts))
    result, P, names = vote.result, vote.P, vote.names
    n = len(vote.ids)
    groups = vote_groups(vote)
    verdicts = store.verdicts()
    source = np.empty(n, dtype=object)
    label = np.empty(n, dtype=object)
    known = np.zeros(n, bool)
    known_right = np.ones(n)  # a weighed reviewer's rows are right with the belief in their label
    for t in range(n):
        r = reviews.get(t)
        lab = int(result.label[t])
        if r is not None and r.label is not None and not r.pending:
            source[t], label[t], known[t] = r.source, r.label, True
            v = verdicts.get(t)
            if v is not None and v[2] is not None:
                known_right[t] = v[1]
                if v[0] != r.label:  # the vote outweighed the answer
                    source[t], label[t] = f"vote:over-{reviewer_of(r.source)}", v[0]
        elif lab < 0:
            source[t], label[t] = (r.source if r is not None else "skipped:no-vote"), None
        else:
            source[t], label[t] = (r.source if r is not None else str(groups[t])), labels[lab]
    fitted = fit_trust(store, scorer, trainer, registry, labels, vote, source, label, known, seed, known_right)

    def records() -> Iterator[tuple[Any, ...]]:
        for t in range(n):
            lab = int(result.label[t])
            voted = None if lab < 0 else labels[lab]
            vconf = None if lab < 0 else round(float(result.confidence[t]), 6)
            votes = json.dumps({nm: None if np.isnan(P[t, j]).any() else labels[int(P[t, j].argmax())]
                                for j, nm in enumerate(names)})
            r = reviews.get(t)
            v = verdicts.get(t)
            if known[t] and v is not None and v[2] is not None:  # a weighed answer: the belief in the decision
                yield (t, label[t], round(float(v[1]), 6), source[t], voted, vconf, votes)
            elif known[t]:
                yield (t, r.label, r.confidence, r.source, voted, vconf, votes)  # type: ignore[union-attr]
            elif voted is None:
                yield (t, None, None, source[t], None, None, votes)
            else:
                yield (t, voted, round(float(fitted.calibrated[t]), 6), source[t], voted, vconf, votes)

    store.put_final(records(), meta={"trust": fitted.to_meta(), "finalized_reviews": signature})
