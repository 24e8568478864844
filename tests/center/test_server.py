"""The real ISO 8583 / TLS server on 127.0.0.1, driven by a raw pyiso8583 client and TlsHost."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import iso8583
import pytest

from swipepay.center.lab import Lab, create_lab
from swipepay.cli.harness.processes import wait_for
from swipepay.drivers.host_tls import TlsHost
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest
from swipepay.firmware_sim.transaction import TxnType
from tests.support.lab_center import (
    ATM,
    POS,
    Cardholder,
    RawClient,
    ServerThread,
    cardholder,
    ledger,
    signed,
    still_serves,
    txn,
)
from tests.support.world import Stans

# -- the message types ---------------------------------------------------------------------------


def test_echo_and_purchase_raw(server: ServerThread) -> None:
    alice = cardholder(server.lab, "alice-phone")
    c = RawClient(server.lab, server.port)
    try:
        echo = c.call(codec.network_fields(POS, "000001", "1126120000", "301"))
        assert (echo["t"], echo["39"], echo["70"]) == ("0810", "00", "301")
        req = signed(alice, TxnType.PURCHASE, 12_34, "000002")
        resp = c.call(codec.request_fields(req))
        assert resp["t"] == "0210" and resp["39"] == "00" and len(resp["38"]) == 6
        assert "54" not in resp and "63" not in resp  # no balance to the terminal
    finally:
        c.close()


def test_all_types_reversal_and_retransmission(server: ServerThread) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    stan = Stans()
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    atm = TlsHost.for_lab(lab.root, ATM, "127.0.0.1", server.port)
    try:
        pre = signed(alice, TxnType.PREAUTH, 50_00, stan())
        r = host.authorize(pre, 5)
        assert r.approved and r.sealed_balance is None
        comp = AuthRequest(
            txn(
                alice,
                TxnType.COMPLETION,
                40_00,
                stan(),
                original_stan=pre.txn.stan,
                original_at=pre.txn.transmitted_at,
                auth_code=r.auth_code,
            )
        )
        assert host.authorize(comp, 5).approved
        w = signed(alice, TxnType.WITHDRAWAL, 100_00, stan())
        assert atm.authorize(w, 5).approved
        d = signed(alice, TxnType.DEPOSIT, 30_00, stan())
        assert atm.authorize(d, 5).approved
        # Balance inquiry (0200, processing code 31): the balance comes back sealed for the
        # phone in field 63; only the phone opens it.
        b = signed(alice, TxnType.BALANCE, 0, stan())
        balance = atm.authorize(b, 5)
        assert balance.approved
        assert alice.phone.balance(b, balance) == 1_500_00 - 40_00 - 100_00 + 30_00
        assert atm.authorize(b, 5) == balance  # a retransmission: the same sealed bytes
        p = signed(alice, TxnType.PURCHASE, 20_00, stan())
        first = host.authorize(p, 5)
        assert first.approved
        # Retransmission: same key, same content -> the same answer, no money moved.
        assert host.authorize(p, 5) == first
        # Same key, different content -> 94.
        other = AuthRequest(
            p.txn.__class__(**{**p.txn.__dict__, "amount": 21_00}),
            p.pin_block,
            p.ksn,
            p.confirmation,
        )
        assert host.authorize(other, 5).response_code == "94"
        # Partial reversal of the deposit, then full reversal of the purchase, twice.
        assert atm.reverse(d.txn, 10_00).message.startswith("reversed 10")
        assert host.reverse(p.txn).message.startswith("reversed")
        again = host.reverse(p.txn)
        assert again.approved and "already reversed" in again.message
        unknown = host.reverse(txn(alice, TxnType.PURCHASE, 1, "999999"))
        assert unknown.approved and "unknown" in unknown.message
    finally:
        host.close()
        atm.close()
    with ledger(lab) as center:
        assert center.check_balanced()
        # 1500 - 40 (completion) - 100 (withdrawal) + 30 - 10 (deposit, partly reversed)
        assert center.ledger_balance(alice.account) == 1_380_00


def test_declines_and_field_41_must_match_certificate(server: ServerThread) -> None:
    bob = cardholder(server.lab, "bob-phone")
    c = RawClient(server.lab, server.port)
    try:
        big = c.call(codec.request_fields(signed(bob, TxnType.PURCHASE, 1_000_00, "000001")))
        assert big["39"] == "51"
        wrong_pin = bob.phone.request(
            txn(bob, TxnType.PURCHASE, 1_00, "000002"),
            pin="0000" if bob.phone.pin != "0000" else "1111",
        )
        assert c.call(codec.request_fields(wrong_pin))["39"] == "55"
        atm_txn = signed(bob, TxnType.WITHDRAWAL, 1_00, "000003")
        assert c.call(codec.request_fields(atm_txn))["39"] == "63"  # POS cert, field 41 = ATM
    finally:
        c.close()
    with ledger(server.lab) as center:
        assert center.ledger_balance(bob.account) == 40_00


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00",  # length 0
        b"\xff\xff" + b"x" * 10,  # oversize
        b"\x00\x05junk",  # truncated, then EOF
        b"\x00\x04\xff\xfe\xfd\xfc",  # undecodable, no MTI: closed
    ],
)
def test_bad_frames_close_the_connection(server: ServerThread, payload: bytes) -> None:
    c = RawClient(server.lab, server.port)
    c.send_raw(payload)
    c.sock.shutdown(socket.SHUT_WR) if payload == b"\x00\x05junk" else None
    assert c.recv_frame() is None
    c.close()
    still_serves(server)


@pytest.mark.parametrize(
    "body",
    [
        b"0200" + b"F" * 16,  # bitmap not hex
        b"0300" + b"0" * 16,  # unknown MTI (pyiso8583 decodes, we refuse)
        codec.encode({"t": "0200", "3": "000000", "11": "000001", "41": POS}),  # missing fields
        codec.encode(
            {**codec.network_fields(POS, "1", "1126120000", "301"), "11": "000001", "70": "999"}
        ),
    ],
)
def test_format_errors_answer_30(server: ServerThread, body: bytes) -> None:
    c = RawClient(server.lab, server.port)
    try:
        c.send_raw(codec.frame(body))
        answer = c.recv_frame()
        assert answer is not None
        fields, _ = iso8583.decode(answer, codec.SPEC)
        assert fields["39"] == "30"
    finally:
        c.close()
    with ledger(server.lab) as center:
        assert center.check_balanced()


def test_tls_without_client_cert_or_from_another_ca(server: ServerThread, tmp_path: Path) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(server.lab.root / "ca" / "ca.crt"))
    ctx.check_hostname = False
    for attempt in range(2):
        if attempt == 1:
            other = create_lab(tmp_path / "other")
            base = other.root / "terminals" / POS
            ctx.load_cert_chain(str(base / "tls.crt"), str(base / "tls.key"))
        try:
            c = RawClient(server.lab, server.port, ctx=ctx)
            c.send_raw(
                codec.frame(codec.encode(codec.network_fields(POS, "000001", "1126120000", "301")))
            )
            assert c.recv_frame() is None
            c.close()
        except (ssl.SSLError, ConnectionError):
            pass  # refused during the handshake: as good
    still_serves(server)


def test_idle_client_is_timed_out_and_connections_are_capped(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    idle = RawClient(server.lab, server.port)
    assert idle.recv_frame() is None  # idle_timeout=2 s: the server hangs up
    idle.close()
    wait_for(lambda: "idle client timed out" in caplog.text, 10, "the timeout's log line")
    clients = [RawClient(server.lab, server.port) for _ in range(4)]
    try:
        for c in clients:  # make sure all 4 are being served
            c.call(codec.network_fields(POS, "000001", "1126120000", "301"))
        extra = RawClient(server.lab, server.port)
        extra.send_raw(
            codec.frame(codec.encode(codec.network_fields(POS, "000002", "1126120000", "301")))
        )
        assert extra.recv_frame() is None
        extra.close()
    finally:
        for c in clients:
            c.close()


def test_a_fleet_reconnecting_at_once_is_queued_not_dropped(server: ServerThread) -> None:
    """After a restart every terminal reconnects at once.  While the loop is busy (here:
    blocked), the kernel must finish their TCP handshakes into the listen queue: with a short
    queue (asyncio's default backlog of 100) the rest have their SYNs dropped and wait for
    retransmissions (1, 3, 7 s ...), so terminals time out that a second later would have been
    served.  300 connections, none accepted by the center meanwhile, all connect."""
    import select

    count = 300
    blocked, release = threading.Event(), threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(30)

    server.loop.call_soon_threadsafe(block)
    assert blocked.wait(10)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.port))
            socks.append(s)
        pending = set(socks)
        while pending:  # the kernel completes them at once, or never while the queue is full
            _, writable, _ = select.select([], list(pending), [], 5.0)
            if not writable:
                break
            pending -= set(writable)
        errors = [s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) for s in socks]
        assert not pending, f"{len(pending)} of {count} connections not established"
        assert errors == [0] * count
    finally:
        for s in socks:
            s.close()
        release.set()
    # The center now accepts the 300 and sees each end before its handshake (or closes it at
    # the handshake cap); once all are counted, it serves a new terminal as before.
    taken = server.server
    wait_for(
        lambda: taken.handshakes_failed + taken.handshakes_refused >= count,
        30,
        "the center to take the queued connections",
    )
    still_serves(server)


def test_slow_client_is_timed_out(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    c = RawClient(server.lab, server.port)
    c.send_raw(b"\x00\x40abc")  # a frame that never completes; frame_timeout = 1 s
    assert c.recv_frame() is None
    c.close()
    wait_for(lambda: "slow client timed out" in caplog.text, 10, "the timeout's log line")


# -- group commit --------------------------------------------------------------------------------


def test_concurrent_requests_are_group_committed(server: ServerThread) -> None:
    lab = server.lab
    people = [cardholder(lab, p) for p in ("alice-phone", "bob-phone", "carol-phone")]
    results: list[str] = []

    def run(who: Cardholder, offset: int) -> None:
        host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
        try:
            for i in range(8):
                r = host.authorize(signed(who, TxnType.PURCHASE, 1_00, f"{offset + i:06d}"), 10)
                results.append(r.response_code)
        finally:
            host.close()

    threads = [threading.Thread(target=run, args=(p, 100 * n)) for n, p in enumerate(people)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["00"] * 24
    assert server.server.decided == 24
    assert server.server.batches <= 24
    with ledger(lab) as center:
        assert center.check_balanced()


# -- SIGKILL mid-load ----------------------------------------------------------------------------


def test_sigkill_mid_load_then_restart(lab: Lab) -> None:
    """cli.harness.faults' loop (``swipepay bench faults`` runs it 20 times): load from two
    terminals' TLS hosts, SIGKILL the center mid-load, restart, the hosts retransmit."""
    from swipepay.cli.harness.faults import center_kill_loop

    report = center_kill_loop(lab.root, kills=2, per_round=15, kill_after=5)
    assert report.kills == 2 and report.requests == 60 and report.codes == {"00": 60}
    # each approval seen is stored once; nothing unseen is posted; the ledger balances
    assert report.ok, report
    with ledger(lab) as center:
        assert center.check_balanced()
        assert center.ledger_balance("alice-checking") == 1_500_00 - 30
        assert center.ledger_balance("carol-checking") == 250_00 - 30


# -- signatures checked by the verifier process ---------------------------------------------------


def _tampered(req: AuthRequest) -> AuthRequest:
    assert req.confirmation is not None
    bad = bytes([req.confirmation[0] ^ 0x01]) + req.confirmation[1:]
    return AuthRequest(req.txn, req.pin_block, req.ksn, bad)


def test_signatures_are_checked_ahead_by_the_verifier_process(server: ServerThread) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    try:
        # The first request makes the card's phone key known; the later ones go to the child.
        assert host.authorize(signed(alice, TxnType.PURCHASE, 1_00, "000501"), 10).approved
        bad = host.authorize(_tampered(signed(alice, TxnType.PURCHASE, 1_00, "000502")), 10)
        assert bad.response_code == "63"
        assert host.authorize(signed(alice, TxnType.PURCHASE, 1_00, "000503"), 10).approved
    finally:
        host.close()
    verifier = server.server._verifier
    assert verifier is not None and not verifier.failed
    assert verifier.answered == 2  # the tampered one and the last one


def _purchases_after(
    server: ServerThread, stan0: int, honest: int, fault: Callable[[], None] = lambda: None
) -> tuple[list[str], str]:
    """One approved purchase (the card's phone key becomes known), then ``fault()``, then
    ``honest`` purchases and one with a tampered signature: their response codes."""
    alice = cardholder(server.lab, "alice-phone")
    host = TlsHost.for_lab(server.lab.root, POS, "127.0.0.1", server.port)
    try:
        assert host.authorize(signed(alice, TxnType.PURCHASE, 1_00, f"{stan0:06d}"), 10).approved
        fault()
        codes = [
            host.authorize(
                signed(alice, TxnType.PURCHASE, 1_00, f"{stan0 + 1 + i:06d}"), 10
            ).response_code
            for i in range(honest)
        ]
        forged = _tampered(signed(alice, TxnType.PURCHASE, 1_00, f"{stan0 + 50:06d}"))
        return codes, host.authorize(forged, 10).response_code
    finally:
        host.close()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])  # gone / alive but never answering
def test_verifier_process_gone_or_hung_means_inline_checks(server: ServerThread, how: str) -> None:
    import os
    import signal

    verifier = server.server._verifier
    assert verifier is not None
    try:
        codes, forged = _purchases_after(
            server, 600, 3, lambda: os.kill(verifier.pid, getattr(signal, how))
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(verifier.pid, signal.SIGCONT)
    assert codes == ["00", "00", "00"] and forged == "63"
    assert verifier.failed  # given up (a hung one after one wait): the rest checked inline
    with ledger(server.lab) as center:
        assert center.check_balanced()


def test_without_verifier_process_signatures_are_checked_inline(lab: Lab) -> None:
    server = ServerThread(lab, use_verifier=False)
    try:
        assert server.server._verifier is None
        assert _purchases_after(server, 700, 2) == (["00", "00"], "63")
    finally:
        server.stop()
