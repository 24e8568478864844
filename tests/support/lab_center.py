"""A lab's center for tests: the lab's cardholders signing requests, its ledger, the TLS
server on an event-loop thread (fixture ``server``), and a raw ISO 8583 client built from the
socket, ssl and pyiso8583 modules only."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import iso8583
import pytest

from swipepay.center.core import Center, request_hash
from swipepay.center.lab import Lab
from swipepay.center.server import CenterServer, ServerLimits, lab_server
from swipepay.drivers.host_tls import client_context
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest
from swipepay.firmware_sim.transaction import Transaction, TxnType
from tests.support.world import Phone as SigningPhone


def batch_jobs(reqs: list[codec.Request]) -> list[Any]:
    """``reqs`` as the jobs :meth:`CenterServer._decide` takes, for tests that decide a batch
    without the wire: (request, (content hash, decoded fields), no ahead check, its answer);
    an authorization's content hash is :func:`~center.core.request_hash` (no wire form).  Call
    inside the event loop that decides them."""
    loop = asyncio.get_running_loop()
    return [
        (r, (request_hash(r) if isinstance(r, AuthRequest) else b"", {}), None,
         loop.create_future())
        for r in reqs
    ]  # fmt: skip


POS, ATM = "POS00001", "ATM00001"
MERCHANT, BANK = "MERCH0000000001", "BANKATM00000001"


@dataclass
class Cardholder:
    pan: str
    expiry: str
    account: str
    phone: SigningPhone


def cardholder(lab: Lab, phone_name: str) -> Cardholder:
    profile = lab.phone_profile(phone_name)
    card = lab.cards()[profile.card]
    signer = SigningPhone(profile.identity().signing_key, profile.dukpt(), lab.pins()[profile.card])
    return Cardholder(card.pan, card.expiry, lab.card_account(profile.card), signer)


def txn(who: Cardholder, type_: TxnType, amount: int, stan: str, **kw: Any) -> Transaction:
    atm = type_ in (TxnType.WITHDRAWAL, TxnType.DEPOSIT, TxnType.BALANCE)
    values: dict[str, Any] = {
        "type": type_,
        "amount": amount,
        "pan": who.pan,
        "expiry": who.expiry,
        "terminal_id": ATM if atm else POS,
        "merchant_id": BANK if atm else MERCHANT,
        "stan": stan,
        "transmitted_at": "1126120000",
    }
    values.update(kw)
    return Transaction(**values)


def signed(who: Cardholder, type_: TxnType, amount: int, stan: str, **kw: Any) -> AuthRequest:
    return who.phone.request(txn(who, type_, amount, stan, **kw))


class ServerThread:
    """A CenterServer on its own event loop thread (the test stays synchronous)."""

    def __init__(
        self, lab: Lab, limits: ServerLimits | None = None, *, use_verifier: bool = True
    ) -> None:
        self.lab = lab
        self.server: CenterServer = lab_server(lab.root, limits, use_verifier=use_verifier)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server(lab: Lab) -> Iterator[ServerThread]:
    s = ServerThread(lab, ServerLimits(idle_timeout=2.0, frame_timeout=1.0, max_connections=4))
    yield s
    s.stop()


class RawClient:
    """A client built from the socket, ssl and pyiso8583 modules only."""

    def __init__(self, lab: Lab, port: int, terminal: str = POS, ctx: ssl.SSLContext | None = None):
        if ctx is None:
            base = lab.root / "terminals" / terminal
            ctx = client_context(lab.root / "ca" / "ca.crt", base / "tls.crt", base / "tls.key")
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = ctx.wrap_socket(raw)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> bytes | None:
        head = self._recv_exact(2)
        if head is None:
            return None
        return self._recv_exact(int.from_bytes(head, "big"))

    def _recv_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except (ConnectionError, ssl.SSLError):
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def call(self, fields: dict[str, Any]) -> dict[str, Any]:
        body, _ = iso8583.encode(dict(fields), codec.SPEC)
        self.send_raw(len(body).to_bytes(2, "big") + bytes(body))
        answer = self.recv_frame()
        assert answer is not None, "connection closed"
        decoded, _ = iso8583.decode(answer, codec.SPEC)
        return dict(decoded)

    def close(self) -> None:
        self.sock.close()


def ledger(lab: Lab) -> Center:
    return Center.open(lab.db_path, lab.center_keys())


def still_serves(server: ServerThread) -> None:
    """The server still answers a network echo from a fresh client."""
    c = RawClient(server.lab, server.port)
    try:
        assert c.call(codec.network_fields(POS, "000009", "1126120000", "001"))["39"] == "00"
    finally:
        c.close()
