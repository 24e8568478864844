"""The storage contract on both backends (SQLite, PostgreSQL): transactions, savepoints,
constraints, the caches; and SQLite's own failed-COMMIT handling."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from swipepay.center.database import open_storage
from swipepay.center.storage import (
    AccountRecord,
    CardRecord,
    HoldRecord,
    MessageKey,
    SQLiteStorage,
    Storage,
    StorageUnavailable,
    TerminalRecord,
)
from swipepay.firmware_sim.errors import ConfigError, LocalError


def integrity_error(storage: Storage) -> type[Exception]:
    """What a violated constraint raises on ``storage``'s backend (the driver's own error)."""
    if isinstance(storage, SQLiteStorage):
        return sqlite3.IntegrityError
    import psycopg  # only where PostgreSQL is tested

    return psycopg.IntegrityError


def account(account_id: str) -> AccountRecord:
    return AccountRecord(account_id, "holder", "cardholder", "978")


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    s = open_storage(database_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    s = SQLiteStorage(tmp_path / "s.db")
    yield s
    s.close()


def test_outer_rollback_discards_everything(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.transaction():
        storage.insert_account(account("A"))
        raise RuntimeError
    with storage.transaction():
        assert storage.get_account("A") is None


def test_nested_block_is_a_savepoint(storage: Storage) -> None:
    with storage.transaction():
        storage.insert_account(account("A"))
        with pytest.raises(RuntimeError), storage.transaction():
            storage.insert_account(account("B"))
            raise RuntimeError
        with storage.transaction():
            storage.insert_account(account("C"))
    with storage.transaction():
        assert [storage.get_account(a) is not None for a in "ABC"] == [True, False, True]


def test_account_read_inside_a_rolled_back_block_is_not_cached(storage: Storage) -> None:
    """get_account caches rows; a row read before its insert was rolled back must not stay."""
    with pytest.raises(RuntimeError), storage.transaction():
        storage.insert_account(account("A"))
        assert storage.get_account("A") == account("A")
        raise RuntimeError
    with storage.transaction():
        assert storage.get_account("A") is None
        with pytest.raises(RuntimeError), storage.transaction():
            storage.insert_account(account("B"))
            assert storage.get_account("B") == account("B")
            raise RuntimeError
        assert storage.get_account("B") is None
        storage.insert_account(account("C"))
        assert storage.get_account("C") == account("C")
    with storage.transaction():
        assert storage.get_account("C") == account("C")


def test_commit_is_visible_to_a_new_connection(database_url: str) -> None:
    first = open_storage(database_url)
    with first.transaction():
        first.insert_account(account("A"))
    second = open_storage(database_url)
    assert second.get_account("A") == account("A")
    first.close()
    second.close()


def test_writes_outside_a_transaction_are_refused(storage: Storage) -> None:
    with pytest.raises(LocalError):
        storage.insert_account(account("A"))


def test_foreign_keys_and_checks_are_enforced(storage: Storage) -> None:
    with pytest.raises(integrity_error(storage)), storage.transaction():
        storage.insert_posting("ref", "memo", [("nobody", 5), ("nobody-else", -5)])
    with pytest.raises(integrity_error(storage)), storage.transaction():
        storage.insert_hold(HoldRecord("ref", "nobody", 5, True))
    with pytest.raises(integrity_error(storage)), storage.transaction():
        storage.insert_account(account("A"))
        storage.insert_card(CardRecord("4111", "2712", "A", bytes(32), bytes(8), 0, bytes(32)))


def test_entry_sums_and_unbalanced_postings(storage: Storage) -> None:
    with storage.transaction():
        storage.insert_account(account("A"))
        storage.insert_account(account("B"))
        storage.insert_posting("p1", "ok", [("A", 7), ("B", -7)])
        storage.insert_posting("p2", "bad", [("A", 3), ("B", -2)])
    assert storage.entry_sum("A") == 10
    assert storage.entry_sum() == 1
    assert len(storage.unbalanced_postings()) == 1  # p2's


def test_update_of_missing_row_is_an_error(storage: Storage) -> None:
    with pytest.raises(LocalError), storage.transaction():
        storage.update_message_state(MessageKey("T", "1", "2"), "reversed", 0)


def test_card_record_repr_hides_pin_verification_data() -> None:
    card = CardRecord("4111", "2712", "A", bytes(33), bytes(8), 0, b"\xaa" * 32)
    assert "xaa" not in repr(card)


# -- a COMMIT that fails -----------------------------------------------------------------------


def _terminal(tid: str, account_id: str) -> TerminalRecord:
    return TerminalRecord(tid, "M1", "Shop", "pos", account_id)


class _CommitFailsAndStaysOpen:
    """A COMMIT that raises and leaves the transaction open, as SQLITE_BUSY does."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.failed = 0

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and not self.failed:
            self.failed += 1
            raise sqlite3.OperationalError("database is locked")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_failed_commit_leaves_nothing_open_and_nothing_cached(
    sqlite_storage: SQLiteStorage,
) -> None:
    storage = sqlite_storage
    with storage.transaction():
        storage.insert_account(account("T"))
    real = storage._db
    storage._db = _CommitFailsAndStaysOpen(real)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError), storage.transaction():
        storage.insert_account(account("A"))
        storage.insert_terminal(_terminal("T0000001", "T"))
        assert storage.get_terminal("T0000001") is not None  # cached from here on
    storage._db = real
    assert not real.in_transaction  # rolled back, not left open
    with storage.transaction():
        assert storage.get_account("A") is None
        assert storage.get_terminal("T0000001") is None  # the cache forgot it too
        storage.insert_account(account("B"))  # and the storage is usable again
    with storage.transaction():
        assert storage.get_account("B") == account("B")


def test_balance_and_holds_in_one_query(storage: Storage) -> None:
    with storage.transaction():
        storage.insert_account(account("A"))
        storage.insert_account(account("B"))
        assert storage.balance_and_holds("A") == (0, 0)
        storage.insert_posting("p1", "memo", [("A", 5_00), ("B", -5_00)])
        storage.insert_hold(HoldRecord("h1", "A", 2_00, active=True))
        storage.insert_hold(HoldRecord("h2", "A", 1_00, active=False))
        assert storage.balance_and_holds("A") == (5_00, 2_00)
        assert storage.balance_and_holds("A") == (
            storage.entry_sum("A"),
            storage.active_hold_sum("A"),
        )


@pytest.mark.parametrize("where", ["a-file/inside.db", "not-a-database", "a-directory", "a-fifo"])
def test_a_path_that_is_no_sqlite_database_is_a_configuration_error(
    tmp_path: Path, where: str
) -> None:
    # Before: sqlite3's OperationalError or DatabaseError, a traceback from `center report
    # --db`, `center serve --db` and `init --db`.
    (tmp_path / "a-file").write_text("")
    (tmp_path / "not-a-database").write_text("hello, world\n" * 100)
    (tmp_path / "a-directory").mkdir()
    os.mkfifo(tmp_path / "a-fifo")
    with pytest.raises(ConfigError, match="cannot open the SQLite database"):
        SQLiteStorage(tmp_path / where)
    assert (tmp_path / "not-a-database").read_text() == "hello, world\n" * 100  # left alone


def test_a_database_locked_past_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "center.db"
    SQLiteStorage(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # held while the next open needs its write lock
    try:
        with pytest.raises(StorageUnavailable, match="locked by another process"):
            SQLiteStorage(path, busy_timeout_ms=50)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
