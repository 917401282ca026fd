"""Texts and input rows: the unique non-empty texts (0-based `text_id` in order of first appearance) and,
for every input row, its text id or why it is skipped. Duplicate texts share one id."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import RunStoreError
from .db import by_ids
from .tables import Tables


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class TextKeys:
    """The texts already in a store, for deduplicating new ones: the first 8 bytes of each text's
    hash, sorted, with its text id (16 bytes a text in memory: 160 MB at 10M texts).

    Why not SQLite's unique index on the hash: its keys are random, so every chunk of new texts dirtied
    nearly every page of it, and each commit wrote them all again: the cost per row grew with the
    rows already in (1.3x from 100k to 1M). A hit on the 8 bytes is confirmed against the stored
    16-byte hash; two texts sharing 8 bytes (odds about n^2 / 2^65) are kept apart in `extra`."""

    def __init__(self, conn: sqlite3.Connection):
        self.keys = np.zeros(0, np.int64)
        self.ids = np.zeros(0, np.int64)
        self.extra: dict[bytes, int] = {}  # the full hash of a text whose 8 bytes another one has
        last = -1
        while True:  # read in text-id order, in batches: memory is the arrays, not the rows
            batch = conn.execute("SELECT text_id, hash FROM texts WHERE text_id > ? ORDER BY text_id LIMIT ?",
                                       (last, 200_000)).fetchall()
            if not batch:
                break
            self.add([bytes(h) for _, h in batch], [t for t, _ in batch])
            last = batch[-1][0]

    @staticmethod
    def _prefix(hashes: Sequence[bytes]) -> np.ndarray:
        return np.frombuffer(b"".join(h[:8] for h in hashes), dtype="<i8").astype(np.int64)

    def _slot(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self.keys, q)
        hit = pos < len(self.keys)
        hit[hit] = self.keys[pos[hit]] == q[hit]
        return pos, hit

    def find(self, hashes: Sequence[bytes], conn: sqlite3.Connection) -> dict[bytes, int]:
        """{hash: text id} of those of `hashes` (distinct) already in the store."""
        if not hashes or not len(self.keys):
            return {}
        pos, hit = self._slot(self._prefix(hashes))
        candidates: dict[int, list[bytes]] = {}
        for h, p, ok in zip(hashes, pos.tolist(), hit.tolist(), strict=True):
            if ok:
                candidates.setdefault(int(self.ids[p]), []).append(h)
        found: dict[bytes, int] = {}
        tids = list(candidates)
        for i in range(0, len(tids), 500):
            part = tids[i : i + 500]
            q = f"SELECT text_id, hash FROM texts WHERE text_id IN ({','.join('?' * len(part))})"
            for t, stored in conn.execute(q, part):
                for h in candidates[t]:
                    if bytes(stored) == h:
                        found[h] = t
                    elif h in self.extra:
                        found[h] = self.extra[h]
        return found

    def add(self, hashes: Sequence[bytes], ids: Sequence[int]) -> None:
        """Record new texts (committed, distinct, none already recorded)."""
        if not hashes:
            return
        q = self._prefix(hashes)
        new_ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(q, kind="stable")
        q, new_ids = q[order], new_ids[order]
        taken = self._slot(q)[1]
        taken[1:] |= q[1:] == q[:-1]  # 8 bytes shared within the batch too
        for i in np.flatnonzero(taken).tolist():
            self.extra[hashes[int(order[i])]] = int(new_ids[i])
        q, new_ids = q[~taken], new_ids[~taken]
        at = np.searchsorted(self.keys, q)
        self.keys = np.insert(self.keys, at, q)
        self.ids = np.insert(self.ids, at, new_ids)



class TextRecords(Tables):
    @property
    def n_rows(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    @property
    def n_texts(self) -> int:
        # text ids are dense from 0: the largest one is read from the primary key, not counted
        return self.conn.execute("SELECT COALESCE(MAX(text_id) + 1, 0) FROM texts").fetchone()[0]

    def add_rows(self, start: int, values: Sequence[str | None], skip_reasons: Sequence[str | None],
                 keys: TextKeys | None = None) -> None:
        """Record input rows `start..start+len(values)-1` in one transaction. `values[i]` is the
        text, or None with `skip_reasons[i]` set. Duplicate texts share one text id. `keys` (from
        `text_keys()`, kept across calls by the ingest step) spares reading every stored hash again."""
        keys = keys if keys is not None else self.text_keys()
        with self.transaction() as c:
            next_id = c.execute("SELECT COALESCE(MAX(text_id) + 1, 0) FROM texts").fetchone()[0]
            hashes = {v: text_hash(v) for v in values if v is not None}
            known = keys.find(list(dict.fromkeys(hashes.values())), c)
            new_texts = []
            row_values = []
            for offset, (v, why) in enumerate(zip(values, skip_reasons, strict=True)):
                row = start + offset
                if v is None:
                    row_values.append((row, None, why))
                    continue
                h = hashes[v]
                tid = known.get(h)
                if tid is None:
                    tid = next_id
                    next_id += 1
                    known[h] = tid
                    new_texts.append((tid, h, v, row))
                row_values.append((row, tid, None))
            c.executemany("INSERT INTO texts(text_id, hash, text, first_row) VALUES (?,?,?,?)", new_texts)
            c.executemany("INSERT INTO rows(row_idx, text_id, skip_reason) VALUES (?,?,?)", row_values)
            self.set_meta("ingested_rows", start + len(values), c)
        keys.add([h for _, h, _, _ in new_texts], [t for t, _, _, _ in new_texts])  # once committed

    def text_keys(self) -> TextKeys:
        """The hashes of the texts stored so far, for `add_rows`."""
        return TextKeys(self.conn)

    def texts(self, start: int, stop: int) -> list[str]:
        """Texts with ids in [start, stop), in id order."""
        return [t for (t,) in self.conn.execute(
            "SELECT text FROM texts WHERE text_id >= ? AND text_id < ? ORDER BY text_id", (start, stop))]

    def texts_by_id(self, ids: Iterable[int]) -> dict[int, tuple[str, int]]:
        """{text_id: (text, first_row)}"""
        return {t: (x, r) for t, x, r in by_ids(self.conn, "SELECT text_id, text, first_row FROM texts WHERE text_id IN ",
                                                  ids)}

    def row_text_ids(self, start: int, stop: int) -> tuple[np.ndarray, list[str | None]]:
        """text ids (-1 for skipped) and skip reasons of input rows [start, stop)."""
        rows = self.conn.execute(
            "SELECT row_idx, text_id, skip_reason FROM rows WHERE row_idx >= ? AND row_idx < ? ORDER BY row_idx",
            (start, stop)).fetchall()
        if len(rows) != stop - start:
            raise RunStoreError(
                f"the run store has {len(rows)} of input rows {start}..{stop - 1}; the input file changed "
                "since the run started — rerun with a new --run-dir")
        ids = np.array([-1 if t is None else t for _, t, _ in rows], dtype=np.int64)
        return ids, [s for _, _, s in rows]

    def index_rows_by_text(self) -> None:
        """An index of the input rows by text id, for `row_counts` (built once, after ingest: kept
        out of ingest, where it would slow every insert)."""
        if not self.readonly:
            self.conn.execute("CREATE INDEX IF NOT EXISTS rows_by_text ON rows(text_id)")

    def row_counts(self, start: int, stop: int) -> np.ndarray:
        """(stop - start,) how many input rows hold each text id in [start, stop) (`index_rows_by_text`
        first, or each call reads every row)."""
        out = np.zeros(stop - start, np.float64)
        for t, n in self.conn.execute("SELECT text_id, COUNT(*) FROM rows WHERE text_id >= ? AND text_id < ? "
                                      "GROUP BY text_id", (start, stop)):
            out[t - start] = n
        return out

    def row_counts_of(self, text_ids: np.ndarray) -> np.ndarray:
        """How many input rows hold each of `text_ids` (`index_rows_by_text` first)."""
        ids = [int(t) for t in text_ids]
        counts: dict[int, int] = dict(by_ids(self.conn, "SELECT text_id, COUNT(*) FROM rows WHERE text_id IN ", ids,
                                                " GROUP BY text_id"))
        return np.array([counts.get(t, 0) for t in ids], np.float64)

    @property
    def n_skipped(self) -> int:
        """Input rows without a text (empty, or not a string)."""
        return self.conn.execute("SELECT COUNT(*) FROM rows WHERE text_id IS NULL").fetchone()[0]

    def skipped_counts(self) -> dict[str, int]:
        """{why: input rows} of the skipped rows."""
        return dict(self.conn.execute("SELECT skip_reason, COUNT(*) FROM rows WHERE text_id IS NULL GROUP BY skip_reason"))
