"""PostgresStorage on a real server: row locks between connections, concurrent duplicates and
deadlocks as StorageConflict, a lost connection as StorageUnavailable and the reconnect after
it, and the center's decisions on PostgreSQL (the storage contract itself runs on both backends
in test_storage.py and test_ledger.py)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from swipepay.center.core import AuthRequest, AuthResponse, Center, request_hash
from swipepay.center.keystore import CenterKeys
from swipepay.center.lab import create_lab
from swipepay.center.pg_storage import CONNECT_TIMEOUT_S, PostgresStorage
from swipepay.center.server import CenterServer
from swipepay.center.storage import (
    AccountRecord,
    CardRecord,
    HoldRecord,
    MessageKey,
    MessageRecord,
    StorageConflict,
    StorageUnavailable,
)
from swipepay.cli.harness.postgres import PostgresCluster
from swipepay.cli.harness.processes import wait_for
from swipepay.cli.main import main
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.transaction import TxnType
from tests.support.lab_center import RawClient, ServerThread, batch_jobs, cardholder, signed
from tests.support.world import ACCOUNT, NOW, OPENING, World, new_world

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
    """How many sessions of this database wait for a lock now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
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


def test_multi_host_url_settles_on_the_server_that_answers(pg_url: str, tmp_path: Path) -> None:
    """The libpq multi-host form a center uses in front of a primary and its standby
    (hardware_notes/center-scale.md): the first host is not there, the second is the writable
    server; ``target_session_attrs=read-write`` keeps the center off a read-only standby."""
    base, query = pg_url.split("?", 1)
    params = dict(p.split("=", 1) for p in query.split("&"))
    dead = tmp_path / "no-server-here"
    dead.mkdir()
    url = (
        f"{base}?host={dead},{params['host']}&port={params['port']},{params['port']}"
        "&target_session_attrs=read-write"
    )
    storage = PostgresStorage(url)
    try:
        assert storage.schema_version() == 2
    finally:
        storage.close()


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


