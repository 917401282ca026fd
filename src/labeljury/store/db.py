"""The database under a run directory: its schema, opening it, one transaction helper, one way to read
rows by many ids, and the one-line errors for a failing disk. Nothing here knows what a record means."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ..errors import RunStoreError

CHUNK = 2048  # text ids per embedding / prediction block
SCHEMA_VERSION = "2"

SCHEMA = """
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

# Every table a run.db may hold: the store's own, and those the LLM layer keeps beside them (its call
# cache and spend journal). A file with any other table is not ours.
TABLES = frozenset({"meta", "texts", "rows", "embeddings", "predictions", "specialists", "versions", "routing",
                    "reviews", "final", "stages", "llm_calls", "llm_spend", "sqlite_sequence", "answers",
                    "human_queue", "priors", "verdicts"})

# Columns added to a table after runs were made with it: (table, column, type). Each is optional
# data that an older run store gets, empty, when it is opened for writing (readers cope without it).
ADDED_COLUMNS = (("verdicts", "weight", "REAL"),)

_SQLITE_MAGIC = b"SQLite format 3\x00"
BY_IDS = 500  # ids per `IN (...)`: under SQLite's variable limit


@contextmanager
def transaction(conn: sqlite3.Connection, lock: Any = None) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error; holding `lock` (a threading lock) throughout
    when the connection is shared between threads (the review server's)."""
    with lock if lock is not None else nullcontext():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def by_ids(conn: sqlite3.Connection, query: str, text_ids: Iterable[int], suffix: str = "") -> list[tuple[Any, ...]]:
    """The rows of `query` (ending in "text_id IN ", then `suffix`) for the distinct `text_ids` >= 0,
    BY_IDS at a time."""
    ids = sorted({int(t) for t in text_ids if t >= 0})
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(ids), BY_IDS):
        part = ids[i : i + BY_IDS]
        out += conn.execute(f"{query}({','.join('?' * len(part))}){suffix}", part).fetchall()
    return out


def missing_table_guard(default: Any) -> Any:
    """A decorator for readers of a table that runs made before it existed lack (a read-only look at an
    old run store): such a reader returns `default()` instead of failing."""
    def wrap(fn: Any) -> Any:
        def reader(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as err:
                if "no such table" not in str(err) and "no such column" not in str(err):
                    raise
                return default()
        reader.__name__, reader.__doc__ = fn.__name__, fn.__doc__
        return reader
    return wrap


def connect(db_path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); a writable one creates the schema and
    adds the columns an older store lacks."""
    if readonly:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    for table, column, kind in ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    return conn


def connect_shared(db_path: Path) -> sqlite3.Connection:
    """A connection to an existing run.db for another thread's use (the review server's queue)."""
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


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


def check_run_dir(run_dir: Path) -> None:
    """Refuse to make a run directory of a folder that holds something and no run.db: it is the user's
    (labeljury writes plan.json, annotate.py, report.html and a feature cache into a run directory, and
    must never overwrite or delete what it did not create). Call it before anything is written there."""
    # `lock` is ours too: another labeljury process holding the folder (it then says so, by its process id)
    if run_dir.is_dir() and not (run_dir / "run.db").exists() and any(p.name != "lock" for p in run_dir.iterdir()):
        raise RunStoreError(f"{str(run_dir)!r} is not empty and is not a run directory (it has no run.db); "
                            "labeljury will not write into it: pass a new --run-dir, or an empty folder")


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
    if version is None and not (fresh_ok and tables <= TABLES):
        raise RunStoreError(f"{where!r} is not a labeljury run store; labeljury will not touch it: pass another --run-dir")
