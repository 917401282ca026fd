"""Encode: one pass of each shared sentence encoder over the unique texts, cached per chunk in the run
store; every embedding-based specialist and the bootstrap sampler read it from there. When no
specialist reads embeddings, only the few thousand rows the bootstrap sampler fits on are encoded
(`encode_ids`), so the encoder's cost no longer grows with the input."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..engine import ChunkJob, EncodeWorker, Engine, LocalEngine
from ..progress import Progress
from ..specialists import DEFAULT_ENCODER
from ..specialists.base import bounded, reads
from ..store import CHUNK, RunStore


def encoders_needed(models: Iterable[object]) -> list[str]:
    """The encoders the specialists read (each encodes every row)."""
    encs = {m.encoder for m in models if reads(m)[1] and m.encoder}  # type: ignore[attr-defined]
    return sorted(encs)


def bootstrap_encoder(encoders: list[str]) -> str:
    """The encoder the bootstrap sampler reads: one the specialists read, else the default one."""
    return encoders[0] if encoders else DEFAULT_ENCODER


def encode(store: RunStore, encoder_ids: list[str], progress: Progress, engine: Engine | None = None) -> None:
    """Embeddings of every chunk that has none yet, each stored as soon as it is computed (here, or on
    the engine's workers), so a killed run resumes with the chunks left."""
    engine = engine or LocalEngine()
    n = store.n_texts
    for enc_id in encoder_ids:
        todo = [c for c in range(-(-n // CHUNK)) if not store.has_embeddings(enc_id, c)]
        if not todo:
            continue
        spans = {c: (c * CHUNK, min((c + 1) * CHUNK, n)) for c in todo}
        jobs = (ChunkJob((c,), [bounded(t) for t in store.texts(a, b)]) for c, (a, b) in spans.items())
        with progress.bar(f"encoding ({enc_id})", sum(b - a for a, b in spans.values())) as bar:
            for (c,), emb in engine.map(EncodeWorker(enc_id), jobs):
                store.put_embeddings(enc_id, c, emb)
                bar.advance(spans[c][1] - spans[c][0])


def encode_ids(store: RunStore, enc_id: str, ids: np.ndarray, progress: Progress,
               engine: Engine | None = None) -> np.ndarray:
    """Embeddings of just these rows, not stored (the bootstrap sampler's rows, when no specialist
    reads embeddings), rounded to float16 as stored ones are, so the sample is the one they give."""
    engine = engine or LocalEngine()
    ids = np.asarray(ids, dtype=np.int64).tolist()
    starts = range(0, len(ids), CHUNK)

    def job(s: int) -> ChunkJob:
        texts = store.texts_by_id(ids[s:s + CHUNK])
        return ChunkJob((s,), [bounded(texts[t][0]) for t in ids[s:s + CHUNK]])

    parts: dict[int, np.ndarray] = {}
    with progress.bar(f"encoding the bootstrap sample's rows ({enc_id})", len(ids)) as bar:
        for (s,), emb in engine.map(EncodeWorker(enc_id), (job(s) for s in starts)):
            parts[s] = emb.astype(np.float16).astype(np.float32)
            bar.advance(len(emb))
    return np.concatenate([parts[s] for s in starts]) if parts else np.zeros((0, 0), np.float32)
