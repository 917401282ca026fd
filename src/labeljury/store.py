"""The run store: a run directory with one SQLite database (WAL) that every step reads from and
writes to. Each step commits its results in small transactions and records what it finished, so a
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
               (`review.weigh`), the belief in it, whether it is flagged, the label to train on
  human_queue  rows waiting for a person, and the people's answers (`review.queue`)
  final        the label, confidence and provenance of every text
  stages       continual-learning stages and their metrics
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunStoreError
from .review.base import ReviewResult

CHUNK = 2048  # text ids per embedding / prediction block
# a reviewed row's (decided label, belief, the reviewer's answer, flagged, label to train on)
Verdict = tuple[str | None, float, str | None, bool, str | None]
SCHEMA_VERSION = "2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS texts (text_id INTEGER PRIMARY KEY, hash BLOB NOT NULL,
    text TEXT NOT NULL, first_row INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rows (row_idx INTEGER PRIMARY KEY, text_id INTEGER, skip_reason TEXT);
CREATE TABLE IF NOT EXISTS embeddings (encoder TEXT NOT NULL, chunk INTEGER NOT NULL,
    dim INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (encoder, chunk));
CREATE TABLE IF NOT EXISTS predictions (specialist TEXT NOT NULL, version INTEGER NOT NULL,
    chunk INTEGER NOT NULL, k INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (specialist, version, chunk));
CREATE TABLE IF NOT EXISTS specialists (name TEXT PRIMARY KEY, position INTEGER NOT NULL,
    spec TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0,
    validation_accuracy REAL, validation_rows INTEGER, note TEXT, label_map TEXT,
    audit_accuracy REAL, audit_rows INTEGER, audit_version INTEGER, audit_basis TEXT);
CREATE TABLE IF NOT EXISTS versions (specialist TEXT NOT NULL, version INTEGER NOT NULL,
    stage INTEGER, train_count INTEGER NOT NULL, train_hash TEXT NOT NULL, train_ids BLOB NOT NULL,
    checkpoint TEXT, metrics TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (specialist, version));
CREATE TABLE IF NOT EXISTS routing (text_id INTEGER PRIMARY KEY, why TEXT NOT NULL,
    hardness REAL, stage INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, hard_stage INTEGER);
CREATE TABLE IF NOT EXISTS reviews (text_id INTEGER PRIMARY KEY, label TEXT, source TEXT NOT NULL,
    confidence REAL, reason TEXT, pending INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS final (text_id INTEGER PRIMARY KEY, label TEXT, confidence REAL,
    source TEXT NOT NULL, vote TEXT, vote_confidence REAL, specialist_votes TEXT);
CREATE TABLE IF NOT EXISTS stages (stage INTEGER PRIMARY KEY, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (text_id INTEGER NOT NULL, reviewer TEXT NOT NULL, label TEXT,
    confidence REAL, reason TEXT, source TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (text_id, reviewer));
CREATE TABLE IF NOT EXISTS priors (text_id INTEGER PRIMARY KEY, probs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (text_id INTEGER PRIMARY KEY, label TEXT, belief REAL NOT NULL,
    answer TEXT, flagged INTEGER NOT NULL DEFAULT 0, train TEXT, weight REAL);
CREATE TABLE IF NOT EXISTS human_queue (text_id INTEGER PRIMARY KEY, why TEXT NOT NULL, text TEXT NOT NULL,
    suggestion TEXT, confidence REAL, votes TEXT, llm_label TEXT, llm_confidence REAL, llm_reason TEXT,
    queued_at REAL NOT NULL, lease TEXT, lease_until REAL, skips INTEGER NOT NULL DEFAULT 0,
    label TEXT, answered_by TEXT, answered_at REAL, via TEXT);
"""


def storage_error(err: BaseException, run_dir: Path) -> RunStoreError:
    """One line for a failure of the disk or the database under a run directory."""
    text = str(err)
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) or "full" in text.lower():
        return RunStoreError(f"no space left on the device of {str(run_dir)!r} ({text}); free some space, then rerun "
                             "the same command: the run resumes where it stopped")
    return RunStoreError(f"run directory {str(run_dir)!r} cannot be used ({text}); check it, or pass another --run-dir")


