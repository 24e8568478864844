"""Everything one terminal keeps between runs, in one file: ``terminals/<TID>/terminal.db``.

* the next STAN (field 11): :meth:`TerminalStore.take_stan` hands a STAN out and stores its
  successor in one fsynced transaction, so a terminal killed at any moment never reuses one;
* the approved pre-authorizations not yet completed (they hold PANs: the file is 0600);
* the reversal queue (:class:`~drivers.store.reversal_queue.ReversalQueue`, same file).

SQLite in WAL mode with ``synchronous=FULL``.  A lab written before this store kept the same
state in ``state.json``, ``preauths.json`` and ``reversals.db``; opening the store imports them
once (one transaction, marked done in the store) and then removes them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from swipepay.drivers.store.reversal_queue import ReversalQueue, create_table
from swipepay.drivers.store.sqlite_file import open_durable
from swipepay.firmware_sim.errors import ConfigError, DecodeError
from swipepay.firmware_sim.transaction import Transaction, TxnType

STORE_FILE: Final = "terminal.db"
#: The files of a lab from before the store, imported on open (then removed).
LEGACY_STAN: Final = "state.json"
LEGACY_PREAUTHS: Final = "preauths.json"
LEGACY_REVERSALS: Final = "reversals.db"

#: The fields of a remembered pre-authorization (a :class:`Transaction` with its auth code).
_PREAUTH_FIELDS: Final = (
    "type", "amount", "pan", "expiry", "terminal_id", "merchant_id", "stan", "transmitted_at",
    "currency", "entry_mode", "auth_code",
)  # fmt: skip


def following_stan(stan: int) -> int:
    """The STAN after ``stan`` (1..999999, wrapping to 1), as the terminal firmware counts."""
    return stan % 999_999 + 1


def terminal_dir(home: Path, terminal_id: str) -> Path:
    """A lab terminal's own directory (keys, certificates and this store)."""
    return Path(home) / "terminals" / terminal_id


class TerminalStore:
    """The one owner of a terminal's persistent state (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STORE_FILE
        self._db = open_durable(self.path)
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS preauths (stan TEXT PRIMARY KEY, record TEXT NOT NULL)"
            )
            create_table(self._db)
            self._import_legacy()
            self.reversals = ReversalQueue(self.path)
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def for_lab(cls, home: Path, terminal_id: str) -> TerminalStore:
        return cls(terminal_dir(home, terminal_id))

    def __repr__(self) -> str:
        return f"TerminalStore({self.path})"

    def __enter__(self) -> TerminalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reversals.close()
        self._db.close()

    # -- STAN ------------------------------------------------------------------------------------

    def next_stan(self) -> int:
        """The STAN the next transaction will get (1 for a new terminal)."""
        return self._get("next_stan") or 1

    def take_stan(self) -> int:
        """Hand out the next STAN; its successor is on disk before this returns."""
        with self._transaction():
            stan = self.next_stan()
            self._set("next_stan", following_stan(stan))
        return stan

    # -- pre-authorizations ----------------------------------------------------------------------

    def preauths(self) -> dict[str, Transaction]:
        """Approved pre-authorizations not yet completed, by STAN (``auth_code`` set)."""
        out = {}
        for stan, record in self._db.execute("SELECT stan, record FROM preauths ORDER BY stan"):
            out[str(stan)] = _preauth(json.loads(record), self.path)
        return out

    def remember_preauth(self, txn: Transaction, auth_code: str | None) -> None:
        record = {name: getattr(txn, name) for name in _PREAUTH_FIELDS}
        record["type"], record["auth_code"] = txn.type.value, auth_code
        self._db.execute(
            "INSERT OR REPLACE INTO preauths (stan, record) VALUES (?, ?)",
            (txn.stan, json.dumps(record)),
        )

    def forget_preauth(self, stan: str) -> None:
        """A completion of pre-authorization ``stan`` was approved."""
        self._db.execute("DELETE FROM preauths WHERE stan = ?", (stan,))

    # -- internals -------------------------------------------------------------------------------

    def _get(self, name: str) -> int | None:
        row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def _set(self, name: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)", (name, value))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _import_legacy(self) -> None:
        """Take over the state files of a lab from before the store, once."""
        names = (LEGACY_STAN, LEGACY_PREAUTHS, LEGACY_REVERSALS)
        legacy = [self.directory / name for name in names]
        if not any(p.exists() for p in legacy):
            return
        with self._transaction():
            if self._get("legacy_imported") is None:
                stan = _legacy_stan(self.directory / LEGACY_STAN)
                if stan is not None:
                    self._set("next_stan", max(stan, self.next_stan()))
                for txn in _legacy_preauths(self.directory / LEGACY_PREAUTHS):
                    self.remember_preauth(txn, txn.auth_code)
                self._db.executemany(
                    "INSERT INTO reversals (body, owner, txn_key) VALUES (?, ?, ?)",
                    _legacy_reversals(self.directory / LEGACY_REVERSALS),
                )
                self._set("legacy_imported", 1)
        for path in legacy:
            path.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            (self.directory / (LEGACY_REVERSALS + suffix)).unlink(missing_ok=True)


def _preauth(record: Any, where: Path) -> Transaction:
    try:
        fields = {name: record[name] for name in _PREAUTH_FIELDS}
        fields["type"] = TxnType(fields["type"])
        return Transaction(**fields)
    except (KeyError, TypeError, ValueError, DecodeError):
        raise ConfigError(f"{where}: a remembered pre-authorization is malformed") from None


def _legacy_stan(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["next_stan"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is malformed; delete it to restart STANs at 1") from None


def _legacy_preauths(path: Path) -> list[Transaction]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} is malformed") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is malformed")
    return [_preauth(record, path) for record in data.values()]


def _legacy_reversals(path: Path) -> list[tuple[bytes, str | None, str | None]]:
    if not path.exists():
        return []
    db = sqlite3.connect(str(path), timeout=10.0)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(reversals)")}
        if not columns:
            return []
        owner = "owner" if "owner" in columns else "NULL"
        key = "txn_key" if "txn_key" in columns else "NULL"
        rows = db.execute(f"SELECT body, {owner}, {key} FROM reversals ORDER BY id")  # noqa: S608
        return [(bytes(b), o, k) for b, o, k in rows]
    finally:
        db.close()
