"""The terminal's store: STAN, pre-authorizations and reversal queue in terminals/<TID>/terminal.db,
and the import of a lab written before the store (state.json, preauths.json, reversals.db)."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from swipepay.drivers.store.terminal_store import (
    LEGACY_PREAUTHS,
    LEGACY_REVERSALS,
    LEGACY_STAN,
    STORE_FILE,
    TerminalStore,
    following_stan,
)
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.terminal import Order, Terminal, TerminalConfig
from swipepay.firmware_sim.transaction import Transaction, TxnType

PREAUTH = Transaction(
    type=TxnType.PREAUTH, amount=80_00, pan="4761739001010119", expiry="2812",
    terminal_id="POS00001", merchant_id="MERCH0000000001", stan="000007",
    transmitted_at="1126120000", entry_mode="07", auth_code="A1B2C3",
)  # fmt: skip


def old_lab_files(directory: Path) -> None:
    """What a terminal directory held before the store: the STAN file, the pre-auth memory and
    a reversal queue from before write-ahead entries (no owner / txn_key columns)."""
    directory.mkdir(parents=True)
    (directory / LEGACY_STAN).write_text(json.dumps({"next_stan": 42}) + "\n")
    record = {
        "type": "preauth", "amount": 80_00, "pan": PREAUTH.pan, "expiry": "2812",
        "terminal_id": "POS00001", "merchant_id": "MERCH0000000001", "stan": "000007",
        "transmitted_at": "1126120000", "currency": "978", "entry_mode": "07",
        "auth_code": "A1B2C3",
    }  # fmt: skip
    (directory / LEGACY_PREAUTHS).write_text(json.dumps({"000007": record}, indent=1))
    db = sqlite3.connect(str(directory / LEGACY_REVERSALS))
    with db:
        db.execute("CREATE TABLE reversals (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        db.execute("INSERT INTO reversals (body) VALUES (?)", (b"old reversal",))
    db.close()


def test_a_new_terminal_starts_at_stan_1_and_takes_each_once(tmp_path: Path) -> None:
    with TerminalStore(tmp_path / "T") as store:
        assert store.next_stan() == 1
        assert [store.take_stan() for _ in range(3)] == [1, 2, 3]
    with TerminalStore(tmp_path / "T") as again:  # taken STANs stay taken across a restart
        assert again.take_stan() == 4
    assert stat.S_IMODE((tmp_path / "T" / STORE_FILE).stat().st_mode) == 0o600


def test_stan_wraps_from_999999_to_1(tmp_path: Path) -> None:
    with TerminalStore(tmp_path) as store:
        store._set("next_stan", 999_999)
        assert (store.take_stan(), store.take_stan()) == (999_999, 1)


@pytest.mark.parametrize("stan", [1, 41, 999_998, 999_999])
def test_the_store_counts_stans_as_the_firmware_does(stan: int) -> None:
    config = TerminalConfig("POS00001", "MERCH0000000001", "Corner Coffee")
    terminal = Terminal(config, None, stan)  # type: ignore[arg-type]  # a completion: no phone
    terminal.start(Order(TxnType.COMPLETION, 1_00, PREAUTH), datetime(2026, 11, 26, tzinfo=UTC))
    assert terminal.next_stan == following_stan(stan)


def test_preauths_are_remembered_and_forgotten(tmp_path: Path) -> None:
    with TerminalStore(tmp_path) as store:
        store.remember_preauth(PREAUTH, "A1B2C3")
    with TerminalStore(tmp_path) as store:
        assert store.preauths() == {"000007": PREAUTH}
        assert store.preauths()["000007"].auth_code == "A1B2C3"
        store.forget_preauth("000007")
        assert store.preauths() == {}


def test_an_old_labs_files_are_imported_once_and_removed(tmp_path: Path) -> None:
    directory = tmp_path / "terminals" / "POS00001"
    old_lab_files(directory)
    with TerminalStore.for_lab(tmp_path, "POS00001") as store:
        assert store.next_stan() == 42
        assert store.preauths() == {"000007": PREAUTH}
        assert [body for _, body in store.reversals.pending()] == [b"old reversal"]
    assert sorted(p.name for p in directory.iterdir() if "terminal.db" not in p.name) == []
    # A crash after the import but before the removal leaves the old files: not imported twice.
    old_lab_files(tmp_path / "again")
    for name in (LEGACY_STAN, LEGACY_PREAUTHS, LEGACY_REVERSALS):
        (tmp_path / "again" / name).replace(directory / name)
    with TerminalStore.for_lab(tmp_path, "POS00001") as store:
        assert store.take_stan() == 42
        assert len(store.reversals.pending()) == 1 and len(store.preauths()) == 1
    assert not (directory / LEGACY_STAN).exists()


def test_armed_reversals_of_an_old_queue_keep_their_owner(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    db = sqlite3.connect(str(tmp_path / LEGACY_REVERSALS))
    with db:
        db.execute("CREATE TABLE reversals (id INTEGER PRIMARY KEY, body BLOB NOT NULL, "
                   "owner TEXT, txn_key TEXT)")  # fmt: skip
        db.execute("INSERT INTO reversals (body, owner, txn_key) VALUES (?, ?, ?)",
                   (b"orphan", "dead-process", "POS00001/000001/1126120000"))  # fmt: skip
    db.close()
    with TerminalStore(tmp_path) as store:
        assert store.reversals.pending(owner="dead-process") == []  # still that process's
        assert store.reversals.armed("dead-process", "POS00001/000001/1126120000") is not None


def test_a_malformed_old_stan_file_is_a_config_error(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / LEGACY_STAN).write_text("{not json")
    with pytest.raises(ConfigError, match="delete it to restart STANs at 1"):
        TerminalStore(tmp_path)


def test_a_damaged_store_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    # Before: sqlite3's DatabaseError traceback from every `terminal run`.
    (tmp_path / STORE_FILE).write_bytes(b"not a database, maybe a half-copied one\n" * 50)
    with pytest.raises(ConfigError, match=r"is not a usable SQLite file .* move it aside"):
        TerminalStore(tmp_path)
    assert (tmp_path / STORE_FILE).read_bytes().startswith(b"not a database")
    (tmp_path / "under-a-file").write_text("")
    with pytest.raises(ConfigError, match="cannot open"):
        TerminalStore(tmp_path / "under-a-file")
