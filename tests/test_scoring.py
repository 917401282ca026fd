"""The feature cache: bounded in memory, blocks it cannot keep spilled to a folder and read back."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from labeljury.pipeline.ingest import ingest
from labeljury.progress import SilentProgress
from labeljury.scoring import ChunkMemo, Features
from labeljury.store import CHUNK, RunStore

from .conftest import make_rows


def test_blocks_evicted_from_memory_are_read_back_from_the_spill_folder(tmp_path):
    data = tmp_path / "in.csv"
    make_rows(5_000, seed=2).to_csv(data, index=False)
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "stale.npz").write_bytes(b"from another process")
    with RunStore(tmp_path / "run") as store:
        ingest(store, data, "text", SilentProgress())
        features = Features(store, cache_bytes=100_000, spill_dir=spill)
        assert not spill.exists()  # what an earlier process left is not trusted
        computed = []

        def sparse_block(texts):
            computed.append(len(texts))
            rows = np.repeat(np.arange(len(texts)), 3)
            cols = np.array([len(t) % 50 for t in texts for _ in range(3)]) + np.tile([0, 50, 100], len(texts))
            return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), 150))

        def dense_block(texts):
            computed.append(-len(texts))
            return np.array([[len(t), t.count(" ")] for t in texts], np.float32)

        ids = np.arange(store.n_texts)
        memo = ChunkMemo(features, ids)
        first = (memo.block("sparse", sparse_block).toarray(), memo.block("dense", dense_block))
        n_chunks = -(-store.n_texts // CHUNK)
        assert len(computed) == 2 * n_chunks
        assert len(list(spill.glob("*.npy"))) >= n_chunks  # memory holds about a chunk
        again = (memo.block("sparse", sparse_block).toarray(), memo.block("dense", dense_block))
        assert len(computed) == 2 * n_chunks  # nothing computed twice
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])
        # a few rows out of order, through the same path
        some = np.array([4_500, 3, 2_100, 7])
        np.testing.assert_array_equal(ChunkMemo(features, some).block("sparse", sparse_block).toarray(), first[0][some])
        features.close()
        assert not spill.exists()


def test_without_a_spill_folder_evicted_blocks_are_computed_again(tmp_path):
    data = tmp_path / "in.csv"
    make_rows(5_000, seed=2).to_csv(data, index=False)
    with RunStore(tmp_path / "run") as store:
        ingest(store, data, "text", SilentProgress())
        features = Features(store, cache_bytes=20_000)
        computed = []

        def block(texts):
            computed.append(len(texts))
            return np.ones((len(texts), 2), np.float32)

        memo = ChunkMemo(features, np.arange(store.n_texts))
        memo.block("b", block)
        memo.block("b", block)
        assert len(computed) == 2 * -(-store.n_texts // CHUNK)


def test_the_cache_counts_a_text_chunk_by_what_it_holds():
    # texts were counted by their characters and a pointer each: half of what short ones hold, so a
    # cache full of them held twice its bound (and more texts of more chunks as the input grew)
    import tracemalloc

    from labeljury.scoring import _nbytes

    tracemalloc.start()
    texts = [f"a short tweet about the market, number {i}" for i in range(2048)]
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert abs(_nbytes(texts) - held) < 0.1 * held
