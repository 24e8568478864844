"""The terminal's store-and-forward queue of 0400 reversals (a table of the terminal's store).

An entry is either *queued* (send it on the next connection until the center acknowledges it)
or *armed*: written before its financial request leaves (write-ahead), by the process named in
``owner``, and removed once that process has finished the transaction.  An armed entry of
another process is an orphan — that terminal died between sending the request and finishing
the transaction — and is sent like a queued one, so the center never keeps money for a
transaction the terminal did not complete.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from swipepay.drivers.store.sqlite_file import open_durable

#: The reversal table (the same in the terminal's store and in an old ``reversals.db``).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS reversals (id INTEGER PRIMARY KEY, body BLOB NOT NULL, "
    "owner TEXT, txn_key TEXT)"
)


def create_table(db: sqlite3.Connection) -> None:
    """Create the table, adding the columns a queue file from before write-ahead entries lacks."""
    db.execute(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(reversals)")}
    for column in ("owner", "txn_key"):
        if column not in columns:
            with contextlib.suppress(sqlite3.OperationalError):  # added meanwhile
                db.execute(f"ALTER TABLE reversals ADD COLUMN {column} TEXT")


class ReversalQueue:
    """Reversal frames in a SQLite file (mode 0600, every change fsynced), one connection."""

    def __init__(self, path: Path) -> None:
        self._db = open_durable(path)
        try:
            create_table(self._db)
        except BaseException:
            self._db.close()
            raise

    def push(self, body: bytes) -> int:
        """Queue ``body`` to be sent on the next connection."""
        cur = self._db.execute("INSERT INTO reversals (body) VALUES (?)", (body,))
        return int(cur.lastrowid or 0)

    def arm(self, body: bytes, owner: str, txn_key: str) -> int:
        """Write the reversal of a request about to be sent (owned by this process)."""
        cur = self._db.execute(
            "INSERT INTO reversals (body, owner, txn_key) VALUES (?, ?, ?)", (body, owner, txn_key)
        )
        return int(cur.lastrowid or 0)

    def armed(self, owner: str, txn_key: str) -> int | None:
        row = self._db.execute(
            "SELECT id FROM reversals WHERE owner = ? AND txn_key = ?", (owner, txn_key)
        ).fetchone()
        return None if row is None else int(row[0])

    def forget(self, owner: str, txn_key: str) -> None:
        """Drop the queued or ``owner``-armed reversals of one transaction (being replaced)."""
        self._db.execute(
            "DELETE FROM reversals WHERE txn_key = ? AND (owner IS NULL OR owner = ?)",
            (txn_key, owner),
        )

    def release(self, item_id: int) -> None:
        """Turn an armed entry into a queued one (send it on the next connection)."""
        self._db.execute("UPDATE reversals SET owner = NULL WHERE id = ?", (item_id,))

    def pending(self, owner: str | None = None) -> list[tuple[int, bytes]]:
        """Entries to send: queued ones and armed ones of other processes (not ``owner``'s)."""
        return [
            (int(i), bytes(b))
            for i, b in self._db.execute(
                "SELECT id, body FROM reversals WHERE owner IS NULL OR owner IS NOT ? ORDER BY id",
                (owner,),
            )
        ]

    def done(self, item_id: int) -> None:
        self._db.execute("DELETE FROM reversals WHERE id = ?", (item_id,))

    def close(self) -> None:
        self._db.close()
