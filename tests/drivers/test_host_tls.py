"""TlsHost: persistent mutual-TLS client, timeouts, and the reversal queue on disk."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from swipepay.center.lab import Lab
from swipepay.drivers.host_tls import ReversalQueue, TlsHost
from swipepay.firmware_sim.errors import LinkTimeout
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.transaction import TxnType
from tests.support.lab_center import POS, RawClient, ServerThread, cardholder, ledger, signed
from tests.support.silent_center import SilentCenter
from tests.support.world import Stans


def test_timeout_queues_a_reversal_that_survives_a_restart(
    lab: Lab,
    silent: SilentCenter,
    tmp_path: Path,
) -> None:
    alice = cardholder(lab, "alice-phone")
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", silent.port, reversal_timeout=0.2)
    req = signed(alice, TxnType.PURCHASE, 5_00, "000001")
    with pytest.raises(LinkTimeout):
        host.authorize(req, 0.3)
    assert len(host.queue.pending()) == 1
    host.close()
    assert silent.received > 0
    # The terminal restarts: the reversal is still there, as a decodable 0400.
    again = TlsHost.for_lab(lab.root, POS, "127.0.0.1", silent.port)
    [(_, body)] = again.queue.pending()
    fields = codec.decode(body)
    assert fields["t"] == "0400" and fields["90"][4:10] == "000001"
    again.close()


def test_pending_reversal_is_sent_first_on_the_next_connection(
    server: ServerThread,
) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    stan = Stans()
    # The center approved a purchase, but (as far as the terminal knows) the answer was lost.
    lost = signed(alice, TxnType.PURCHASE, 7_00, stan())
    raw = RawClient(lab, server.port)
    assert raw.call(codec.request_fields(lost))["39"] == "00"
    raw.close()
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    host.queue_reversal(lost.txn)
    host.close()
    # After a restart, the first connection carries the reversal before the next purchase.
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    try:
        assert len(host.queue.pending()) == 1
        r = host.authorize(signed(alice, TxnType.PURCHASE, 1_00, stan()), 5)
        assert r.approved
        with ledger(lab) as center:  # the reversal went first: only the new purchase is booked
            assert center.ledger_balance(alice.account) == 1_500_00 - 1_00
        assert host.queue.pending(host._owner) == []  # only the new purchase's, still armed
    finally:
        host.close()
    with ledger(lab) as center:
        assert center.check_balanced()


def test_unreachable_center_is_a_link_timeout(lab: Lab) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # nothing listens here once closed
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", port, reversal_timeout=0.1)
    try:
        with pytest.raises(LinkTimeout):
            host.echo(POS, "000001", "1126120000", timeout=0.3)
    finally:
        host.close()


def test_reconnects_after_the_server_drops_the_connection(
    server: ServerThread,
) -> None:
    host = TlsHost.for_lab(server.lab.root, POS, "127.0.0.1", server.port)
    try:
        assert host.echo(POS, "000001", "1126120000").approved
        assert host._sock is not None
        host._sock.close()  # as if the link broke under us
        assert host.echo(POS, "000002", "1126120000").approved
    finally:
        host.close()


def test_write_ahead_reversal_lives_until_settle_and_goes_on_a_decline(
    server: ServerThread,
) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    stan = Stans()
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    try:
        approved = signed(alice, TxnType.PURCHASE, 2_00, stan())
        assert host.authorize(approved, 5).approved
        # Armed on disk, but not this process's to send: it is still finishing the transaction.
        assert (
            host.queue.armed(
                host._owner,
                "/".join(
                    (approved.txn.terminal_id, approved.txn.stan, approved.txn.transmitted_at)
                ),
            )
            is not None
        )
        assert host.queue.pending(host._owner) == []
        host._drop()  # a reconnect in the middle of the transaction must not reverse it
        assert host.echo(POS, stan(), "1126120000").approved
        host.settle(approved.txn)
        assert host.queue.pending(owner="someone else") == []
        declined = signed(alice, TxnType.PURCHASE, 9_999_00, stan())
        assert host.authorize(declined, 5).response_code == "51"
        assert host.queue.pending(owner="someone else") == []
    finally:
        host.close()
    with ledger(lab) as center:
        assert center.ledger_balance(alice.account) == 1_500_00 - 2_00


def test_unsettled_approval_of_a_dead_terminal_is_reversed_by_the_next_one(
    server: ServerThread,
) -> None:
    lab = server.lab
    alice = cardholder(lab, "alice-phone")
    stan = Stans()
    dead = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    dead._owner = (
        "a process that was killed"  # another process's token (hosts share one per process)
    )
    assert dead.authorize(signed(alice, TxnType.PURCHASE, 3_00, stan()), 5).approved
    dead.close()  # the process died before it finished the transaction: never settled
    with ledger(lab) as center:
        assert center.ledger_balance(alice.account) == 1_500_00 - 3_00
    restarted = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    try:
        assert len(restarted.queue.pending(restarted._owner)) == 1
        assert restarted.echo(POS, stan(), "1126120000").approved  # connect: orphans go first
        assert restarted.queue.pending(owner=None) == []
    finally:
        restarted.close()
    with ledger(lab) as center:
        assert center.ledger_balance(alice.account) == 1_500_00
        assert center.check_balanced()


def test_hosts_opening_a_fresh_reversal_queue_at_once_all_succeed(tmp_path: Path) -> None:
    """Two load threads of one terminal once got "database is locked" switching it to WAL."""
    errors: list[BaseException] = []
    for n in range(40):
        path = tmp_path / f"q{n}" / "reversals.db"
        barrier = threading.Barrier(3)

        def open_queue(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(10)
            try:
                ReversalQueue(path).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_queue) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []


class _ForgetfulCenter(SilentCenter):
    """Reads the first request and closes without an answer (its commit's outcome unknown);
    answers every later frame with ``code`` (its database is down)."""

    def __init__(self, lab: Lab, code: str) -> None:
        self.code = code
        self.connections = 0
        super().__init__(lab)

    def _drain(self, raw: socket.socket) -> None:
        self.connections += 1
        first = self.connections == 1
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
            decoder = codec.FrameDecoder()
            while data := conn.recv(4096):
                for body in decoder.feed(data):
                    if first:
                        conn.close()
                        return
                    fields = codec.decode(body)
                    resp = codec.AuthResponse(self.code, message="database unavailable")
                    conn.sendall(codec.frame(codec.encode(codec.response_fields(fields, resp))))
        except (OSError, ValueError):
            pass


@pytest.mark.parametrize("code", ["91", "96"])
def test_an_undecided_answer_to_a_resent_request_keeps_its_reversal(lab: Lab, code: str) -> None:
    """The first copy went out and its connection broke; the copy sent again was answered
    91/96 (the center could not decide, so it could not look up the first copy's answer
    either): the first may have been approved, so its reversal stays queued."""
    center = _ForgetfulCenter(lab, code)
    alice = cardholder(lab, "alice-phone")
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", center.port, reversal_timeout=0.5)
    try:
        req = signed(alice, TxnType.PURCHASE, 2_00, "000777")
        assert host.authorize(req, 5).response_code == code
        assert center.connections >= 2
        assert len(host.queue.pending(host._owner)) == 1
    finally:
        host.close()
        center.close()


def test_an_undecided_answer_to_a_first_copy_drops_its_reversal(lab: Lab) -> None:
    """Answered 91 the first time: nothing of it can have been approved."""
    center = _ForgetfulCenter(lab, "91")
    center.connections = 1  # skip the forgetful first connection
    alice = cardholder(lab, "alice-phone")
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", center.port)
    try:
        assert (
            host.authorize(signed(alice, TxnType.PURCHASE, 2_00, "000778"), 5).response_code == "91"
        )
        assert host.queue.pending(host._owner) == []
    finally:
        host.close()
        center.close()
