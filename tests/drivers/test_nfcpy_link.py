"""The nfcpy drivers over nfcpy's own ``udp:`` simulator on 127.0.0.1 (no hardware).

The card side (phone or virtual EMV card) listens in a thread; the reader side (terminal or
card reader) connects in the test's thread.  Every server thread is stopped and joined, and
every nfcpy frontend closed, at the end of each test.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import create_lab
from swipepay.center.local_host import LocalHost
from swipepay.drivers.base import DriverContext
from swipepay.drivers.nfcpy_cards import NfcpyCardServer
from swipepay.drivers.nfcpy_link import (
    RANDOM_UID_PREFIX,
    SEL_RES_ISO_DEP,
    SENS_RES,
    CardEmulator,
    NfcpyCardReader,
    NfcpyPhoneLink,
    NfcpyPhoneServer,
    load_nfc,
    nfcpy_path,
)
from swipepay.drivers.registry import open_card_reader, open_phone_link, open_phone_server
from swipepay.drivers.runner import run_transaction
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError
from swipepay.firmware_sim.isodep import CardParams
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PhoneApplet, ResultShown, State
from swipepay.firmware_sim.phonelink.protocol import ConfirmationStatus
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.terminal import Order, Terminal
from swipepay.firmware_sim.transaction import TxnType
from tests.support.phonelink import NOW, PAN, make_pair, txn
from tests.support.waiting import eventually

if not os.environ.get("CI"):
    pytest.importorskip("nfc")  # in CI a missing nfcpy must fail, not skip

WAIT = 10.0


@pytest.fixture
def udp_path() -> str:
    """A port free on 127.0.0.1 right now (the emulator binds it; nothing else on the host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"udp:127.0.0.1:{port}"


def bound(emulator: CardEmulator) -> bool:
    """Whether the card side has bound its udp port (a reader polling before that loses its
    first SENS_REQ and waits nfcpy's 1 s sense timeout)."""
    clf = emulator._clf
    sock = None if clf is None else clf.device.socket
    try:
        return sock is not None and sock.getsockname()[1] == clf.device.addr[1]
    except OSError:  # the card thread closed it meanwhile (nfcpy's first socket is never bound)
        return False


@contextmanager
def serving(
    serve: Callable[[threading.Event], None],
    close: Callable[[], None],
    emulator: CardEmulator | None = None,
) -> Iterator[None]:
    """Run ``serve(stop)`` in a thread, wait until ``emulator`` listens (when given), stop, join
    and close it whatever the test did."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(stop)
        except BaseException as exc:  # reported in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name="nfcpy-card-side", daemon=True)
    thread.start()
    try:
        if emulator is not None:
            eventually(lambda: bound(emulator) or not thread.is_alive())
        yield
    finally:
        stop.set()
        thread.join(WAIT)
        close()
        # The card side's failure explains the reader's (a reader that never found the card
        # only says "no ISO-DEP device"): raise it even when the body failed; Python chains the
        # reader's exception to it.
        if errors:
            raise errors[0]
        assert not thread.is_alive(), "the card side did not stop"


# -- the phone link ------------------------------------------------------------------------


def test_phone_link_session_over_udp(udp_path: str) -> None:
    pair = make_pair()
    user = ScriptedUser(Choice.CONFIRM, lambda: "4321")
    phone = Phone(pair.applet, user, lambda: float(NOW))
    server = open_phone_server(f"nfcpy:{udp_path}")
    assert isinstance(server, NfcpyPhoneServer)
    link = open_phone_link(f"nfcpy:{udp_path}")
    assert isinstance(link, NfcpyPhoneLink)
    with serving(lambda stop: server.serve(phone, stop), server.close, server.emulator):
        link.connect(WAIT)
        # nfcpy's listener would bind 0.0.0.0; ours stays on loopback.
        port = int(udp_path.rsplit(":", 1)[1])
        assert server.emulator._clf.device.socket.getsockname() == ("127.0.0.1", port)
        t = pair.link
        t.handle_select(link.transmit(t.select_command().apdu))
        t.handle_connect(link.transmit(t.connect_command(PAN.encode()).apdu))
        t.handle_authenticate(link.transmit(t.authenticate_command().apdu))
        t.handle_payment_request(link.transmit(t.payment_request_command(txn()).apdu))
        answer = t.handle_confirmation(link.transmit(t.confirmation_command().apdu))
        assert answer.status is ConfirmationStatus.APPROVED
        t.handle_result(link.transmit(t.result_command("00", "123456").apdu))
        link.disconnect()  # S(DESELECT): the phone ends its session at once
        eventually(lambda: server.emulator.sessions == 1)
    assert user.results == [ResultShown("00", "123456")]
    assert pair.applet.state is State.IDLE


def test_whole_transaction_over_udp_is_approved(udp_path: str, tmp_path: Path) -> None:
    lab = create_lab(tmp_path / "lab")
    center = Center.open(lab.db_path, lab.center_keys())
    profile = lab.phone_profile("alice-phone")
    user = ScriptedUser(Choice.CONFIRM, lambda: lab.pins()[profile.card])
    phone = Phone(PhoneApplet(profile.identity(), profile.dukpt()), user, time.time)
    server = NfcpyPhoneServer.from_url(f"nfcpy:{udp_path}")
    cert, key = lab.terminal_link_identity("POS00001")
    terminal = Terminal(lab.terminal_config("POS00001"), TerminalLink(cert, key))
    reader = open_card_reader("mock:alice-visa", DriverContext(cards=lab.cards(), amount=12_34))
    link = open_phone_link(f"nfcpy:{udp_path}")
    try:
        with serving(lambda stop: server.serve(phone, stop), server.close, server.emulator):
            report = run_transaction(
                terminal,
                Order(TxnType.PURCHASE, 12_34),
                reader=reader,
                link=link,
                host=LocalHost(center),
                phone_timeout=WAIT,
                sleep=lambda s: None,
            )
            eventually(lambda: server.emulator.sessions == 1)
    finally:
        link.disconnect()
        center.close()
    assert report.outcome.approved, report.outcome.message
    assert user.results and user.results[0].response_code == "00"
    per_apdu = sum(e.ms for e in report.exchanges) / report.apdu_count
    print(f"\nnfcpy udp: {report.apdu_count} APDUs, {per_apdu:.2f} ms per APDU round trip")


def test_phone_leaving_mid_session_is_a_transport_error(udp_path: str) -> None:
    pair = make_pair()
    phone = Phone(pair.applet, ScriptedUser(), lambda: float(NOW))
    server = NfcpyPhoneServer.from_url(f"nfcpy:{udp_path}")
    link = NfcpyPhoneLink.from_url(f"nfcpy:{udp_path}")
    try:
        with serving(
            lambda stop: server.serve(phone, stop, once=True), server.close, server.emulator
        ):
            link.connect(WAIT)
            pair.link.handle_select(link.transmit(pair.link.select_command().apdu))
            assert pair.applet.state is State.SELECTED
        # The phone's thread has stopped and its device is closed: it left the field.
        assert pair.applet.state is State.IDLE
        with pytest.raises(TransportError):
            link.transmit(pair.link.select_command().apdu)
        with pytest.raises(TransportError):
            link.transmit(pair.link.select_command().apdu)  # stays gone, no hang
    finally:
        link.disconnect()


def test_reader_leaving_deactivates_the_phone(udp_path: str) -> None:
    pair = make_pair()
    phone = Phone(pair.applet, ScriptedUser(), lambda: float(NOW))
    server = NfcpyPhoneServer(f"nfcpy:{udp_path}", udp_path, idle_timeout=WAIT)
    link = NfcpyPhoneLink.from_url(f"nfcpy:{udp_path}")
    with serving(lambda stop: server.serve(phone, stop), server.close, server.emulator):
        link.connect(WAIT)
        pair.link.handle_select(link.transmit(pair.link.select_command().apdu))
        clf, link._clf, link._tag = link._clf, None, None
        clf.close()  # RF off without S(DESELECT)
        eventually(lambda: server.emulator.sessions == 1)
        assert pair.applet.state is State.IDLE


def echo_handler(calls: list[bytes]) -> Callable[[bytes], bytes]:
    """INS 02: the data twice (long answers); INS 01: slow (forces S(WTX))."""

    def handle(apdu: bytes) -> bytes:
        calls.append(apdu)
        if apdu[1] == 0x01:
            time.sleep(0.3)  # > FWT/2 (39 ms) several times over
        data = apdu[5 : 5 + apdu[4]] if len(apdu) > 5 else b""
        return data * 2 + b"\x90\x00"

    return handle


def test_long_apdus_chain_both_ways_and_slow_applets_get_wtx(udp_path: str) -> None:
    calls: list[bytes] = []
    emulator = CardEmulator(f"nfcpy:{udp_path}", udp_path)
    link = NfcpyPhoneLink.from_url(f"nfcpy:{udp_path}")
    serve = lambda stop: emulator.serve_handler(echo_handler(calls), lambda: None, stop)  # noqa: E731
    with serving(serve, emulator.close, emulator):
        link.connect(WAIT)
        data = bytes(range(255))
        command = b"\x80\x02\x00\x00\xff" + data + b"\x00"  # 261 bytes: two I-blocks (FSC 256)
        assert link.transmit(command) == data * 2 + b"\x90\x00"  # 512 bytes: three I-blocks
        assert link.transmit(b"\x80\x01\x00\x00\x02\xab\xcd") == b"\xab\xcd\xab\xcd\x90\x00"
        link.disconnect()
    assert [c[1] for c in calls] == [0x02, 0x01]  # each command reached the applet once


def test_a_card_listening_in_short_windows_is_still_activated(udp_path: str) -> None:
    """nfcpy's reader against a card that re-listens every 2 ms: activations and APDUs go
    through however the reader's frames fall against window ends (the step-by-step case is
    ``test_a_card_keeps_its_uid_and_socket_across_listen_windows``)."""
    calls: list[bytes] = []
    emulator = CardEmulator(f"nfcpy:{udp_path}", udp_path, listen_window=0.002)
    link = NfcpyPhoneLink.from_url(f"nfcpy:{udp_path}")
    serve = lambda stop: emulator.serve_handler(echo_handler(calls), lambda: None, stop)  # noqa: E731
    with serving(serve, emulator.close, emulator):
        for _ in range(3):
            link.connect(WAIT)
            assert link.transmit(b"\x80\x02\x00\x00\x01\x5a") == b"\x5a\x5a\x90\x00"
            link.disconnect()
            eventually(lambda: emulator.sessions == len(calls))
    assert len(calls) == 3


def test_a_card_keeps_its_uid_and_socket_across_listen_windows(udp_path: str) -> None:
    """nfcpy's ``listen()`` ends its window after the first frame that arrives past it.  A reader
    whose every activation frame comes after the card's window (5 ms apart, windows of 2 ms)
    still activates one card: SENS, SDD, SEL and RATS answered with one UID, on one socket
    (nfcpy alone gives a new UID and socket per window: the SEL_REQ then names a UID the card
    no longer has, and is not answered)."""
    emulator = CardEmulator(f"nfcpy:{udp_path}", udp_path, listen_window=0.002)
    serve = lambda stop: emulator.serve_handler(echo_handler([]), lambda: None, stop)  # noqa: E731
    _, host, port = udp_path.split(":")
    with (
        serving(serve, emulator.close, emulator),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as reader,
    ):
        reader.settimeout(WAIT)
        listening = emulator._clf.device.socket

        def exchange(frame: bytes) -> bytes:
            time.sleep(0.005)  # the condition under test: past the card's 2 ms window
            reader.sendto(b"106A " + frame.hex().encode(), (host, int(port)))
            data, _ = reader.recvfrom(1024)
            return bytes.fromhex(data.split()[1].decode())

        assert exchange(b"\x26") == SENS_RES
        sdd_res = exchange(b"\x93\x20")  # UID and its check byte
        assert sdd_res[0:1] == RANDOM_UID_PREFIX
        assert exchange(b"\x93\x70" + sdd_res) == bytes([SEL_RES_ISO_DEP])
        assert exchange(b"\xe0\x80") == CardParams().ats()
        assert emulator._clf.device.socket is listening


def test_a_port_another_card_serves_is_a_configuration_error(udp_path: str) -> None:
    first = CardEmulator(f"nfcpy:{udp_path}", udp_path)
    second = CardEmulator(f"nfcpy:{udp_path}", udp_path)
    serve = lambda stop: first.serve_handler(echo_handler([]), lambda: None, stop)  # noqa: E731
    with serving(serve, first.close, first):
        try:
            with pytest.raises(ConfigError, match="already served"):
                second.serve_handler(echo_handler([]), lambda: None, threading.Event())
        finally:
            second.close()


def test_contactless_emv_read_over_udp(udp_path: str, tmp_path: Path) -> None:
    lab = create_lab(tmp_path / "lab")
    cards = lab.cards()
    reader = open_card_reader(f"nfcpy:{udp_path}")
    assert isinstance(reader, NfcpyCardReader)
    reader.targets = ["106A"]
    for name in ("alice-visa", "carol-qvsdc"):
        server = NfcpyCardServer.from_url(f"nfcpy:{udp_path}")
        card = cards[name]
        with serving(partial(server.serve, card), server.close, server.emulator):
            data = reader.read_card(WAIT)
        assert data.pan == card.pan


def test_no_phone_in_the_field_times_out(udp_path: str) -> None:
    link = NfcpyPhoneLink.from_url(f"nfcpy:{udp_path}")
    with pytest.raises(LinkTimeout):
        link.connect(0.2)
    link.disconnect()


@pytest.mark.parametrize(
    "url", ["nfcpy:udp:127.0.0.1:abc", "nfcpy:udp:127.0.0.1:٨٠", "nfcpy:udp:127.0.0.1:0",
            "nfcpy:udp:127.0.0.1:65536", "nfcpy:udp:a:1:2"],
)  # fmt: skip
def test_an_udp_path_nfcpy_cannot_read_is_a_configuration_error(url: str) -> None:
    # Before: nfcpy's int() of the port raised a bare ValueError (a traceback from `terminal
    # run --card`), or took "٨٠" as 80; port 0 or 65536 failed later as "no device".
    with pytest.raises(ConfigError, match="udp:HOST:PORT with a port 1 to 65535"):
        NfcpyCardReader.from_url(url)
    assert nfcpy_path("nfcpy:udp:127.0.0.1:54321") == "udp:127.0.0.1:54321"
    assert nfcpy_path("nfcpy:udp") == "udp"


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="nfcpy:udp:"):
        nfcpy_path("nfcpy:")
    with pytest.raises(TransportError):
        NfcpyPhoneLink.from_url("nfcpy:udp:127.0.0.1:1").transmit(b"\x00\xa4\x04\x00")
    monkeypatch.setitem(sys.modules, "nfc", None)
    with pytest.raises(ConfigError, match=r"pip install swipepay\[nfc\]"):
        load_nfc()


def test_a_silent_reader_holds_the_phone_only_until_the_idle_timeout(udp_path: str) -> None:
    """A reader that activates the phone and then says nothing is dropped after
    ``idle_timeout``; the next reader is then served (RF frames come whole, so there is no
    half frame to wait for on this link)."""
    pair = make_pair()
    phone = Phone(pair.applet, ScriptedUser(), lambda: float(NOW))
    server = NfcpyPhoneServer(f"nfcpy:{udp_path}", udp_path, idle_timeout=0.5)
    silent = NfcpyPhoneLink.from_url(f"nfcpy:{udp_path}")
    second = NfcpyPhoneLink.from_url(f"nfcpy:{udp_path}")
    with serving(lambda stop: server.serve(phone, stop), server.close, server.emulator):
        try:
            silent.connect(WAIT)
            second.connect(WAIT)
            answer = second.transmit(pair.link.select_command().apdu)
        finally:
            second.disconnect()
            silent.disconnect()
    assert answer[-2:] == b"\x90\x00"
    assert server.emulator.sessions >= 1


def test_a_reader_polling_again_ends_the_cards_session() -> None:
    """A SENS_REQ or ALL_REQ arriving in a session means the reader reset its field (its RF-off
    datagram may be lost): the session ends at once, it does not wait out the idle timeout
    while the reader polls in vain.  Any other frame is handed on."""
    from swipepay.drivers.nfcpy_link import FIELD_RESET_FRAMES

    class Frames:
        def __init__(self, frame: bytes) -> None:
            self.frame = frame

        def exchange(self, data: object, timeout: float) -> bytearray:
            return bytearray(self.frame)

    emulator = CardEmulator("nfcpy:udp:127.0.0.1:1", "udp:127.0.0.1:1", idle_timeout=30.0)
    stop = threading.Event()
    for poll in sorted(FIELD_RESET_FRAMES):
        assert emulator._next_frame(Frames(poll), None, stop, 30.0) is None
    i_block = b"\x02\x00\xa4\x04\x00"
    assert emulator._next_frame(Frames(i_block), None, stop, 30.0) == i_block
