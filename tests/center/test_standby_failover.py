"""Two center hosts on one PostgreSQL primary with a synchronous streaming-replication standby;
the primary dies, the standby is promoted, the centers carry on
(``hardware_notes/center-scale.md``, section 2, run on one machine).

What must hold: while no writable server exists a center answers 91 at once; after the
promotion both centers reach the new primary through the one multi-host URL
(``target_session_attrs=read-write`` skipped the standby before); an approval given before the
failure is on the promoted server (synchronous standby: ``COMMIT`` returned only once the
standby had it), so its retransmission gets the stored answer, booked once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import Lab, create_lab
from swipepay.cli.harness import postgres
from swipepay.cli.harness.postgres import PostgresCluster
from swipepay.cli.harness.processes import wait_for
from swipepay.drivers.host_tls import TlsHost
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.transaction import TxnType
from tests.support.ci import unavailable
from tests.support.lab_center import POS, ServerThread, cardholder, signed

DATABASE = "swipepay_failover"


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[PostgresCluster, PostgresCluster]]:
    reason = postgres.missing()
    if reason is not None:
        unavailable(reason)
    primary = PostgresCluster(settings={"synchronous_standby_names": "FIRST 1 (standby1)"})
    standby: PostgresCluster | None = None
    try:
        primary.start()
        standby = PostgresCluster.standby_of(primary, "standby1")
        standby.start()
        wait_for(
            lambda: primary.replication() == [("standby1", "sync")],
            30,
            "the standby to stream synchronously",
        )
        yield primary, standby
    finally:
        if standby is not None:
            standby.close()
        primary.close()


def _multi_host_url(*clusters: PostgresCluster) -> str:
    hosts = ",".join(quote(str(c.dir), safe="") for c in clusters)
    ports = ",".join(str(c.port) for c in clusters)
    return (
        f"postgresql://{postgres.SUPERUSER}@/{DATABASE}?host={hosts}&port={ports}"
        "&target_session_attrs=read-write&connect_timeout=2"
    )


def _ask(lab: Lab, port: int, req: AuthRequest) -> AuthResponse:
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", port, connect_timeout=2)
    try:
        answer = host.authorize(req, 10)
        if answer.approved:
            host.settle(req.txn)
        return answer
    finally:
        host.close()


def test_centers_carry_on_when_the_primary_dies_and_the_standby_is_promoted(
    primary_and_standby: tuple[PostgresCluster, PostgresCluster], tmp_path: Path
) -> None:
    primary, standby = primary_and_standby
    primary.create_database(DATABASE)  # replicated to the standby like everything else
    lab = create_lab(tmp_path / "lab", database=_multi_host_url(primary, standby))
    alice = cardholder(lab, "alice-phone")
    with Center.open(lab.database_url, lab.center_keys()) as center:
        opening = center.ledger_balance(alice.account)
    host_a = ServerThread(lab, use_verifier=False)
    host_b = ServerThread(lab, use_verifier=False)
    try:
        first = signed(alice, TxnType.PURCHASE, 10_00, "000101")
        approved = _ask(lab, host_a.port, first)
        assert approved.response_code == "00"

        primary.kill()  # the primary's machine is gone; nothing writable is left
        assert standby.in_recovery()
        down = _ask(lab, host_b.port, signed(alice, TxnType.PURCHASE, 5_00, "000102"))
        assert down.response_code == "91"  # at once, not after a hang

        standby.promote()
        again = _ask(lab, host_b.port, first)  # the retransmission, to the other host
        assert (again.response_code, again.auth_code) == ("00", approved.auth_code)
        later = _ask(lab, host_a.port, signed(alice, TxnType.PURCHASE, 2_00, "000103"))
        assert later.response_code == "00"  # host A reconnected to the new primary
    finally:
        host_a.stop()
        host_b.stop()
    with Center.open(standby.url_for(DATABASE), lab.center_keys()) as center:
        assert center.ledger_balance(alice.account) == opening - 10_00 - 2_00  # each once
        assert center.check_balanced()
