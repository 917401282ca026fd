"""Specialists and their versions: which specialists run (label map, current version, validation and
audit measurements, dropped or not and why), and every promoted version of a trainable one (its
training rows, checkpoint and measurements). The `registry` module is their one reader and writer."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .tables import Tables


def ids_hash(ids: np.ndarray) -> str:
    """A fingerprint of a sorted set of text ids: two versions trained on the same rows share it."""
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).tobytes(), digest_size=16).hexdigest()


def _pack_ids(ids: np.ndarray) -> bytes:
    # sorted ids as zlib-compressed deltas: ~1 byte an id where the rows are dense
    return zlib.compress(np.diff(ids, prepend=0).astype(np.int64).tobytes(), 1)


def _unpack_ids(blob: bytes) -> np.ndarray:
    return np.cumsum(np.frombuffer(zlib.decompress(blob), dtype=np.int64))



class SpecialistRecords(Tables):
    def save_specialists(self, entries: Sequence[dict[str, Any]]) -> None:
        with self.transaction() as c:
            for pos, e in enumerate(entries):
                c.execute(
                    "INSERT INTO specialists(name, position, spec, status, version) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET position=excluded.position, spec=excluded.spec",
                    (e["name"], pos, json.dumps(e["spec"]), "active", 0))

    def specialists(self) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT name, spec, status, version, validation_accuracy, validation_rows, note, label_map, "
            "audit_accuracy, audit_rows, audit_version, audit_basis FROM specialists ORDER BY position")
        return [dict(name=n, spec=json.loads(s), status=st, version=v, validation_accuracy=a,
                     validation_rows=r, note=note, label_map=None if lm is None else json.loads(lm),
                     audit_accuracy=aa, audit_rows=ar, audit_version=av, audit_basis=ab)
                for n, s, st, v, a, r, note, lm, aa, ar, av, ab in cur]

    def update_specialist(self, name: str, conn: sqlite3.Connection | None = None, **fields: Any) -> None:
        allowed = {"status", "version", "validation_accuracy", "validation_rows", "note", "label_map",
                   "audit_accuracy", "audit_rows", "audit_version", "audit_basis"}
        if not fields.keys() <= allowed:
            raise ValueError(f"unknown specialist fields {set(fields) - allowed}")
        if "label_map" in fields and fields["label_map"] is not None:
            fields["label_map"] = json.dumps(fields["label_map"])
        sets = ", ".join(f"{k}=?" for k in fields)
        self._c(conn).execute(f"UPDATE specialists SET {sets} WHERE name=?", (*fields.values(), name))

    def put_version(self, specialist: str, version: int, *, stage: int | None, train_ids: np.ndarray,
                    checkpoint: str | None, metrics: dict[str, Any], conn: sqlite3.Connection | None = None) -> None:
        ids = np.ascontiguousarray(np.sort(np.asarray(train_ids, dtype=np.int64)))
        self._c(conn).execute(
            "INSERT OR REPLACE INTO versions(specialist, version, stage, train_count, train_hash, train_ids, "
            "checkpoint, metrics, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (specialist, version, stage, len(ids), ids_hash(ids), _pack_ids(ids), checkpoint,
             json.dumps(metrics), time.time()))

    def set_version_checkpoint(self, specialist: str, version: int, checkpoint: str | None) -> None:
        self.conn.execute("UPDATE versions SET checkpoint=? WHERE specialist=? AND version=?",
                          (checkpoint, specialist, version))

    def versions(self, specialist: str | None = None) -> list[dict[str, Any]]:
        """Version records (without their training rows: see `train_ids`), oldest first."""
        q = ("SELECT specialist, version, stage, train_count, train_hash, checkpoint, metrics, created_at "
             "FROM versions")
        args: tuple[Any, ...] = ()
        if specialist is not None:
            q, args = q + " WHERE specialist=?", (specialist,)
        return [dict(specialist=n, version=v, stage=st, train_count=c, train_hash=h, checkpoint=ck,
                     metrics=json.loads(m), created_at=t)
                for n, v, st, c, h, ck, m, t in self.conn.execute(q + " ORDER BY specialist, version", args)]

    def train_ids(self, specialist: str, version: int) -> np.ndarray:
        row = self.conn.execute("SELECT train_ids FROM versions WHERE specialist=? AND version=?",
                                (specialist, version)).fetchone()
        return np.zeros(0, np.int64) if row is None else _unpack_ids(row[0])

    def update_version_metrics(self, specialist: str, version: int, metrics: dict[str, Any],
                               conn: sqlite3.Connection | None = None) -> None:
        self._c(conn).execute("UPDATE versions SET metrics=? WHERE specialist=? AND version=?",
                                    (json.dumps(metrics), specialist, version))
