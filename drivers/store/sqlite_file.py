"""A durable SQLite file for a program's own state: owner-only, WAL, every commit fsynced.

Several connections may open the same file at once (a terminal's host and its store, the load
threads of a benchmark); switching a fresh file to WAL needs the file to itself and SQLite's
busy handler does not cover that step, so only the first opener switches and the others wait.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from swipepay.firmware_sim.errors import ConfigError

#: How long a connection waits for another one's write lock (seconds).
BUSY_TIMEOUT = 10.0


def open_durable(path: Path) -> sqlite3.Connection:
    """Open (creating it 0600 if needed) ``path`` in autocommit mode, WAL, ``synchronous=FULL``."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        db = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open {path}: {_reason(exc)}") from None
    try:
        _use_wal(db)
        db.execute("PRAGMA synchronous = FULL")
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.DatabaseError) and not is_busy(exc):
            # Damaged or not a database: said, never replaced (it may hold queued reversals).
            raise ConfigError(
                f"{path} is not a usable SQLite file ({exc}); move it aside to start afresh, "
                "after settling by hand what it held (the terminal's queued reversals)"
            ) from None
        raise
    return db


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock (worth trying again later), by
    SQLite's own result code rather than its message text."""
    return getattr(exc, "sqlite_errorname", None) in ("SQLITE_BUSY", "SQLITE_LOCKED")


def _reason(exc: OSError | sqlite3.Error) -> str:
    return str(exc.strerror or exc) if isinstance(exc, OSError) else str(exc)


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
