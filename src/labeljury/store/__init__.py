"""The run store: a run directory with one SQLite database (WAL) that every step reads from and
writes to; nothing outside this package writes SQL on its tables. Each step commits its results in small transactions and records what it finished, so a
run killed at any moment (even `kill -9`) resumes where it stopped: no row lost or duplicated, no
review asked twice.

Layout of `RUN_DIR/run.db`:
  meta         key/value: task, input fingerprint, progress markers
  texts        unique non-empty texts, 0-based `text_id` in order of first appearance
  rows         one per input row: its text_id, or the reason it is skipped
  embeddings   shared encoder output, float16, per chunk of CHUNK text ids
  predictions  each specialist version's task-ordered probabilities, per (specialist, version, chunk)
  specialists  which specialists run, their label map, current version, validation score, whether
               they were dropped and why
  versions     every promoted version of a trainable specialist: its training rows, checkpoint and
               measurements (the `registry` module is their one reader and writer)
  routing      which texts were sent for review, why (audit / bootstrap / hard) and their hardness;
               for an audit row, the stage whose hardest rows it would have been among (`hard_stage`)
  reviews      the deciding review of each row (or why there is none), stored as each arrives
  answers      every reviewer's own answer to a row (in a cascade, the ones before the decider too)
  priors       the vote's distribution over the labels of each reviewed row, taken before its review
  verdicts     each reviewed row's decided label: the reviewer's answer weighed against the vote
               (`weighing`), the belief in it, whether it is flagged, the label to train on
  human_queue  rows waiting for a person, and the people's answers (`review.queue`)
  final        the label, confidence and provenance of every text
  stages       continual-learning stages and their metrics

One module per kind of record, each a family of methods of `RunStore`: `meta` (settings, steps done),
`texts` (texts and input rows), `predictions` (embeddings and predictions), `specialists` (specialists
and versions), `routing`, `reviews` (reviews, answers, priors, verdicts), `outputs` (final labels,
stages); `db` holds the schema, the connection and the one transaction helper; `records` the typed
records. The LLM layer keeps its call cache and spend journal in tables of its own in the same file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import RunStoreError
from .db import (
    CHUNK,
    SCHEMA_VERSION,
    check_run_dir,
    check_store_file,
    connect,
    lock_run_dir,
    storage_error,
    storage_errors,
    transaction,
)
from .meta import MetaRecords
from .outputs import OutputRecords
from .predictions import FeatureRecords
from .records import Answer, FinalLabel, ReviewResult, Verdict
from .reviews import ReviewRecords
from .routing import RoutingRecords
from .carried import CarriedRecords
from .specialists import SpecialistRecords, ids_hash
from .texts import TextKeys, TextRecords, text_hash

__all__ = ["CHUNK", "Answer", "FinalLabel", "ReviewResult", "RunStore", "TextKeys", "Verdict", "check_run_dir",
           "check_store_file", "ids_hash",
           "lock_run_dir", "storage_error", "storage_errors", "text_hash", "transaction"]


class RunStore(MetaRecords, TextRecords, FeatureRecords, SpecialistRecords, RoutingRecords, ReviewRecords,
               OutputRecords, CarriedRecords):
    """One run directory. Not thread-safe: one connection, used from the pipeline's thread.

    `RunStore(dir)` opens a run directory to work in (creating it if needed); `RunStore.existing(dir)`
    opens one that must already hold a run store, read-only (for `status`, `export`, `export-model`).
    Either refuses a run.db that is not a labeljury run store."""

    def __init__(self, run_dir: str | Path, *, readonly: bool = False):
        self.run_dir = Path(run_dir)
        self.db_path = self.run_dir / "run.db"
        self.readonly = readonly
        self._lock: Any = None
        check_store_file(self.db_path, fresh_ok=not readonly)
        if not readonly:
            check_run_dir(self.run_dir)
        try:
            self.conn = connect(self.db_path, readonly=readonly)
        except (OSError, sqlite3.DatabaseError) as err:
            raise storage_error(err, self.run_dir) from None
        version = self.get_meta("schema_version")
        if version is None and not readonly:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            self.close()
            raise RunStoreError(f"run directory {str(self.run_dir)!r} was made by another version of labeljury "
                                f"(run store schema {version}, this one reads {SCHEMA_VERSION}); pass a new --run-dir")

    @classmethod
    def existing(cls, run_dir: str | Path) -> RunStore:
        return cls(run_dir, readonly=True)

    def lock(self) -> None:
        """Hold the run directory for this process until `close`: a second `labeljury run` on it gets
        one line naming the process that has it, instead of two writers racing."""
        self._lock = lock_run_dir(self.run_dir)

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with transaction(self.conn) as c:
            yield c