def test_a_pipelined_error_fails_the_batch_then_it_runs_one_statement_at_a_time(
    two: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """Writes go out without waiting (pipeline mode), so a failing one cannot be pinned on its
    request: the whole transaction fails as a conflict, nothing of it stays, and the next one
    runs step by step, where the failure stays inside its own request's savepoint."""
    storage, other = two

    def batch() -> list[str]:
        outcomes = []
        with storage.batch_transaction():
            with storage.transaction():  # request 1: fine
                storage.insert_account(AccountRecord("P1", "holder", "cardholder", "978"))
                outcomes.append("ok")
            try:
                with storage.transaction():  # request 2: breaks the accounts' primary key
                    storage.insert_account(AccountRecord("A", "holder", "cardholder", "978"))
                    outcomes.append("sent")
            except psycopg.errors.UniqueViolation:
                outcomes.append("refused")
            with storage.transaction():  # request 3: a read after it
                outcomes.append("read" if storage.get_account("B") is not None else "missing")
        return outcomes

    with pytest.raises(StorageConflict):  # the INSERT's error, or "pipeline aborted" after it
        batch()
    with other.transaction():
        assert other.get_account("P1") is None  # the failed transaction left nothing
    assert batch() == ["ok", "refused", "read"]  # step by step: request 2 alone refused
    with storage.transaction():
        assert storage.get_account("P1") is not None
    # and the one after runs in a pipeline again; a plain transaction never does
    with storage.batch_transaction():
        assert storage._pipeline is not None
    with storage.transaction():
        assert storage._pipeline is None


def test_in_a_pipeline_a_request_that_fails_in_python_is_rolled_back_alone(
    two: tuple[PostgresStorage, PostgresStorage],
) -> None:
    storage, other = two
    with storage.batch_transaction():
        assert storage._pipeline is not None
        with storage.transaction():
            storage.insert_account(AccountRecord("P2", "holder", "cardholder", "978"))
        with pytest.raises(LookupError), storage.transaction():
            storage.insert_account(AccountRecord("P3", "holder", "cardholder", "978"))
            raise LookupError("a decision that failed after writing")
        with storage.transaction():
            storage.insert_account(AccountRecord("P4", "holder", "cardholder", "978"))
    with other.transaction():
        assert [other.get_account(a) is not None for a in ("P2", "P3", "P4")] == [
            True,
            False,
            True,
        ]


def test_cards_locked_for_a_batch_are_read_once_and_kept_current(
    two: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """lock_rows reads the batch's cards with their locks; get_card then needs no round trip,
    sees this transaction's own updates, and after a rolled-back request reads the table again
    (so the undone update is not served)."""
    storage, _ = two
    with storage.transaction():
        storage.insert_card(CardRecord("4111", "2712", "A", bytes(33), bytes(8), 0, bytes(32)))
    with storage.batch_transaction():
        storage.lock_rows({"4111"}, set(), set())
        assert "4111" in storage._cards
        with storage.transaction():
            storage.update_card_security("4111", 5, 1)
        card = storage.get_card("4111")
        assert card is not None and (card.last_ksn_counter, card.pin_tries) == (5, 1)
        with pytest.raises(LookupError), storage.transaction():
            storage.update_card_security("4111", 6, 2)
            raise LookupError("this request fails after writing")
        assert "4111" not in storage._cards  # dropped with the rollback
        card = storage.get_card("4111")
        assert card is not None and (card.last_ksn_counter, card.pin_tries) == (5, 1)


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


def test_a_batch_reads_its_messages_ahead_and_sees_its_own_writes(pg_world: World) -> None:
    """The batch's retransmission lookups and the pre-authorization a completion names are read
    by lock_rows in one round trip; a request repeated inside the same batch still finds the
    first copy's answer (the batch's own insert), and a completion sees the state it wrote."""
    w = pg_world
    storage = w.center._storage
    assert isinstance(storage, PostgresStorage)
    pre = w.signed(PRE, 30_00)
    assert w.center.authorize(pre, NOW).response_code == "00"
    comp = AuthRequest(
        w.txn(COMP, 20_00, original_stan=pre.txn.stan, original_at=pre.txn.transmitted_at)
    )
    buy = w.signed(P, 5_00)
    with w.center.batch([buy, buy, comp]):
        key = MessageKey(buy.txn.terminal_id, buy.txn.stan, buy.txn.transmitted_at)
        original = MessageKey(pre.txn.terminal_id, pre.txn.stan, pre.txn.transmitted_at)
        assert storage._messages[key] is None  # looked up ahead: not stored yet
        stored_pre = storage._messages[original]
        assert stored_pre is not None and stored_pre.state == "approved"
        first = w.center.authorize(buy, NOW)
        again = w.center.authorize(buy, NOW)  # the same message again, in the same batch
        assert first.response_code == "00" and again == first
        assert w.center.authorize(comp, NOW).response_code == "00"
        completed = storage.get_message(original)
        assert completed is not None and completed.state == "completed"
    assert w.center.ledger_balance(ACCOUNT) == OPENING - 5_00 - 20_00  # each once
    assert w.center.check_balanced()


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


# -- the server's batch decision under conflicts and outages -----------------------------------


def _server(center: Center) -> CenterServer:
    """A server around ``center`` whose batch decision a test calls directly (no network)."""
    server = CenterServer(
        lambda: center, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), use_verifier=False
    )
    server._clock = lambda: NOW
    return server


def decide(
    server: CenterServer, center: Center, reqs: list[AuthRequest | codec.ReversalRequest]
) -> list[AuthResponse]:
    """What :meth:`CenterServer._decide` answers for ``reqs`` as one batch."""

    async def run() -> list[AuthResponse]:
        return await server._decide(center, batch_jobs(list(reqs)))

    return asyncio.run(run())


def test_a_concurrent_duplicate_is_decided_again_and_gets_the_stored_answer(
    pg_world: World, pg_url: str
) -> None:
    """Another center stores the same request while this one decides it: this one's insert
    waits, fails on the primary key, the batch is rolled back and decided again, and the
    answer is the stored one; nothing of the first attempt stays."""
    w = pg_world
    req = w.signed(P, 10_00)
    t = req.txn
    key = MessageKey(t.terminal_id, t.stan, t.transmitted_at)
    theirs = MessageRecord(
        key, request_hash(req), "purchase", 10_00, t.pan, ACCOUNT, "00", "654321", None,
        "approved", "approved", received_at=NOW.isoformat(),
    )  # fmt: skip
    other = PostgresStorage(pg_url)
    try:
        with other.transaction():
            other.insert_message(theirs)
            deciding = Background(lambda: decide(_server(w.center), w.center, [req]))
            wait_for(lambda: waiting_for_a_lock(pg_url) == 1, 10, "the duplicate insert to wait")
    finally:
        other.close()
    [answer] = deciding.result()
    assert (answer.response_code, answer.auth_code) == ("00", "654321")
    assert w.center.ledger_balance(ACCOUNT) == OPENING  # the first attempt's posting is gone


def test_a_reversal_racing_its_original_on_another_center_never_lets_both_through(
    pg_world: World, pg_url: str
) -> None:
    """The original is in another center's open batch when its reversal arrives here: the
    reversal's record of "never seen" waits on the key, fails once the original commits, and
    the batch decided again reverses the original.  The other order (reversal committed
    first): the original is refused.  Either way the money is back."""
    w = pg_world
    other = Center.open(pg_url, w.keys)
    try:
        req = w.signed(P, 7_00)
        t = req.txn
        undo = codec.ReversalRequest(t.terminal_id, t.stan, t.transmitted_at, None, 7_00)
        with other.batch([req]):
            assert other.authorize(req, NOW).response_code == "00"
            reversing = Background(lambda: decide(_server(w.center), w.center, [undo]))
            wait_for(lambda: waiting_for_a_lock(pg_url) == 1, 10, "the reversal to wait")
        [answer] = reversing.result()
        assert (answer.response_code, answer.message) == ("00", "reversed 700 of 700")
        assert w.center.ledger_balance(ACCOUNT) == OPENING

        late = w.signed(P, 8_00)
        t = late.txn
        first = decide(_server(w.center), w.center, [
            codec.ReversalRequest(t.terminal_id, t.stan, t.transmitted_at, None, 8_00)
        ])  # fmt: skip
        assert [r.message for r in first] == ["unknown transaction; nothing to reverse"]
        assert other.authorize(late, NOW).response_code == "94"
        assert w.center.ledger_balance(ACCOUNT) == OPENING
        assert w.center.check_balanced()
    finally:
        other.close()


class _Refusing:
    """A stand-in Center whose every batch fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.batches = 0

    @contextmanager
    def batch(self, requests: object = ()) -> Iterator[None]:
        self.batches += 1
        raise self.error
        yield


def test_conflicts_are_retried_a_bounded_number_of_times(pg_world: World) -> None:
    refusing = _Refusing(StorageConflict("always"))
    server = _server(pg_world.center)
    answers = decide(server, refusing, [pg_world.signed(P, 1_00)] * 2)  # type: ignore[arg-type]
    assert [a.response_code for a in answers] == ["96", "96"]
    assert refusing.batches == 5


def test_database_unavailable_answers_91_for_the_batch_and_logs_once(
    pg_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    refusing = _Refusing(StorageUnavailable("gone"))
    server = _server(pg_world.center)
    for _ in range(3):
        answers = decide(server, refusing, [pg_world.signed(P, 1_00)] * 3)  # type: ignore[arg-type]
        assert [a.response_code for a in answers] == ["91"] * 3
    assert refusing.batches == 3  # no retry: answered at once
    assert len([r for r in caplog.records if "database unavailable" in r.message]) == 1


def test_postgresql_killed_answers_91_at_once_and_recovers(
    pg_private_cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The server SIGKILLed (postmaster and backends): the next batches are answered 91 at
    once, the outage logged once; when it is back the center reconnects by itself, and every
    approval from before the crash is still there."""
    cluster = pg_private_cluster
    w = new_world(CenterKeys.generate(bdk_id=bytes.fromhex("12345678")), cluster.create_database())
    try:
        server = _server(w.center)
        first = w.signed(P, 10_00)
        assert [a.response_code for a in decide(server, w.center, [first])] == ["00"]
        cluster.kill()
        second, third = w.signed(P, 20_00), w.signed(P, 30_00)
        for _ in range(2):
            started = time.monotonic()
            answers = decide(server, w.center, [second, third])
            assert [a.response_code for a in answers] == ["91", "91"]
            assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
        assert len([r for r in caplog.records if "database unavailable" in r.message]) == 1
        cluster.start()
        # the terminal sends the unanswered request again: decided now, once
        assert [a.response_code for a in decide(server, w.center, [second])] == ["00"]
        assert [a.response_code for a in decide(server, w.center, [second])] == ["00"]
        assert any("reachable again" in r.message for r in caplog.records)
        assert w.center.ledger_balance(ACCOUNT) == OPENING - 30_00
        assert w.center.check_balanced()
    finally:
        w.center.close()


def test_a_lab_on_postgresql_is_served_over_tls_and_reported(tmp_path: Path, pg_url: str) -> None:
    """``init --db``'s lab end to end: the TLS server decides on PostgreSQL, a retransmission
    gets the stored answer, and ``center report`` reconciles it with the ledger."""
    lab = create_lab(tmp_path / "lab", database=pg_url)
    alice = cardholder(lab, "alice-phone")
    server = ServerThread(lab, use_verifier=False)
    try:
        client = RawClient(lab, server.port)
        try:
            fields = codec.request_fields(signed(alice, TxnType.PURCHASE, 12_34, "000001"))
            first = client.call(fields)
            assert first["39"] == "00"
            assert client.call(fields)["38"] == first["38"]
        finally:
            client.close()
    finally:
        server.stop()
    report = ["center", "report", "--home", str(lab.root), "--format", "json"]
    out = CliRunner().invoke(main, report)
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert (row["terminal_id"], row["count"], row["net"]) == ("POS00001", 1, 12_34)
