"""The virtual card's socket loop against a fake vpcd server in the test (the framing itself is
tested in tests/firmware_sim/test_framing.py)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from swipepay.drivers.registry import open_phone_server
from swipepay.drivers.vpcd import (
    HCE_PHONE_ATR,
    VirtualCard,
    VpcdClient,
    VpcdPhoneServer,
    pcsc_contactless_atr,
    slot_address,
)
from swipepay.firmware_sim.errors import ConfigError, TransportError
from swipepay.firmware_sim.framing import FrameDecoder
from swipepay.firmware_sim.framing import encode as encode_frame
from tests.support.waiting import eventually


class FakeVpcd:
    """vpcd's side: a listening socket on a free port, one accepted card at a time."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.server.settimeout(5)
        self.conn: socket.socket | None = None
        self.decoder = FrameDecoder()

    def accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)

    def send(self, payload: bytes, split: bool = False) -> None:
        assert self.conn is not None
        frame = encode_frame(payload)
        if split:  # what Debian's vpcd does: length and payload in two writes
            self.conn.sendall(frame[:2])
            self.conn.sendall(frame[2:])
        else:
            self.conn.sendall(frame)

    def receive(self) -> bytes:
        assert self.conn is not None
        while True:
            frames = self.decoder.feed(self.conn.recv(4096))
            if frames:
                assert len(frames) == 1
                return frames[0]

    def exchange(self, payload: bytes) -> bytes:
        self.send(payload, split=True)
        return self.receive()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


def test_virtual_card_controls_and_apdus() -> None:
    resets: list[str] = []
    card = VirtualCard(
        lambda apdu: apdu[::-1] + b"\x90\x00", b"\x3b\x00", lambda: resets.append("x")
    )
    assert card.respond(b"\x04") == b"\x3b\x00"
    assert card.respond(b"\x01") is None and card.powered
    assert card.respond(b"\x02") is None
    assert card.respond(b"\x00") is None and not card.powered
    assert resets == ["x", "x", "x"]
    assert card.respond(b"\x09") is None  # unknown control byte: ignored
    assert card.respond(b"") is None
    assert card.respond(b"\x00\xa4") == b"\xa4\x00\x90\x00"


def test_virtual_card_survives_a_broken_handler() -> None:
    def broken(apdu: bytes) -> bytes:
        raise ValueError("bug")

    assert VirtualCard(broken, b"\x3b\x00").respond(b"\x00\xa4\x04\x00") == b"\x6f\x00"


def test_virtual_card_rejects_bad_atr() -> None:
    with pytest.raises(ConfigError):
        VirtualCard(lambda a: a, b"\x3b")


def test_contactless_atr_checksum() -> None:
    assert bytes.fromhex("3B80800101") == HCE_PHONE_ATR
    atr = pcsc_contactless_atr(b"\x11\x22")
    check = 0
    for byte in atr[1:]:
        check ^= byte
    assert check == 0 and atr[:4] == bytes.fromhex("3B828001")


def test_client_serves_over_tcp(vpcd: FakeVpcd) -> None:
    powered_off = threading.Event()
    card = VirtualCard(lambda apdu: b"\x90\x00", b"\x3b\x00", powered_off.set)
    client = VpcdClient(card, "127.0.0.1", vpcd.port)
    client.insert()
    vpcd.accept()
    try:
        assert vpcd.exchange(b"\x04") == b"\x3b\x00"
        vpcd.send(b"\x01")  # power on: no reply expected
        assert vpcd.exchange(b"\x00\xa4\x04\x00\x00") == b"\x90\x00"
        assert vpcd.exchange(bytes(300)) == b"\x90\x00"  # long APDU arrives whole
        assert card.apdus == 2
    finally:
        client.remove()
    assert powered_off.is_set()
    assert vpcd.conn is not None and vpcd.conn.recv(10) == b""  # vpcd sees the card removed


def test_client_reports_vpcd_gone(vpcd: FakeVpcd) -> None:
    client = VpcdClient(VirtualCard(lambda a: b"\x90\x00", b"\x3b\x00"), "127.0.0.1", vpcd.port)
    client.connect()
    vpcd.accept()
    assert vpcd.conn is not None
    vpcd.conn.close()
    with pytest.raises(TransportError, match="closed the connection"):
        client.serve(threading.Event())


