"""Each text's shared-encoder embedding and each specialist version's predictions, stored per chunk of
CHUNK text ids (float16 embeddings, float32 task-ordered probabilities)."""

from __future__ import annotations

import sqlite3

import numpy as np

from .tables import Tables


class FeatureRecords(Tables):
    def get_embeddings(self, encoder: str, chunk: int) -> np.ndarray | None:
        row = self.conn.execute(
            "SELECT dim, data FROM embeddings WHERE encoder=? AND chunk=?", (encoder, chunk)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[1], dtype=np.float16).reshape(-1, row[0]).astype(np.float32)

    def put_embeddings(self, encoder: str, chunk: int, emb: np.ndarray) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO embeddings(encoder, chunk, dim, data) VALUES (?,?,?,?)",
            (encoder, chunk, int(emb.shape[1]), np.ascontiguousarray(emb, dtype=np.float16).tobytes()))

    def has_embeddings(self, encoder: str, chunk: int) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM embeddings WHERE encoder=? AND chunk=?", (encoder, chunk)).fetchone() is not None

    def get_predictions(self, specialist: str, version: int, chunk: int) -> np.ndarray | None:
        row = self.conn.execute(
            "SELECT k, data FROM predictions WHERE specialist=? AND version=? AND chunk=?",
            (specialist, version, chunk)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[1], dtype=np.float32).reshape(-1, row[0]).copy()

    def prediction_chunks(self, specialist: str, version: int) -> set[int]:
        """The chunks that hold predictions of this specialist version."""
        return {c for (c,) in self.conn.execute(
            "SELECT chunk FROM predictions WHERE specialist=? AND version=?", (specialist, version))}

    def put_predictions(self, specialist: str, version: int, chunk: int, proba: np.ndarray) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO predictions(specialist, version, chunk, k, data) VALUES (?,?,?,?,?)",
            (specialist, version, chunk, int(proba.shape[1]),
             np.ascontiguousarray(proba, dtype=np.float32).tobytes()))

    def delete_predictions(self, specialist: str, below_version: int, conn: sqlite3.Connection | None = None) -> None:
        """Forget the predictions of a specialist's superseded versions."""
        self._c(conn).execute("DELETE FROM predictions WHERE specialist=? AND version<?",
                                    (specialist, below_version))
