"""``vpcd-listen:`` — the phone program behind a relay app that connects to it (ACardEmulator).

A raw vpcd-protocol client plays the app here; tests/cli/test_hce_relay.py puts the full
stand-in (tests/support/acardemulator.py) between real processes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from swipepay.center.lab import Lab
from swipepay.cli.harness.processes import wait_for
from swipepay.drivers.listener import SessionLimits
from swipepay.drivers.registry import open_phone_server
from swipepay.drivers.vpcd import HCE_PHONE_ATR
from swipepay.drivers.vpcd_listen import VpcdListenServer, listen_address
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.framing import FrameDecoder, encode
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PhoneApplet, State
from swipepay.firmware_sim.phonelink.protocol import AID
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.transaction import Transaction, TxnType
from tests.support.acardemulator import PERSOSIM_AID

SELECT = bytes.fromhex("00A4040007") + AID + b"\x00"
FAST = SessionLimits(frame_timeout=0.5, idle_timeout=0.5, yield_after=0.5)


class App:
    """The relay app's side of the socket, byte for byte."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.decoder = FrameDecoder()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(encode(payload))

    def ask(self, apdu: bytes) -> bytes:
        self.send(apdu)
        while True:
            data = self.sock.recv(4096)
            assert data, "the phone closed the connection"
            frames = self.decoder.feed(data)
            if frames:
                return frames[0]

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


class RelayedPhone:
    def __init__(self, lab: Lab, limits: SessionLimits | None = None, once: bool = False,
                 choice: Choice = Choice.CONFIRM, aid: bytes = AID) -> None:
        profile = lab.phone_profile("alice-phone")
        pin = lab.pins()[profile.card]
        self.user = ScriptedUser(choice, lambda: pin)  # IGNORE: never answers
        self.applet = PhoneApplet(profile.identity(), profile.dukpt(), aid=aid)
        self.phone = Phone(self.applet, self.user, time.time)
        self.server = VpcdListenServer("vpcd-listen:127.0.0.1:0", "127.0.0.1", 0, limits)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve,
                                       args=(self.phone, self.stop, once), daemon=True)
        self.thread.start()

    def app(self) -> App:
        return App(self.server.address)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()
        assert not self.thread.is_alive()


@pytest.fixture
def relayed(lab: Lab) -> Iterator[RelayedPhone]:
    s = RelayedPhone(lab)
    yield s
    s.close()


def wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until the server thread reached the state the test waits for (bounded)."""
    wait_for(predicate, timeout, "the phone server's state")


def test_url_and_registry() -> None:
    assert listen_address("vpcd-listen:127.0.0.1:35963") == ("127.0.0.1", 35963)
    assert listen_address("vpcd-listen:") == ("127.0.0.1", 35963)
    server = open_phone_server("vpcd-listen:127.0.0.1:0")
    assert isinstance(server, VpcdListenServer)
    server.close()
    with pytest.raises(ConfigError):
        listen_address("vpcd-listen:127.0.0.1:notaport")


def test_power_on_apdus_power_off_and_a_second_tap_on_the_same_socket(
    relayed: RelayedPhone,
) -> None:
    app = relayed.app()
    app.send(b"\x01")  # the app connects and powers on
    assert app.ask(SELECT)[-2:] == b"\x90\x00"
    assert relayed.applet.state is State.SELECTED
    app.send(b"\x00")  # the phone leaves the field
    wait(lambda: relayed.applet.state is State.IDLE)
    # the next tap: no power on, the APDUs come on the same socket
    assert app.ask(bytes.fromhex("8030000000"))[-2:] == b"\x69\x85"  # fresh: not selected
    assert app.ask(SELECT)[-2:] == b"\x90\x00"
    assert app.ask(b"\x04") == HCE_PHONE_ATR  # vpcd's get-ATR code
    assert relayed.server.sessions == 0  # still the first connection
    app.close()


def test_power_off_in_the_middle_of_a_confirmation_cancels_the_payment(lab: Lab) -> None:
    s = RelayedPhone(lab, choice=Choice.IGNORE)  # the user has not answered yet
    try:
        cert, key = lab.terminal_link_identity("POS00001")
        link = TerminalLink(cert, key)
        card_id = lab.cards()["alice-visa"].pan.encode("ascii")
        app = s.app()
        app.send(b"\x01")
        link.handle_select(app.ask(link.select_command().apdu))
        link.handle_connect(app.ask(link.connect_command(card_id).apdu))
        link.handle_authenticate(app.ask(link.authenticate_command().apdu))
        spec = lab.cards()["alice-visa"]
        txn = Transaction(type=TxnType.PURCHASE, amount=1234, pan=spec.pan, expiry=spec.expiry,
                          terminal_id=cert.terminal_id, merchant_id=cert.merchant_id,
                          stan="000001", transmitted_at="1201090000", currency="978")
        link.handle_payment_request(app.ask(link.payment_request_command(txn).apdu))
        assert s.applet.awaiting_user and len(s.user.shown) == 1
        app.send(b"\x00")
        wait(lambda: s.applet.state is State.IDLE)
        assert not s.applet.awaiting_user  # the payment is gone with the session
        assert app.ask(SELECT)[-2:] == b"\x90\x00"  # and the phone answers the next tap
        app.close()
    finally:
        s.close()


def test_the_app_connecting_again_after_its_socket_broke(relayed: RelayedPhone) -> None:
    first = relayed.app()
    first.send(b"\x01")
    assert first.ask(SELECT)[-2:] == b"\x90\x00"
    first.close()  # the app's process went away
    wait(lambda: relayed.server.sessions == 1)
    assert relayed.applet.state is State.IDLE
    again = relayed.app()
    again.send(b"\x01")
    assert again.ask(SELECT)[-2:] == b"\x90\x00"
    again.close()


def test_a_frame_begun_and_never_finished_drops_the_app(lab: Lab) -> None:
    s = RelayedPhone(lab, FAST)
    try:
        app = s.app()
        app.sock.sendall(b"\x00\x0d\x00\xa4")  # 13 bytes announced, 2 sent
        assert app.closed()
    finally:
        s.close()


def test_silence_inside_a_tap_ends_the_tap_but_keeps_the_connection(lab: Lab) -> None:
    s = RelayedPhone(lab, FAST)
    try:
        app = s.app()
        app.send(b"\x01")
        assert app.ask(SELECT)[-2:] == b"\x90\x00"
        wait(lambda: s.applet.state is State.IDLE)  # no power off came: idle_timeout ended it
        assert not app.closed(timeout=0.8)  # silence between taps is normal: still connected
        assert app.ask(SELECT)[-2:] == b"\x90\x00"
        app.close()
    finally:
        s.close()


def test_a_silent_connection_gives_way_to_a_new_one(lab: Lab) -> None:
    s = RelayedPhone(lab, FAST)
    try:
        stale = s.app()
        stale.send(b"\x01")
        fresh = s.app()  # the app restarted; its old connection never closed
        fresh.send(b"\x01")
        assert fresh.ask(SELECT)[-2:] == b"\x90\x00"
        assert stale.closed()
        fresh.close()
    finally:
        s.close()


def test_once_returns_after_the_first_tap(lab: Lab) -> None:
    s = RelayedPhone(lab, once=True, aid=PERSOSIM_AID)
    app = s.app()
    app.send(b"\x01")
    assert app.ask(SELECT)[-2:] == b"\x6a\x82"  # this phone answers to PersoSim's AID only
    select = bytes.fromhex("00A4040007") + PERSOSIM_AID + b"\x00"
    assert app.ask(select)[-2:] == b"\x90\x00"
    app.send(b"\x00")
    s.thread.join(5)
    assert not s.thread.is_alive()
    s.server.close()
    app.close()
