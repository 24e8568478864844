"""PostgresStorage on a real server: row locks between connections, concurrent duplicates and
deadlocks as StorageConflict, a lost connection as StorageUnavailable and the reconnect after
it, and the center's decisions on PostgreSQL (the storage contract itself runs on both backends
in test_storage.py and test_ledger.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from swipepay.center.core import AuthRequest
from swipepay.center.pg_storage import PostgresStorage
from swipepay.center.storage import (
    AccountRecord,
    CardRecord,
    HoldRecord,
    MessageKey,
    MessageRecord,
    StorageConflict,
    StorageUnavailable,
)
from swipepay.cli.harness.processes import wait_for
from swipepay.firmware_sim.transaction import TxnType
from tests.support.world import ACCOUNT, NOW, OPENING, World

P, PRE, COMP = TxnType.PURCHASE, TxnType.PREAUTH, TxnType.COMPLETION


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two storages (two connections, as two center processes have) on one fresh database with
    accounts A and B, A funded with 100."""
    first, second = PostgresStorage(pg_url), PostgresStorage(pg_url)
    with first.transaction():
        for name in ("A", "B", "E"):
            first.insert_account(AccountRecord(name, "holder", "cardholder", "978"))
        first.insert_posting("fund", "funding", [("E", 100), ("A", -100)])
    yield first, second
    first.close()
    second.close()


def waiting_for_a_lock(url: str) -> int:
    """How many sessions of the server wait for a lock now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
        assert row is not None
        return int(row[0])


class Background:
    """Run ``work`` on a thread; ``result()`` is its return value or raises its exception."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = work()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error
        return self._value


def message(key: MessageKey) -> MessageRecord:
    return MessageRecord(
        key, b"h" * 32, "purchase", 5, "4111", "A", "00", "123456", 95, "approved", "approved",
        received_at="2025-06-15T12:00:00+00:00",
    )  # fmt: skip


def test_schema_version_is_recorded(pg_url: str) -> None:
    storage = PostgresStorage(pg_url)
    try:
        assert storage.schema_version() == 2
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute("SELECT version, description FROM schema_version").fetchall()
        assert [r[0] for r in rows] == [1, 2] and all(r[1] for r in rows)
    finally:
        storage.close()
    PostgresStorage(pg_url).close()  # reopening applies nothing twice


def test_funds_check_waits_for_the_other_writer(
    two: tuple[PostgresStorage, PostgresStorage], pg_url: str
) -> None:
    """The balance row is locked by the first funds check; the second waits and then sees the
    first's posting and hold (READ COMMITTED re-reads after the lock)."""
    first, second = two

    def second_check() -> tuple[int, int]:
        with second.transaction():
            return second.balance_and_holds("A")

    with first.transaction():
        assert first.balance_and_holds("A") == (-100, 0)
        waiting = Background(second_check)
        wait_for(lambda: waiting_for_a_lock(pg_url) == 1, 10, "the second check to wait")
        first.insert_posting("p", "purchase", [("A", 30), ("B", -30)])
        first.insert_hold(HoldRecord("h", "A", 20, active=True))
    assert waiting.result() == (-70, 20)


def test_card_row_is_locked_for_the_ksn_update(
    two: tuple[PostgresStorage, PostgresStorage], pg_url: str
) -> None:
    first, second = two
    with first.transaction():
        first.insert_card(CardRecord("4111", "2712", "A", bytes(33), bytes(8), 0, bytes(32)))
    with first.transaction():
        card = first.get_card("4111")
        assert card is not None
        waiting = Background(lambda: _read_card(second))
        wait_for(lambda: waiting_for_a_lock(pg_url) == 1, 10, "the second read to wait")
        first.update_card_security("4111", 7, 1)
    assert waiting.result() == (7, 1)


def _read_card(storage: PostgresStorage) -> tuple[int, int]:
    with storage.transaction():
        card = storage.get_card("4111")
        assert card is not None
        storage.update_card_security(card.pan, card.last_ksn_counter, card.pin_tries)
        return card.last_ksn_counter, card.pin_tries


def test_concurrent_insert_of_one_message_key_is_a_conflict(
    two: tuple[PostgresStorage, PostgresStorage], pg_url: str
) -> None:
    first, second = two
    key = MessageKey("POS00001", "000001", "0615120000")

    def insert_again() -> None:
        with second.transaction(), second.transaction():  # as in a batch: a savepoint
            second.insert_message(message(key))

    with first.transaction():
        first.insert_message(message(key))
        waiting = Background(insert_again)
        wait_for(lambda: waiting_for_a_lock(pg_url) == 1, 10, "the duplicate insert to wait")
    with pytest.raises(StorageConflict, match="concurrently"):
        waiting.result()
    with second.transaction():  # decided again: it finds the stored message
        assert second.get_message(key) == message(key)


