"""Ingest's deduplication: one text id per distinct text, dense, in order of first appearance, across
chunks, across a restart, and when two texts share the first bytes of their hash."""

from __future__ import annotations

import random

import numpy as np
import pytest

from labeljury.store import RunStore
from labeljury.store import texts as store_module


def _texts(n: int, seed: int) -> list[str | None]:
    rng = random.Random(seed)
    pool = [f"text number {i} " + "x" * rng.randrange(5) for i in range(n // 2)]
    out: list[str | None] = [rng.choice(pool) for _ in range(n)]
    for i in rng.sample(range(n), n // 20):
        out[i] = None
    return out


def _ingest(run_dir, values: list[str | None], chunk: int, restart_every: int | None = None) -> None:
    """`values` in chunks of `chunk` rows; with `restart_every`, a new store (a new process's view:
    the hashes read back from the table) every that many chunks."""
    s = RunStore(run_dir)
    keys = s.text_keys()
    try:
        for n, start in enumerate(range(0, len(values), chunk)):
            if restart_every and n and n % restart_every == 0:
                s.close()
                s = RunStore(run_dir)
                keys = s.text_keys()
            part = values[start : start + chunk]
            s.add_rows(start, part, [None if v is not None else "empty" for v in part], keys)
    finally:
        s.close()


def _check(run_dir, values: list[str | None]) -> None:
    with RunStore.existing(run_dir) as s:
        ids, reasons = s.row_text_ids(0, len(values))
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        assert s.n_texts == len(distinct)
        assert s.texts(0, s.n_texts) == distinct  # dense ids in order of first appearance
        for v, t, why in zip(values, ids.tolist(), reasons, strict=True):
            if v is None:
                assert t == -1 and why == "empty"
            else:
                assert distinct[t] == v


@pytest.mark.parametrize("restart_every", [None, 2])
def test_duplicates_share_one_id_across_chunks_and_restarts(tmp_path, restart_every):
    values = _texts(3_000, seed=4)
    _ingest(tmp_path / "run", values, chunk=250, restart_every=restart_every)
    _check(tmp_path / "run", values)


def test_texts_whose_hashes_share_their_first_bytes_stay_apart(tmp_path, monkeypatch):
    real = store_module.text_hash

    def clashing(text: str) -> bytes:  # half the texts share one 8-byte prefix: only the rest differs
        h = real(text)
        return (b"\x07" * 8 + h[8:]) if int.from_bytes(h[:1], "big") % 2 else h

    monkeypatch.setattr(store_module, "text_hash", clashing)
    values = _texts(1_200, seed=5)
    _ingest(tmp_path / "run", values, chunk=100, restart_every=3)
    _check(tmp_path / "run", values)


def test_an_older_store_with_a_unique_hash_index_still_ingests(tmp_path):
    values = _texts(600, seed=6)
    with RunStore(tmp_path / "run") as s:  # how earlier versions made the table: a unique index on the hash
        s.conn.execute("CREATE UNIQUE INDEX old_unique_hash ON texts(hash)")
    _ingest(tmp_path / "run", values, chunk=150, restart_every=2)
    _check(tmp_path / "run", values)


def test_the_keys_in_memory_are_sixteen_bytes_a_text(tmp_path):
    values = [f"row {i}" for i in range(5_000)]
    _ingest(tmp_path / "run", values, chunk=1_000)
    with RunStore(tmp_path / "run") as s:
        keys = s.text_keys()
        assert len(keys.keys) + len(keys.extra) == 5_000
        assert keys.keys.nbytes + keys.ids.nbytes == 16 * len(keys.keys)
        assert np.all(np.diff(keys.keys) > 0)
