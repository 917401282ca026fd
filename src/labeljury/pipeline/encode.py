"""Encode: one pass of each shared sentence encoder over the unique texts, cached per chunk in the run
store; every embedding-based specialist and the bootstrap sampler read it from there."""

from __future__ import annotations

from collections.abc import Iterable

from ..progress import Progress
from ..specialists import DEFAULT_ENCODER, get_encoder
from ..specialists.base import bounded
from ..store import CHUNK, RunStore


def encoders_needed(models: Iterable[object], bootstrap: bool) -> list[str]:
    """The encoders the specialists read; the bootstrap sampler needs one even when none does."""
    encs = {m.encoder for m in models  # type: ignore[attr-defined]
            if m.input_kind in ("embedding", "text+embedding") and m.encoder}  # type: ignore[attr-defined]
    if bootstrap and not encs:
        encs.add(DEFAULT_ENCODER)
    return sorted(encs)


def encode(store: RunStore, encoder_ids: list[str], progress: Progress) -> None:
    n = store.n_texts
    for enc_id in encoder_ids:
        todo = [c for c in range(-(-n // CHUNK)) if not store.has_embeddings(enc_id, c)]
        if not todo:
            continue
        encoder = get_encoder(enc_id)
        spans = [(c, c * CHUNK, min((c + 1) * CHUNK, n)) for c in todo]
        with progress.bar(f"encoding ({enc_id})", sum(b - a for _, a, b in spans)) as bar:
            for c, a, b in spans:
                store.put_embeddings(enc_id, c, encoder.encode([bounded(t) for t in store.texts(a, b)]))
                bar.advance(b - a)