def test_a_deadlock_is_a_conflict(two: tuple[PostgresStorage, PostgresStorage]) -> None:
    """Two writers that lock two rows in opposite orders: PostgreSQL breaks the cycle and the
    victim gets a StorageConflict (rolled back whole), the other commits."""
    first, second = two
    both_locked = threading.Barrier(2, timeout=10)

    def lock_in_order(storage: PostgresStorage, a: str, b: str) -> str:
        try:
            with storage.transaction():
                storage.balance_and_holds(a)
                both_locked.wait()
                storage.balance_and_holds(b)
            return "committed"
        except StorageConflict:
            return "conflict"

    one = Background(lambda: lock_in_order(first, "A", "B"))
    other = Background(lambda: lock_in_order(second, "B", "A"))
    assert sorted([one.result(), other.result()]) == ["committed", "conflict"]


def test_lock_rows_takes_cards_and_balances_of_a_batch(
    two: tuple[PostgresStorage, PostgresStorage], pg_url: str
) -> None:
    first, second = two
    with first.transaction():
        first.insert_card(CardRecord("4111", "2712", "A", bytes(33), bytes(8), 0, bytes(32)))
    with first.transaction():
        first.lock_rows({"4111"}, set(), set())
        waiting = Background(lambda: _check_funds(second, "A"))
        wait_for(lambda: waiting_for_a_lock(pg_url) == 1, 10, "the funds check to wait")
    assert waiting.result() == (-100, 0)


def _check_funds(storage: PostgresStorage, account_id: str) -> tuple[int, int]:
    with storage.transaction():
        return storage.balance_and_holds(account_id)


def _terminate_others(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'swipepay-center'"
        )


def test_lost_connection_is_unavailable_then_reconnects(pg_url: str) -> None:
    storage = PostgresStorage(pg_url)
    try:
        with storage.transaction():
            storage.insert_account(AccountRecord("A", "holder", "cardholder", "978"))
        # Lost between transactions: the next one connects again by itself.
        _terminate_others(pg_url)
        with storage.transaction():
            assert storage.get_account("A") is not None
        # Lost inside a transaction: that one fails as unavailable, nothing of it stays ...
        with pytest.raises(StorageUnavailable), storage.transaction():
            storage.insert_account(AccountRecord("B", "holder", "cardholder", "978"))
            _terminate_others(pg_url)
            storage.insert_account(AccountRecord("C", "holder", "cardholder", "978"))
        # ... and the next one works on a new connection.
        with storage.transaction():
            assert storage.get_account("B") is None
            storage.insert_account(AccountRecord("D", "holder", "cardholder", "978"))
        assert storage.entry_sum("D") == 0
    finally:
        storage.close()


def test_unreachable_server_is_unavailable_at_once() -> None:
    with pytest.raises(StorageUnavailable, match=r"\*\*\*.*is the server running") as info:
        PostgresStorage("postgresql://user:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(info.value)


# -- the center's decisions on PostgreSQL ------------------------------------------------------


def test_center_decides_on_postgresql(pg_world: World) -> None:
    w = pg_world
    buy = w.signed(P, 25_00)
    first = w.center.authorize(buy, NOW)
    assert first.response_code == "00"
    assert w.center.authorize(buy, NOW) == first  # retransmission: the stored answer
    assert w.center.authorize(w.signed(P, OPENING), NOW).response_code == "51"
    pre = w.signed(PRE, 30_00)
    assert w.center.authorize(pre, NOW).response_code == "00"
    assert w.center.available_balance(ACCOUNT) == OPENING - 55_00
    comp = AuthRequest(
        w.txn(COMP, 20_00, original_stan=pre.txn.stan, original_at=pre.txn.transmitted_at)
    )
    assert w.center.authorize(comp, NOW).response_code == "00"
    assert w.center.authorize(w.phone.request(w.txn(P, 1_00), pin="0000"), NOW).response_code == (
        "55"
    )
    t = buy.txn
    assert w.center.reverse(t.terminal_id, t.stan, t.transmitted_at).message == (
        "reversed 2500 of 2500"
    )
    w.reopen()
    assert w.center.ledger_balance(ACCOUNT) == OPENING - 20_00
    assert w.center.available_balance(ACCOUNT) == OPENING - 20_00
    assert w.center.check_balanced()
    # the wrong PIN's try counter persisted: two more (not three) block the card
    for _ in range(2):
        wrong = w.phone.request(w.txn(P, 1_00), pin="0000")
        assert w.center.authorize(wrong, NOW).response_code == "55"
    assert w.center.authorize(w.signed(P, 1_00), NOW).response_code == "75"
