"""Encode: one pass of each shared sentence encoder over the unique texts, cached per chunk in the run
store; every embedding-based specialist and the bootstrap sampler read it from there."""

from __future__ import annotations

from collections.abc import Iterable

from ..engine import ChunkJob, EncodeWorker, Engine, LocalEngine
from ..progress import Progress
from ..specialists import DEFAULT_ENCODER
from ..specialists.base import bounded
from ..store import CHUNK, RunStore


def encoders_needed(models: Iterable[object], bootstrap: bool) -> list[str]:
    """The encoders the specialists read; the bootstrap sampler needs one even when none does."""
    encs = {m.encoder for m in models  # type: ignore[attr-defined]
            if m.input_kind in ("embedding", "text+embedding") and m.encoder}  # type: ignore[attr-defined]
    if bootstrap and not encs:
        encs.add(DEFAULT_ENCODER)
    return sorted(encs)


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
