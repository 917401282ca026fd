"""Meta records: the task, the input's fingerprint, settings decided once, and which steps are done
(`steps` names them). A step marks itself done in the transaction that commits its results, which is
what makes a killed run resume where it stopped."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from .tables import Tables


def read_meta(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


class MetaRecords(Tables):
    def get_meta(self, key: str, default: Any = None) -> Any:
        return read_meta(self.conn, key, default)

    def set_meta(self, key: str, value: Any, conn: sqlite3.Connection | None = None) -> None:
        self._c(conn).execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    def is_done(self, step: str) -> bool:
        return bool(self.get_meta(f"done:{step}", False))

    def mark_done(self, step: str, conn: sqlite3.Connection | None = None) -> None:
        self.set_meta(f"done:{step}", True, conn)

    def undo_steps(self, steps: Sequence[str], conn: sqlite3.Connection | None = None) -> None:
        """Mark `steps` not done, so that they run again (e.g. after the budget was raised)."""
        self._c(conn).executemany("DELETE FROM meta WHERE key=?", [(f"done:{s}",) for s in steps])