@contextmanager
def storage_errors(run_dir: Path) -> Iterator[None]:
    """Turn a database failure, or a full disk, under `run_dir` into one `RunStoreError` line."""
    try:
        yield
    except sqlite3.Error as err:
        raise storage_error(err, run_dir) from None
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise storage_error(err, run_dir) from None
        raise


def lock_run_dir(run_dir: Path) -> Any:
    """An exclusive lock on `run_dir/lock` (released when the returned file is closed, or the process
    ends, even by kill -9)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, the run proceeds unguarded
        return None
    path = run_dir / "lock"
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        owner = fh.read().strip() or "another process"
        fh.close()
        raise RunStoreError(f"run directory {str(run_dir)!r} is in use by process {owner}; wait for it to finish "
                            "(or stop it), then rerun") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class TextKeys:
    """The texts already in a store, for deduplicating new ones: the first 8 bytes of each text's
    hash, sorted, with its text id (16 bytes a text in memory: 160 MB at 10M texts).

    Why not SQLite's unique index on the hash: its keys are random, so every chunk of new texts dirtied
    nearly every page of it, and each commit wrote them all again: the cost per row grew with the
    rows already in (1.3x from 100k to 1M). A hit on the 8 bytes is confirmed against the stored
    16-byte hash; two texts sharing 8 bytes (odds about n^2 / 2^65) are kept apart in `extra`."""

    def __init__(self, store: RunStore):
        self.keys = np.zeros(0, np.int64)
        self.ids = np.zeros(0, np.int64)
        self.extra: dict[bytes, int] = {}  # the full hash of a text whose 8 bytes another one has
        last = -1
        while True:  # read in text-id order, in batches: memory is the arrays, not the rows
            batch = store.conn.execute("SELECT text_id, hash FROM texts WHERE text_id > ? ORDER BY text_id LIMIT ?",
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


def ids_hash(ids: np.ndarray) -> str:
    """A fingerprint of a sorted set of text ids: two versions trained on the same rows share it."""
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).tobytes(), digest_size=16).hexdigest()


def _pack_ids(ids: np.ndarray) -> bytes:
    # sorted ids as zlib-compressed deltas: ~1 byte an id where the rows are dense
    return zlib.compress(np.diff(ids, prepend=0).astype(np.int64).tobytes(), 1)


def _unpack_ids(blob: bytes) -> np.ndarray:
    return np.cumsum(np.frombuffer(zlib.decompress(blob), dtype=np.int64))


_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = {"meta", "texts", "rows", "embeddings", "predictions", "specialists", "versions", "routing",
               "reviews", "final", "stages", "llm_calls", "llm_spend", "sqlite_sequence", "answers", "human_queue",
               "priors", "verdicts"}


def check_store_file(db_path: Path, *, fresh_ok: bool) -> None:
    """Refuse a run.db that is not a labeljury run store (empty, damaged, another program's), so it is
    never touched. With `fresh_ok`, a missing file, or one holding only labeljury's own tables (a run
    killed while it started), is accepted."""
    where = str(db_path)
    if not db_path.exists():
        if fresh_ok:
            return
        raise RunStoreError(f"{str(db_path.parent)!r} is not a run directory (no run.db); pass the --run-dir of a run")
    try:
        with open(db_path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as err:
        raise RunStoreError(f"{where!r} cannot be read ({err.strerror}); check its permissions") from None
    if not head:
        raise RunStoreError(f"{where!r} is empty, not a labeljury run store; delete it (or pass another --run-dir)")
    if head != _SQLITE_MAGIC:
        raise RunStoreError(f"{where!r} is not a labeljury run store (not an SQLite database); labeljury will not "
                            "touch it: pass another --run-dir")
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() \
                if "meta" in tables else None
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise RunStoreError(f"{where!r} is damaged ({err}); labeljury will not touch it: restore it from a backup "
                            "or pass another --run-dir") from None
    if version is None and not (fresh_ok and tables <= _OUR_TABLES):
        raise RunStoreError(f"{where!r} is not a labeljury run store; labeljury will not touch it: pass another --run-dir")


# Columns added to a table after runs were made with it: (table, column, type). Each is optional
# data that an older run store gets, empty, when it is opened for writing (readers cope without it).
_ADDED_COLUMNS = (("verdicts", "weight", "REAL"),)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


class RunStore:
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
        try:
            if readonly:
                self.conn = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                            isolation_level=None)
                self.conn.execute("PRAGMA busy_timeout=30000")
            else:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("PRAGMA busy_timeout=30000")
                self.conn.executescript(_SCHEMA)
                _add_missing_columns(self.conn)
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
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.conn).execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    def is_done(self, step: str) -> bool:
        return bool(self.get_meta(f"done:{step}", False))

    def mark_done(self, step: str, conn: sqlite3.Connection | None = None) -> None:
        self.set_meta(f"done:{step}", True, conn)

    def clear_done(self, prefix: str) -> None:
        self.conn.execute("DELETE FROM meta WHERE key LIKE ?", (f"done:{prefix}%",))

    # -- rows and texts ---------------------------------------------------------------------
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
        return TextKeys(self)

    def texts(self, start: int, stop: int) -> list[str]:
        """Texts with ids in [start, stop), in id order."""
        return [t for (t,) in self.conn.execute(
            "SELECT text FROM texts WHERE text_id >= ? AND text_id < ? ORDER BY text_id", (start, stop))]

    def texts_by_id(self, ids: Iterable[int]) -> dict[int, tuple[str, int]]:
        """{text_id: (text, first_row)}"""
        ids = list(ids)
        out: dict[int, tuple[str, int]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = f"SELECT text_id, text, first_row FROM texts WHERE text_id IN ({','.join('?' * len(part))})"
            out.update({t: (x, r) for t, x, r in self.conn.execute(q, part)})
        return out

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
        counts: dict[int, int] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            counts.update(self.conn.execute(f"SELECT text_id, COUNT(*) FROM rows WHERE text_id IN "
                                            f"({','.join('?' * len(part))}) GROUP BY text_id", part))
        return np.array([counts.get(t, 0) for t in ids], np.float64)

    def chunks(self) -> list[tuple[int, int, int]]:
        """(chunk, start, stop) over all text ids."""
        n = self.n_texts
        return [(c, s, min(s + CHUNK, n)) for c, s in enumerate(range(0, n, CHUNK))]

    # -- embeddings and predictions ------------------------------------------------------------
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

    # -- specialists ----------------------------------------------------------------------------
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
        (conn or self.conn).execute(f"UPDATE specialists SET {sets} WHERE name=?", (*fields.values(), name))

    # -- specialist versions (read and written by `registry`) -----------------------------------
    def put_version(self, specialist: str, version: int, *, stage: int | None, train_ids: np.ndarray,
                    checkpoint: str | None, metrics: dict[str, Any], conn: sqlite3.Connection | None = None) -> None:
        ids = np.ascontiguousarray(np.sort(np.asarray(train_ids, dtype=np.int64)))
        (conn or self.conn).execute(
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
        (conn or self.conn).execute("UPDATE versions SET metrics=? WHERE specialist=? AND version=?",
                                    (json.dumps(metrics), specialist, version))

    def delete_predictions(self, specialist: str, below_version: int, conn: sqlite3.Connection | None = None) -> None:
        """Forget the predictions of a specialist's superseded versions."""
        (conn or self.conn).execute("DELETE FROM predictions WHERE specialist=? AND version<?",
                                    (specialist, below_version))

    # -- routing and reviews ----------------------------------------------------------------------
    def add_routing(self, text_ids: Sequence[int], why: str, hardness: Sequence[float] | None, stage: int,
                    done_step: str | None = None,
                    audit_hard: tuple[Sequence[int], Sequence[float]] | None = None) -> None:
        """Record the rows sent to review (and the audit rows this stage would have sent: `audit_hard`),
        and (atomically) that the routing step is done."""
        now = time.time()
        hard = list(hardness) if hardness is not None else [None] * len(text_ids)
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO routing(text_id, why, hardness, stage, created_at) VALUES (?,?,?,?,?)",
                [(int(t), why, None if h is None else float(h), stage, now) for t, h in zip(text_ids, hard)])
            if audit_hard is not None:
                self.mark_audit_hard(audit_hard[0], audit_hard[1], stage, conn=c)
            if done_step:
                self.mark_done(done_step, c)

    def routed(self, why: str | None = None, stage: int | None = None) -> list[int]:
        q, args = "SELECT text_id FROM routing WHERE 1=1", []
        if why is not None:
            q += " AND why=?"
            args.append(why)
        if stage is not None:
            q += " AND stage=?"
            args.append(stage)
        return [t for (t,) in self.conn.execute(q + " ORDER BY hardness DESC, text_id", args)]

    @property
    def n_routed(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM routing").fetchone()[0]

    def mark_audit_hard(self, text_ids: Sequence[int], hardness: Sequence[float], stage: int,
                        conn: sqlite3.Connection | None = None) -> None:
        """Audit rows that stage `stage` would have sent for review as hard (they are not asked again)."""
        (conn or self.conn).executemany(
            "UPDATE routing SET hard_stage=?, hardness=? WHERE text_id=? AND why='audit'",
            [(stage, float(h), int(t)) for t, h in zip(text_ids, hardness, strict=True)])

    def audit_hard(self) -> dict[int, int]:
        """{audit text id: the stage that would have sent it for review as hard}."""
        return dict(self.conn.execute(
            "SELECT text_id, hard_stage FROM routing WHERE why='audit' AND hard_stage IS NOT NULL"))

    def put_review(self, r: ReviewResult) -> None:
        """Store one answer at once (a pending one is overwritten by the next answer)."""
        self.conn.execute(
            "INSERT INTO reviews(text_id, label, source, confidence, reason, pending, cost_usd, created_at) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(text_id) DO UPDATE SET label=excluded.label, "
            "source=excluded.source, confidence=excluded.confidence, reason=excluded.reason, "
            "pending=excluded.pending, cost_usd=excluded.cost_usd, created_at=excluded.created_at",
            (r.key, r.label, r.source, r.confidence, r.reason, int(r.pending), r.cost_usd, time.time()))

    def put_answer(self, reviewer: str, r: ReviewResult) -> None:
        """Keep one reviewer's own answer to a row (whatever decided the row in the end)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO answers(text_id, reviewer, label, confidence, reason, source, created_at) "
            "VALUES (?,?,?,?,?,?,?)", (r.key, reviewer, r.label, r.confidence, r.reason, r.source, time.time()))

    def answers(self, text_ids: Sequence[int] | None = None) -> dict[int, dict[str, dict[str, Any]]]:
        """{text id: {reviewer: {label, confidence, reason, source}}}"""
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for t, rev, lab, conf, why, src in self.conn.execute(
                "SELECT text_id, reviewer, label, confidence, reason, source FROM answers"):
            if text_ids is None or t in text_ids:
                out.setdefault(t, {})[rev] = {"label": lab, "confidence": conf, "reason": why, "source": src}
        return out

    def answers_of(self, text_ids: Iterable[int]) -> dict[int, dict[str, dict[str, Any]]]:
        """`answers` of `text_ids` only."""
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for t, rev, lab, conf, why, src in self._by_ids(
                "SELECT text_id, reviewer, label, confidence, reason, source FROM answers WHERE text_id IN ", text_ids):
            out.setdefault(t, {})[rev] = {"label": lab, "confidence": conf, "reason": why, "source": src}
        return out

    def answered_by(self, reviewer: str) -> set[int]:
        """The rows `reviewer` has an answer (or a mark) for."""
        return {t for (t,) in self.conn.execute("SELECT text_id FROM answers WHERE reviewer=?", (reviewer,))}

    def flagged_ids(self) -> set[int]:
        """The reviewed rows whose label the weighing flagged for a second look."""
        try:
            return {t for (t,) in self.conn.execute("SELECT text_id FROM verdicts WHERE flagged=1")}
        except sqlite3.OperationalError:  # a read-only look at a run made before verdicts existed
            return set()

    def priors_of(self, text_ids: Iterable[int]) -> dict[int, list[float]]:
        """`priors` of `text_ids` only."""
        return {t: json.loads(p) for t, p in self._by_ids("SELECT text_id, probs FROM priors WHERE text_id IN ",
                                                           text_ids)}

    def answers_of_rows_answered_twice(self) -> dict[int, dict[str, dict[str, Any]]]:
        """`answers` of the rows that more than one reviewer answered (or a row marked as sent on to
        another): what the weighing compares, without every row's single answer."""
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for t, rev, lab, conf, why, src in self.conn.execute(
                "SELECT text_id, reviewer, label, confidence, reason, source FROM answers WHERE text_id IN "
                "(SELECT text_id FROM answers GROUP BY text_id HAVING COUNT(*) > 1) ORDER BY rowid"):
            out.setdefault(t, {})[rev] = {"label": lab, "confidence": conf, "reason": why, "source": src}
        return out

    def put_priors(self, priors: Mapping[int, Sequence[float]], replace: bool = False) -> None:
        """The vote's distribution of rows about to be reviewed; the first one given stands (it was
        taken by specialists that had not learned from the row), unless `replace` (for rows no
        specialist ever learns from: the audit)."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        self.conn.executemany(f"{verb} INTO priors(text_id, probs) VALUES (?,?)",
                              [(int(t), json.dumps([round(float(x), 5) for x in p])) for t, p in priors.items()])

    def priors(self) -> dict[int, list[float]]:
        return {t: json.loads(p) for t, p in self.conn.execute("SELECT text_id, probs FROM priors")}

    def put_verdicts(self, rows: Iterable[tuple[int, str | None, float, str | None, bool, str | None, float]]) -> None:
        """(text id, decided label, belief, the reviewer's answer, flagged, the label to train on or
        None, the weight to train with), replacing all."""
        with self.transaction() as c:
            c.execute("DELETE FROM verdicts")
            c.executemany("INSERT INTO verdicts(text_id, label, belief, answer, flagged, train, weight) "
                          "VALUES (?,?,?,?,?,?,?)",
                          [(int(t), lab, float(b), a, int(f), tr, float(w)) for t, lab, b, a, f, tr, w in rows])
            self.set_meta("verdicts_written", self.get_meta("verdicts_written", 0) + 1, c)

    def train_weights(self) -> dict[int, float]:
        """{text id: weight} of the reviewed rows to learn from with a weight other than 1 (a weighed
        reviewer's answers: how likely each is right)."""
        try:
            rows = self.conn.execute("SELECT text_id, weight FROM verdicts WHERE train IS NOT NULL "
                                     "AND weight IS NOT NULL AND weight != 1").fetchall()
        except sqlite3.OperationalError:  # a read-only look at a run made before weights existed
            return {}
        return {int(t): float(w) for t, w in rows}

    def verdicts(self) -> dict[int, tuple[str | None, float, str | None, bool, str | None]]:
        """{text id: (decided label, belief, answer, flagged, label to train on)}"""
        try:
            rows = self.conn.execute("SELECT text_id, label, belief, answer, flagged, train FROM verdicts").fetchall()
        except sqlite3.OperationalError:  # a read-only look at a run made before verdicts existed
            return {}
        return {t: (lab, b, a, bool(f), tr) for t, lab, b, a, f, tr in rows}

    def decided_reviews(self) -> dict[int, str]:
        """{text_id: label} of the reviewed rows to learn from: where the answer was weighed, the
        label `review.weigh` says to train on, without the rows too doubtful to train on."""
        out = self.labeled_reviews()
        for t, (_lab, _b, _a, _f, train) in self.verdicts().items():
            if t in out:
                if train is not None:
                    out[t] = train
                else:
                    del out[t]
        return out

    def learned_labels(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, list[str]]:
        """(text ids in [start, stop), ascending; their labels) of the reviewed rows a specialist may
        learn from: `decided_reviews` without the audit sample, which only measures. Read by range of
        the primary key: a chunk's rows cost the chunk, not every review. Each label is one shared
        string (a million reviews hold a million pointers, not a million strings)."""
        stop = self.n_texts if stop is None else stop
        rows = self.conn.execute(
            "SELECT r.text_id, CASE WHEN v.text_id IS NULL THEN r.label ELSE v.train END FROM reviews r "
            "LEFT JOIN verdicts v ON v.text_id = r.text_id WHERE r.pending = 0 AND r.label IS NOT NULL "
            "AND r.text_id >= ? AND r.text_id < ? AND NOT EXISTS (SELECT 1 FROM routing g "
            "WHERE g.text_id = r.text_id AND g.why = 'audit') ORDER BY r.text_id", (start, stop))
        ids: list[int] = []
        labels: list[str] = []
        shared: dict[str, str] = {}
        for t, lab in rows:
            if lab is not None:
                ids.append(t)
                labels.append(shared.setdefault(lab, lab))
        return np.array(ids, dtype=np.int64), labels

    def audited_labels(self) -> tuple[np.ndarray, list[str]]:
        """(text ids, ascending; their labels) of the audit rows that got a label."""
        rows = self.conn.execute(
            "SELECT r.text_id, r.label FROM reviews r JOIN routing g ON g.text_id = r.text_id AND g.why = 'audit' "
            "WHERE r.pending = 0 AND r.label IS NOT NULL ORDER BY r.text_id").fetchall()
        return np.array([t for t, _ in rows], dtype=np.int64), [lab for _, lab in rows]

    def labels_signature(self) -> tuple[Any, ...]:
        """Changes whenever a reviewed row's label to learn from may have changed (an answer, a
        weighing): what a label model fitted with the reviewed labels clamped is kept under."""
        count, when = self.conn.execute(
            "SELECT COUNT(*), TOTAL(created_at) FROM reviews WHERE pending = 0 AND label IS NOT NULL").fetchone()
        return count, when, self.get_meta("verdicts_written", 0)

    def reviews_between(self, start: int, stop: int, include_pending: bool = False) -> dict[int, ReviewResult]:
        """`reviews` of the text ids in [start, stop)."""
        q = ("SELECT text_id, label, source, confidence, reason, pending, cost_usd FROM reviews "
             "WHERE text_id >= ? AND text_id < ?")
        if not include_pending:
            q += " AND pending=0"
        return {t: ReviewResult(t, lab, src, conf, why, bool(p), cost)
                for t, lab, src, conf, why, p, cost in self.conn.execute(q, (start, stop))}

    def verdicts_between(self, start: int, stop: int) -> dict[int, Verdict]:
        """`verdicts` of the text ids in [start, stop)."""
        try:
            rows = self.conn.execute("SELECT text_id, label, belief, answer, flagged, train FROM verdicts "
                                     "WHERE text_id >= ? AND text_id < ?", (start, stop)).fetchall()
        except sqlite3.OperationalError:  # a read-only look at a run made before verdicts existed
            return {}
        return {t: (lab, b, a, bool(f), tr) for t, lab, b, a, f, tr in rows}

    def _by_ids(self, query: str, text_ids: Iterable[int]) -> list[tuple[Any, ...]]:
        """The rows of `query` (ending in "text_id IN ") for the distinct `text_ids` >= 0, 500 at a time."""
        ids = sorted({int(t) for t in text_ids if t >= 0})
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            out += self.conn.execute(f"{query}({','.join('?' * len(part))})", part).fetchall()
        return out

    def reviews_of(self, text_ids: Iterable[int]) -> dict[int, ReviewResult]:
        """`reviews` (answered) of `text_ids` only."""
        rows = self._by_ids("SELECT text_id, label, source, confidence, reason, pending, cost_usd FROM reviews "
                            "WHERE pending=0 AND text_id IN ", text_ids)
        return {t: ReviewResult(t, lab, src, conf, why, bool(p), cost) for t, lab, src, conf, why, p, cost in rows}

    def answered(self, text_ids: Iterable[int]) -> dict[int, tuple[str | None, str, float]]:
        """{text id: (label, source, created_at)} of those of `text_ids` with an answer (not pending)."""
        return {t: (lab, src, at) for t, lab, src, at in self._by_ids(
            "SELECT text_id, label, source, created_at FROM reviews WHERE pending=0 AND text_id IN ", text_ids)}

    def verdicts_of(self, text_ids: Iterable[int]) -> dict[int, Verdict]:
        """`verdicts` of `text_ids` only."""
        try:
            rows = self._by_ids("SELECT text_id, label, belief, answer, flagged, train FROM verdicts WHERE text_id IN ",
                                text_ids)
        except sqlite3.OperationalError:  # a read-only look at a run made before verdicts existed
            return {}
        return {t: (lab, b, a, bool(f), tr) for t, lab, b, a, f, tr in rows}

    def count_reviews(self, pending: bool = False) -> int:
        """How many rows have an answer (or, with `pending`, wait for one)."""
        return self.conn.execute("SELECT COUNT(*) FROM reviews WHERE pending=?", (int(pending),)).fetchone()[0]

    def reviews(self, include_pending: bool = False) -> dict[int, ReviewResult]:
        q = "SELECT text_id, label, source, confidence, reason, pending, cost_usd FROM reviews"
        if not include_pending:
            q += " WHERE pending=0"
        return {t: ReviewResult(t, lab, src, conf, why, bool(p), cost)
                for t, lab, src, conf, why, p, cost in self.conn.execute(q)}

    def labeled_reviews(self) -> dict[int, str]:
        """{text_id: label} of reviews that produced a label."""
        return {t: lab for t, lab in self.conn.execute(
            "SELECT text_id, label FROM reviews WHERE pending=0 AND label IS NOT NULL ORDER BY text_id")}

    # -- final labels ---------------------------------------------------------------------------------
    def put_final(self, records: Iterable[tuple[int, str | None, float | None, str, str | None, float | None, str]],
                  meta: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> None:
        """(text_id, label, confidence, source, vote, vote_confidence, specialist_votes_json), and the
        `meta` keys that describe them (or a function giving them once the records are written), in
        one transaction."""
        with self.transaction() as c:
            c.execute("DELETE FROM final")
            c.executemany("INSERT INTO final VALUES (?,?,?,?,?,?,?)", records)
            for key, value in ((meta() if callable(meta) else meta) or {}).items():
                self.set_meta(key, value, c)
            self.mark_done("finalize", c)

    def final_for(self, text_ids: np.ndarray) -> dict[int, tuple[str | None, float | None, str, str | None, float | None, str]]:
        ids = [int(t) for t in set(text_ids.tolist()) if t >= 0]
        out = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ("SELECT text_id, label, confidence, source, vote, vote_confidence, specialist_votes FROM final "
                 f"WHERE text_id IN ({','.join('?' * len(part))})")
            out.update({t: rest for t, *rest in self.conn.execute(q, part)})
        return out

    def source_counts(self) -> dict[str, int]:
        """Input rows per annotation source (skipped rows included)."""
        counts = dict(self.conn.execute(
            "SELECT f.source, COUNT(*) FROM rows r JOIN final f ON f.text_id = r.text_id GROUP BY f.source"))
        for why, n in self.conn.execute(
                "SELECT skip_reason, COUNT(*) FROM rows WHERE text_id IS NULL GROUP BY skip_reason"):
            counts[f"skipped:{why}"] = n
        return counts

    # -- stages ------------------------------------------------------------------------------------
    def put_stage(self, stage: int, metrics: dict[str, Any], conn: sqlite3.Connection | None = None) -> None:
        (conn or self.conn).execute("INSERT OR REPLACE INTO stages(stage, metrics) VALUES (?,?)", (stage, json.dumps(metrics)))

    def stages(self) -> list[dict[str, Any]]:
        return [json.loads(m) for (m,) in self.conn.execute("SELECT metrics FROM stages ORDER BY stage")]
