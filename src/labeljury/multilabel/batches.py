"""A multi-label batch that continues an earlier one (`labeljury run ... --from EARLIER.run`): the drift test on
the run store's embeddings (`pipeline.carry.test_drift`, as for single-label batches), and this batch's estimated
micro-F1 against the earlier batch's. The carrying itself is `pipeline.carry.carry`: sets are stored as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..pipeline.carry import test_drift
from ..progress import Progress
from ..sources import DRIFT, FROM_RUN
from ..specialists import DEFAULT_ENCODER
from ..store import RunStore
from .trust import ESTIMATE
from .views import stored_rows


def drifted(store: RunStore, seed: int, progress: Progress) -> bool:
    """Whether this batch drifted from the earlier one it continues (`pipeline.carry.test_drift`, on the stored
    embeddings), or brought nothing from it: then the heads do not learn from the earlier rows and the first
    sample is kept."""

    class Stored:  # the embeddings `test_drift` reads, from the run store
        def embeddings(self, encoder: str, ids: np.ndarray) -> np.ndarray:
            return stored_rows(np.asarray(ids, np.int64), lambda c: store.get_embeddings(encoder, c))

    drift = test_drift(store, Stored(), DEFAULT_ENCODER, seed, progress)
    return bool(drift.get("drifted")) or not store.carried_totals()[0]


def compare_with_earlier(store: RunStore, progress: Progress) -> None:
    """This batch's estimated micro-F1 against the earlier batch's: a drop beyond both intervals is said."""

    def micro(s: RunStore) -> dict[str, Any] | None:
        return next((e for e in (s.get_meta(ESTIMATE) or {}).get("estimates") or []
                     if e["metric"] == "micro_f1"), None)

    where = store.get_meta(FROM_RUN)
    ours = micro(store)
    if where is None or ours is None or not (Path(where) / "run.db").is_file():
        return
    with RunStore.existing(where) as s:
        theirs = micro(s)
    if theirs is None:
        return
    dropped = ours["high"] < theirs["low"]
    drift = dict(store.get_meta(DRIFT) or {})
    drift["estimate"] = {"metric": "micro_f1", "earlier": theirs["value"], "earlier_low": theirs["low"],
                         "earlier_high": theirs["high"], "now": ours["value"], "dropped": dropped}
    store.set_meta(DRIFT, drift)
    if dropped:
        progress.log(f"WARNING: this batch's sets are less right than the earlier batch's beyond doubt: estimated "
                     f"micro-F1 {ours['value']:.1%} [{ours['low']:.1%}, {ours['high']:.1%}] against "
                     f"{theirs['value']:.1%} [{theirs['low']:.1%}, {theirs['high']:.1%}]. Check the batch "
                     "(labeljury report), or give it more reviews")
