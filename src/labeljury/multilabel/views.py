"""The views of a multi-label run's texts that its specialists read: the run store's embeddings, TF-IDF of the
texts (fitted only when a specialist reads it), each zero-shot specialist's cosines to its label prototypes,
each hub model's stored scores, and the texts themselves (a fine-tuned model's input)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..specialists import DEFAULT_ENCODER
from ..store import CHUNK, RunStore
from .heads import fit_tfidf
from .specialists import SetSpecialist

VOTE_SAMPLE = 20_000  # rows a Dawid-Skene vote learns its specialists' sensitivities and specificities on


def stored_rows(ids: np.ndarray, get: Any) -> np.ndarray:
    """Rows `ids` of a per-chunk array in the run store (`get(chunk)`)."""
    parts, where = [], []
    for c in np.unique(ids // CHUNK):
        mine = np.flatnonzero(ids // CHUNK == c)
        block = get(int(c))
        assert block is not None  # the encode and score steps stored every chunk
        parts.append(block[ids[mine] - c * CHUNK])
        where.append(mine)
    out = np.empty((len(ids), parts[0].shape[1]), parts[0].dtype)
    for p, w in zip(parts, where, strict=True):
        out[w] = p
    return out


class Views:
    """The views of a text the specialists read: the run store's embeddings, TF-IDF of the texts (fitted only
    when a specialist reads it), each zero-shot specialist's cosines to its label prototypes, and each hub
    model's stored scores."""

    def __init__(self, store: RunStore, seed: int, specialists: Sequence[SetSpecialist]):
        self.store = store
        self.specialists = list(specialists)
        self.tfidf: Any = None
        if any(s.view == "tfidf" for s in self.specialists):
            n = store.n_texts
            sample = np.arange(n) if n <= 50_000 else np.sort(np.random.default_rng(seed).choice(n, 50_000,
                                                                                              replace=False))
            texts = store.texts_by_id(sample.tolist())
            self.tfidf = fit_tfidf([texts[int(t)][0] for t in sample], seed)

    def sample(self, seed: int) -> dict[str, Any]:
        """The views of a seeded sample of VOTE_SAMPLE rows (all, when fewer), kept: a vote learns on it."""
        if not hasattr(self, "_sample"):
            n = self.store.n_input_texts
            ids = np.arange(n) if n <= VOTE_SAMPLE else np.sort(
                np.random.default_rng(seed + 17).choice(n, VOTE_SAMPLE, replace=False))
            self._sample = self.of(ids)
        return self._sample

    def of(self, ids: Sequence[int]) -> dict[str, Any]:
        ids = np.asarray(ids, dtype=np.int64)
        E = np.zeros((len(ids), 0), np.float32)  # noqa: N806
        if len(ids):
            E = stored_rows(ids, lambda c: self.store.get_embeddings(DEFAULT_ENCODER, c))  # noqa: N806
        out: dict[str, Any] = {"embedding": E}
        if self.tfidf is not None or any(s.view == "text" for s in self.specialists):
            by_id = self.store.texts_by_id(ids.tolist())
            texts = [by_id[int(t)][0] for t in ids]
            out["text"] = Texts(texts)
            if self.tfidf is not None:
                out["tfidf"] = self.tfidf.transform(texts)
        for s in self.specialists:
            if s.prototypes is not None:
                En = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)  # noqa: N806
                out[s.view] = En @ s.prototypes.T if len(ids) else np.zeros((0, len(s.prototypes)))
            elif s.scorer is not None:
                k = len(s.scorer.labels)
                out[s.view] = (stored_rows(ids, lambda c, n=s.name: self.store.get_predictions(n, 0, c))
                               if len(ids) else np.zeros((0, k), np.float32))
        return out

    def chunks(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """The input's texts, a chunk at a time (not those an earlier batch brought: they only train)."""
        n = self.store.n_input_texts
        for start in range(0, n, CHUNK):
            ids = np.arange(start, min(n, start + CHUNK))
            yield ids, self.of(ids)


class Texts(list):  # type: ignore[type-arg]
    """The texts of some rows: `X[mask]` selects rows, as for the other views' arrays."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, np.ndarray):
            picked = np.flatnonzero(key) if key.dtype == bool else key
            return Texts(list.__getitem__(self, int(i)) for i in picked)
        return list.__getitem__(self, key)
