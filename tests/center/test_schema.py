"""The one schema on both dialects, and its migrations: a lab's SQLite file at version 1 (with
or without the running balances) and an older PostgreSQL database both upgrade, keep their
data, and get the balances right; a database newer than the code is refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from swipepay.center import schema
from swipepay.center.storage import AccountRecord, SQLiteStorage

if TYPE_CHECKING:
    from swipepay.center.pg_storage import PostgresStorage
from swipepay.firmware_sim.errors import ConfigError

#: The balances table and trigger exactly as version-1 lab files created them.
OLD_BALANCES = (
    "CREATE TABLE balances (account_id TEXT PRIMARY KEY REFERENCES accounts(account_id), "
    "amount INTEGER NOT NULL)",
    "CREATE TRIGGER entries_balance AFTER INSERT ON entries BEGIN "
    "INSERT INTO balances (account_id, amount) VALUES (NEW.account_id, NEW.amount) "
    "ON CONFLICT (account_id) DO UPDATE SET amount = amount + excluded.amount; END",
)

#: Some history: E funds A with 100, then A pays B 30 (entry sums below; Z has none).
DATA = (
    "INSERT INTO accounts VALUES ('A', 'a', 'cardholder', '978'), "
    "('B', 'b', 'merchant', '978'), ('E', 'e', 'equity', '978'), ('Z', 'z', 'cardholder', '978')",
    "INSERT INTO postings (reference, memo) VALUES ('open', 'm'), ('buy', 'm')",  # ids 1, 2
    "INSERT INTO entries (posting_id, account_id, amount) VALUES "
    "(1, 'E', 100), (1, 'A', -100), (2, 'A', 30), (2, 'B', -30)",
)
SUMS = {"A": -70, "B": -30, "E": 100}


def test_every_migration_renders_for_both_dialects() -> None:
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, schema.LATEST + 1))
    for dialect in schema.DIALECTS:
        statements = schema.render(dialect)
        assert statements and not any("{" in s for s in statements if "$$" not in s)
    assert "BYTEA" in " ".join(schema.render("postgresql"))
    assert "BLOB" in " ".join(schema.render("sqlite"))
    db = sqlite3.connect(":memory:")
    for statement in schema.render("sqlite"):
        db.execute(statement)


def v1_sqlite(path: Path, *, balances: bool) -> None:
    """A lab file as version 1 left it: the tables, the old read indexes, maybe the balances."""
    db = sqlite3.connect(str(path))
    for statement in schema.render("sqlite", target=1):
        db.execute(statement)
    db.execute("CREATE INDEX entries_account ON entries(account_id)")
    db.execute("CREATE INDEX postings_reference ON postings(reference)")
    if balances:
        for statement in OLD_BALANCES:
            db.execute(statement)
    for statement in DATA:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


@pytest.mark.parametrize("balances", [False, True], ids=["without-balances", "with-balances"])
def test_a_version_1_lab_file_upgrades(tmp_path: Path, balances: bool) -> None:
    path = tmp_path / "center.db"
    v1_sqlite(path, balances=balances)
    storage = SQLiteStorage(path)
    try:
        db = storage._db
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        assert dict(db.execute("SELECT account_id, amount FROM balances")) == SUMS
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert not {"entries_account", "postings_reference"} & indexes
        with storage.transaction():  # the trigger keeps them from here on
            storage.insert_posting("more", "m", [("A", 5), ("Z", -5)])
        assert (storage.entry_sum("A"), storage.entry_sum("Z")) == (-65, -5)
        assert storage.entry_sum() == 0 and not storage.unbalanced_postings()
    finally:
        storage.close()


def test_a_sqlite_file_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "center.db"
    db = sqlite3.connect(str(path))
    db.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    db.close()
    with pytest.raises(ConfigError, match="upgrade swipepay"):
        SQLiteStorage(path)


def psycopg() -> ModuleType:
    """psycopg, imported by the PostgreSQL tests only (the SQLite ones run without it)."""
    import psycopg

    return psycopg


def pg_storage(url: str) -> PostgresStorage:
    from swipepay.center.pg_storage import PostgresStorage

    return PostgresStorage(url)


def v1_postgresql(url: str) -> None:
    """A PostgreSQL database as version 1 of the schema left it, with some history."""
    with psycopg().connect(url) as conn:
        for statement in schema.render("postgresql", target=1):
            conn.execute(statement)
        conn.execute(schema.PG_VERSION_TABLE)
        conn.execute("INSERT INTO schema_version (version, description) VALUES (1, 'v1')")
        for statement in DATA:
            conn.execute(statement)


def test_an_older_postgresql_database_upgrades(pg_url: str) -> None:
    v1_postgresql(pg_url)
    storage = pg_storage(pg_url)
    try:
        assert storage.schema_version() == schema.LATEST
        # every account has its balance row, the ones without entries at 0
        with psycopg().connect(pg_url) as conn:
            kept = dict(conn.execute("SELECT account_id, amount FROM balances").fetchall())
        assert kept == {**SUMS, "Z": 0}
        with storage.transaction():
            storage.insert_posting("more", "m", [("A", 5), ("Z", -5)])
            storage.insert_account(AccountRecord("N", "n", "cardholder", "978"))
        assert (storage.entry_sum("A"), storage.entry_sum("Z"), storage.entry_sum("N")) == (
            -65,
            -5,
            0,
        )
        assert storage.entry_sum() == 0 and not storage.unbalanced_postings()
    finally:
        storage.close()


def test_a_postgresql_database_newer_than_the_code_is_refused(pg_url: str) -> None:
    pg_storage(pg_url).close()
    with psycopg().connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, description) VALUES (%s, 'future')",
            (schema.LATEST + 1,),
        )
    with pytest.raises(ConfigError, match="upgrade swipepay"):
        pg_storage(pg_url)


def test_centers_starting_together_migrate_once(pg_url: str) -> None:
    """Four processes' storages opening one empty database at once: the advisory lock lets one
    migrate, the others find it done."""
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            pg_storage(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    with psycopg().connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version").fetchall()]
    assert versions == list(range(1, schema.LATEST + 1))