def test_client_reconnects_when_vpcd_comes_back(vpcd: FakeVpcd) -> None:
    stop = threading.Event()
    client = VpcdClient(VirtualCard(lambda a: b"\x90\x00", b"\x3b\x01"), "127.0.0.1", vpcd.port)
    thread = threading.Thread(
        target=client.serve, args=(stop,), kwargs={"reconnect": True, "retry": 0.05}
    )
    thread.start()
    try:
        vpcd.accept()
        assert vpcd.exchange(b"\x04") == b"\x3b\x01"
        assert vpcd.conn is not None
        vpcd.conn.close()
        vpcd.decoder = FrameDecoder()
        vpcd.accept()  # the card connects again by itself
        assert vpcd.exchange(b"\x04") == b"\x3b\x01"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_half_a_frame_takes_the_card_out_and_back(vpcd: FakeVpcd) -> None:
    """A stream stuck inside a frame is broken: the card leaves (power off) and reconnects."""
    stop = threading.Event()
    powered_off = threading.Event()
    card = VirtualCard(lambda a: b"\x90\x00", b"\x3b\x01", powered_off.set)
    client = VpcdClient(card, "127.0.0.1", vpcd.port)
    client.frame_timeout = 0.3
    thread = threading.Thread(
        target=client.serve, args=(stop,), kwargs={"reconnect": True, "retry": 0.05}
    )
    thread.start()
    try:
        vpcd.accept()
        assert vpcd.conn is not None
        vpcd.conn.sendall(b"\x00\x05\x00")  # 1 of 5 payload bytes, then nothing
        first = vpcd.conn
        vpcd.accept()  # the card gave up on that stream and connected again
        assert first.recv(10) == b""
        first.close()
        assert powered_off.is_set()
        assert vpcd.exchange(b"\x04") == b"\x3b\x01"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_serving_while_vpcd_is_unreachable_says_so_once_then_when_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: `card serve` on a wrong port or without pcscd retried silently for ever.
    caplog.set_level(logging.WARNING, logger="swipepay.drivers.vpcd")
    stop = threading.Event()
    with socket.socket() as slot:
        slot.bind(("127.0.0.1", 0))  # bound, not listening yet: connections are refused
        port = slot.getsockname()[1]
        client = VpcdClient(VirtualCard(lambda a: a, b"\x3b\x02"), "127.0.0.1", port)
        attempts: list[None] = []
        connect = client.connect

        def counted(timeout: float = 2.0) -> None:
            attempts.append(None)
            connect(timeout)

        client.connect = counted  # type: ignore[method-assign]
        thread = threading.Thread(
            target=client.serve, args=(stop,), kwargs={"reconnect": True, "retry": 0.01}
        )
        thread.start()
        try:
            eventually(lambda: len(attempts) >= 5)
            slot.listen()
            conn, _ = slot.accept()
            with conn:
                conn.settimeout(5)
                conn.sendall(encode_frame(b"\x04"))
                assert conn.recv(16) == encode_frame(b"\x3b\x02")
        finally:
            stop.set()
            thread.join(5)
    assert not thread.is_alive()
    said = [r.getMessage() for r in caplog.records if r.name == "swipepay.drivers.vpcd"]
    assert len([m for m in said if "cannot reach vpcd" in m]) == 1, said
    assert any("trying again every 0.01 s" in m for m in said)
    assert any("reached; the card is in the slot" in m for m in said)


def test_unreachable_vpcd_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connection refused
        client = VpcdClient(VirtualCard(lambda a: a, b"\x3b\x00"), "127.0.0.1", port)
        with pytest.raises(TransportError, match="cannot reach vpcd"):
            client.connect()


def test_slot_address() -> None:
    assert slot_address("") == ("127.0.0.1", 35963)
    assert slot_address("localhost:35964") == ("localhost", 35964)
    assert slot_address("//10.0.0.2") == ("10.0.0.2", 35963)
    assert slot_address("[::1]:35964?x=1") == ("::1", 35964)
    for bad in ("host:0", "host:99999", "host:x"):
        with pytest.raises(ConfigError, match="a vpcd slot must be"):
            slot_address(bad)


def test_phone_server_from_registry() -> None:
    server = open_phone_server("vpcd:127.0.0.1:35964")
    assert isinstance(server, VpcdPhoneServer)
    assert (server.host, server.port) == ("127.0.0.1", 35964)


def test_phone_server_serves_once_and_deactivates(vpcd: FakeVpcd) -> None:
    class Phone:
        deactivated = 0

        def process(self, apdu: bytes) -> bytes:
            return b"\x90\x00"

        def deactivate(self) -> None:
            self.deactivated += 1

    phone = Phone()
    server = VpcdPhoneServer("vpcd:", "127.0.0.1", vpcd.port)
    thread = threading.Thread(target=server.serve, args=(phone,), kwargs={"once": True})
    thread.start()
    vpcd.accept()
    assert vpcd.exchange(b"\x04") == HCE_PHONE_ATR
    vpcd.send(b"\x01")
    assert vpcd.exchange(b"\x00\xa4\x04\x00\x07\xf0SWPAY\x01\x00") == b"\x90\x00"
    vpcd.send(b"\x00")  # the terminal switched the field off: the session is over
    thread.join(5)
    assert not thread.is_alive()
    assert phone.deactivated >= 2
