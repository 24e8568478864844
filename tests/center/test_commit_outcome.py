"""The COMMIT's outcome unknown (PostgreSQL): the database connection breaks while ``COMMIT``
is on its way, after the server did commit.  The center must not answer (a 91 would tell the
terminal its approved purchase failed; an approval could be for a batch that did not stay): it
closes the batch's connections, the terminal retransmits on a new connection and exactly-once
answers from the stored answer, booked once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import Lab, create_lab
from swipepay.center.pg_storage import PostgresStorage
from swipepay.center.storage import AccountRecord, CommitOutcomeUnknown, StorageUnavailable
from swipepay.drivers.host_tls import TlsHost
from swipepay.firmware_sim.transaction import TxnType
from tests.support.lab_center import POS, ServerThread, cardholder, signed


class _LostAcknowledgement:
    """Patches :class:`PostgresStorage` so that the next ``armed`` COMMITs reach the server and
    commit, and then the connection breaks before the client hears so."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = 0
        self.fired = 0
        real = PostgresStorage._execute

        def execute(storage: PostgresStorage, sql: str, params: Any = None) -> Any:
            result = real(storage, sql, params)
            if sql == "COMMIT" and self.armed:
                storage._sync()  # in pipeline mode: the COMMIT reaches the server and commits
                self.armed -= 1
                self.fired += 1
                assert storage._conn is not None
                storage._conn.close()
                raise StorageUnavailable("server closed the connection unexpectedly")
            return result

        monkeypatch.setattr(PostgresStorage, "_execute", execute)


@pytest.fixture
def pg_lab(tmp_path: Path, pg_url: str) -> Lab:
    return create_lab(tmp_path / "lab", database=pg_url)


@pytest.fixture
def lost(monkeypatch: pytest.MonkeyPatch) -> _LostAcknowledgement:
    return _LostAcknowledgement(monkeypatch)


@pytest.fixture
def pg_server(pg_lab: Lab) -> Iterator[ServerThread]:
    s = ServerThread(pg_lab, use_verifier=False)
    yield s
    s.stop()


def test_storage_reports_a_lost_commit_as_outcome_unknown(
    pg_lab: Lab, lost: _LostAcknowledgement
) -> None:
    storage = PostgresStorage(pg_lab.database_url)
    try:
        lost.armed = 1
        unknown = pytest.raises(CommitOutcomeUnknown, match="outcome is unknown")
        with unknown, storage.transaction():
            storage.insert_account(AccountRecord("LOST-ACK", "holder", "cardholder", "978"))
        assert lost.fired == 1
        with storage.transaction():  # a new connection, by itself: the commit did happen
            assert storage.get_account("LOST-ACK") is not None
    finally:
        storage.close()


def test_unknown_outcome_closes_unanswered_and_the_retransmission_gets_the_stored_answer(
    pg_server: ServerThread, lost: _LostAcknowledgement
) -> None:
    lab = pg_server.lab
    alice = cardholder(lab, "alice-phone")
    with Center.open(lab.database_url, lab.center_keys()) as center:
        opening = center.ledger_balance(alice.account)
    req = signed(alice, TxnType.PURCHASE, 12_34, "000777")
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", pg_server.port, connect_timeout=2)
    try:
        lost.armed = 1
        answer = host.authorize(req, 10)
        assert answer.response_code == "00"
        assert lost.fired == 1
        assert host._sends == 2  # the first copy was closed unanswered, the second answered
        host.settle(req.txn)
    finally:
        host.close()
    with Center.open(lab.database_url, lab.center_keys()) as center:
        assert center.ledger_balance(alice.account) == opening - 12_34  # booked once
        assert center.check_balanced()
