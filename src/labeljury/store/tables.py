"""What every record family of the run store builds on: the connection, and a way to write inside a
transaction another family opened."""

from __future__ import annotations

import sqlite3


class Tables:
    """The base of each record family (`RunStore` is all of them over one connection)."""

    conn: sqlite3.Connection
    readonly: bool

    def _c(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        """The connection of the caller's open transaction, or the store's own."""
        return conn or self.conn
