"""A durable SQLite file for a program's own state: owner-only, WAL, every commit fsynced.

Several connections may open the same file at once (a terminal's host and its store, the load
threads of a benchmark); switching a fresh file to WAL needs the file to itself and SQLite's
busy handler does not cover that step, so only the first opener switches and the others wait.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

#: How long a connection waits for another one's write lock (seconds).
BUSY_TIMEOUT = 10.0


def open_durable(path: Path) -> sqlite3.Connection:
    """Open (creating it 0600 if needed) ``path`` in autocommit mode, WAL, ``synchronous=FULL``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        _use_wal(db)
        db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        db.close()
        raise
    return db


def _use_wal(db: sqlite3.Connection) -> None:
    for attempt in range(200):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if attempt == 199:
                raise
            time.sleep(0.01)
