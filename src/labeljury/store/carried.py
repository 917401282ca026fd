"""Carried records: what a run continuing an earlier one (`--from`) brings from it. Each carried text is a
text of this store: one of the input's own when the new batch holds it too (its earlier review is reused,
not asked again), else a text after the input's (no input row), which only trains. The reference texts,
a uniform sample of the earlier input, are kept the same way without a label: the drift test compares the
new batch with them. Both are routed as `carried` / `reference`: never asked, never counted in the budget."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..sources import CARRIED, CARRY, DRIFT, INPUT_TEXTS, REFERENCE, WEIGHED
from .tables import Tables
from .texts import text_hash


class CarriedRecords(Tables):
    @property
    def n_input_texts(self) -> int:
        """The texts of this run's own input: ids 0..n-1 (carried texts have the ids after them)."""
        n = self.get_meta(INPUT_TEXTS)  # type: ignore[attr-defined]
        return self.n_texts if n is None else int(n)  # type: ignore[attr-defined]

    @property
    def learns_from_carried(self) -> bool:
        """Whether the specialists learn from the rows an earlier batch reviewed: not when this batch has
        drifted from it (they would learn another domain: the run goes on as a fresh one would)."""
        return not (self.get_meta(DRIFT) or {}).get("drifted")  # type: ignore[attr-defined]

    def add_carried(self, texts: Sequence[str], labels: Sequence[str], sources: Sequence[str],
                    beliefs: Sequence[float | None], reference: Sequence[str], *, cap: int | None = None,
                    newest: Sequence[bool] | None = None, seed: int = 0) -> tuple[int, int]:
        """Record the earlier run's reviewed texts (`labels`, `sources` such as earlier:gold; `beliefs`: for
        the answer of a weighed reviewer, the earlier weighing's belief in its label, else None) and its
        reference sample, and that the carry step is done, in one transaction. Of the reviewed texts this
        input lacks, at most `cap` are kept (what a refit can learn from: `continual.max_train_rows`), those
        `newest` marks first, then a uniform sample; every one this input holds is kept (reused). Returns
        (carried texts that this input holds too, carried texts added after the input's)."""
        keys = self.text_keys()  # type: ignore[attr-defined]
        now = time.time()
        with self.transaction() as c:  # type: ignore[attr-defined]
            n_input = c.execute("SELECT COALESCE(MAX(text_id) + 1, 0) FROM texts").fetchone()[0]
            next_id = n_input
            hashes = [text_hash(t) for t in (*texts, *reference)]
            known = keys.find(list(dict.fromkeys(hashes)), c)
            dropped = _beyond_cap([i for i in range(len(texts)) if hashes[i] not in known], cap, newest, seed)
            new_texts, reviews, routing = [], [], []
            reused = 0
            taken: set[int] = set()
            for i, (text, h) in enumerate(zip((*texts, *reference), hashes, strict=True)):
                if i in dropped:
                    continue
                tid = known.get(h)
                if tid is None:
                    tid = known[h] = next_id
                    next_id += 1
                    new_texts.append((tid, h, text, -1))
                elif tid < n_input and i < len(texts) and tid not in taken:
                    reused += 1
                if tid in taken or (i >= len(texts) and tid < n_input):
                    continue  # reviewed and in the reference sample too; or in this input: not a reference
                taken.add(tid)
                if i < len(texts):
                    belief = beliefs[i]
                    reviews.append((tid, labels[i], sources[i], belief, None if belief is None else WEIGHED, now))
                    routing.append((tid, CARRIED, now))
                else:
                    routing.append((tid, REFERENCE, now))
            c.executemany("INSERT INTO texts(text_id, hash, text, first_row) VALUES (?,?,?,?)", new_texts)
            c.executemany("INSERT INTO reviews(text_id, label, source, confidence, reason, pending, created_at) "
                          "VALUES (?,?,?,?,?,0,?)", reviews)
            c.executemany("INSERT OR IGNORE INTO routing(text_id, why, stage, created_at) VALUES (?,?,0,?)", routing)
            self.set_meta(INPUT_TEXTS, n_input, c)  # type: ignore[attr-defined]
            self.mark_done(CARRY, c)  # type: ignore[attr-defined]
        return reused, len(new_texts)


def _beyond_cap(outside: list[int], cap: int | None, newest: Sequence[bool] | None, seed: int) -> set[int]:
    """The positions of `outside` not kept under `cap`: the newest first, then a uniform sample of the rest."""
    if cap is None or len(outside) <= cap:
        return set()
    rng = np.random.default_rng(seed * 7919 + 29)
    first = [i for i in outside if newest is not None and newest[i]]
    rest = [i for i in outside if not (newest is not None and newest[i])]
    if len(first) >= cap:
        kept = set(rng.choice(first, cap, replace=False).tolist())
    else:
        kept = set(first) | set(rng.choice(rest, cap - len(first), replace=False).tolist())
    return set(outside) - kept
