"""TlsHost with several centers: tried in order, a refusing or silent one skipped, a request
without an answer retransmitted unchanged to the next center, queued reversals sent to
whichever center answers."""

from __future__ import annotations

import time

import pytest

from swipepay.cli.harness.processes import free_port
from swipepay.drivers.host_tls import CenterUnreachable, TlsHost
from swipepay.firmware_sim.address import Address
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.transaction import TxnType
from tests.support.lab_center import POS, RawClient, ServerThread, cardholder, ledger, signed
from tests.support.silent_center import SilentCenter
from tests.support.world import Stans

LOCAL = "127.0.0.1"


def test_a_request_the_first_center_never_answers_goes_unchanged_to_the_second(
    server: ServerThread, silent: SilentCenter
) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    req = signed(alice, TxnType.PURCHASE, 5_00, "000001")
    wire = codec.frame(codec.encode(codec.request_fields(req)))
    host = TlsHost.for_lab(lab.root, POS, LOCAL, silent.port, fallbacks=[(LOCAL, server.port)])
    started = time.monotonic()
    try:
        answer = host.authorize(req, 2.0)
        took = time.monotonic() - started
        assert answer.approved
        assert host.answered_by == Address(LOCAL, server.port)
        assert host.skipped == [(Address(LOCAL, silent.port), "did not answer in time")]
        host.settle(req.txn)
    finally:
        host.close()
    # Center 1 got the whole request and its share of the time (half of 2 s), no more.
    assert bytes(silent.data) == wire
    assert 0.9 < took < 2.0
    with ledger(lab) as center:
        assert center.ledger_balance(alice.account) == 1_500_00 - 5_00
    # Had center 1 decided it too, its copy reaching the shared database gets the stored
    # answer: the same bytes again to center 2 move no money.
    raw = RawClient(lab, server.port)
    try:
        again = raw.call(codec.request_fields(req))
    finally:
        raw.close()
    assert (again["39"], again["38"]) == ("00", answer.auth_code)
    with ledger(lab) as center:
        assert center.ledger_balance(alice.account) == 1_500_00 - 5_00
        assert center.check_balanced()


def test_the_echo_check_skips_a_refusing_and_a_silent_center(
    server: ServerThread, silent: SilentCenter
) -> None:
    down = free_port()
    host = TlsHost.for_lab(
        server.lab.root, POS, LOCAL, down, fallbacks=[(LOCAL, silent.port), (LOCAL, server.port)]
    )
    try:
        host.check(POS, lambda: "000100", "1201090000", 3.0)
        assert host.answered_by == Address(LOCAL, server.port)
        assert host.skipped == [
            (Address(LOCAL, down), "refused the connection"),
            (Address(LOCAL, silent.port), "did not answer in time"),
        ]
        # The connection stays with the center that answered.
        assert host.echo(POS, "000101", "1201090000").approved
    finally:
        host.close()


def test_no_center_reachable_names_each_and_is_said_at_once(server: ServerThread) -> None:
    first, second = free_port(), free_port()
    host = TlsHost.for_lab(server.lab.root, POS, LOCAL, first, fallbacks=[(LOCAL, second)])
    started = time.monotonic()
    try:
        with pytest.raises(CenterUnreachable) as caught:
            host.check(POS, lambda: "000100", "1201090000", 3.0)
    finally:
        host.close()
    assert time.monotonic() - started < 1.0
    assert str(caught.value) == (
        f"no center reachable (127.0.0.1:{first} refused the connection; 127.0.0.1:{second} "
        "refused the connection) — is `swipepay center serve` running at one of them, for "
        "this lab (--home)?"
    )


def test_a_payment_with_every_center_down_left_nothing_to_reverse(server: ServerThread) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    host = TlsHost.for_lab(lab.root, POS, LOCAL, free_port(), fallbacks=[(LOCAL, free_port())])
    try:
        with pytest.raises(CenterUnreachable, match="no center reachable"):
            host.authorize(signed(alice, TxnType.PURCHASE, 1_00, "000001"), 0.5)
        assert host.queue.pending(owner=None) == []
    finally:
        host.close()


def test_a_queued_reversal_goes_to_whichever_center_answers(server: ServerThread) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    stan = Stans()
    lost = signed(alice, TxnType.PURCHASE, 7_00, stan())
    raw = RawClient(lab, server.port)
    assert raw.call(codec.request_fields(lost))["39"] == "00"  # approved; the answer "lost"
    raw.close()
    host = TlsHost.for_lab(lab.root, POS, LOCAL, free_port(), fallbacks=[(LOCAL, server.port)])
    try:
        host.queue_reversal(lost.txn)
        assert host.echo(POS, stan(), "1126120000").approved  # via center 2: reversal first
        assert host.queue.pending(owner=None) == []
    finally:
        host.close()
    with ledger(lab) as center:
        assert center.ledger_balance(alice.account) == 1_500_00
        assert center.check_balanced()


def test_a_new_connection_tries_the_first_center_again(
    server: ServerThread, silent: SilentCenter
) -> None:
    """In order on every new connection: after a failover the primary is tried first again."""
    host = TlsHost.for_lab(server.lab.root, POS, LOCAL, silent.port,
                           fallbacks=[(LOCAL, server.port)])  # fmt: skip
    try:
        assert host.echo(POS, "000001", "1126120000", timeout=1.0).approved
        assert host.answered_by == Address(LOCAL, server.port)
        host._drop()
        before = len(silent.data)
        assert host.echo(POS, "000002", "1126120000", timeout=1.0).approved
        assert len(silent.data) > before  # the silent primary was asked first
    finally:
        host.close()
