"""The tcp: phone link: a phone served in a thread on a free port, the terminal in this thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.center.core import Center
from swipepay.center.lab import Lab, create_lab
from swipepay.center.local_host import LocalHost
from swipepay.drivers.base import DriverContext
from swipepay.drivers.registry import open_card_reader, open_phone_link, open_phone_server
from swipepay.drivers.runner import TxnReport, run_transaction
from swipepay.drivers.tcp_link import (
    MAX_COMMAND_FRAME,
    SessionLimits,
    TcpPhoneLink,
    TcpPhoneServer,
    tcp_address,
)
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError
from swipepay.firmware_sim.framing import encode as frame
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.terminal import Ending, Order, Terminal
from swipepay.firmware_sim.transaction import TxnType
from tests.support.phones import Served

SELECT = bytes.fromhex("00a4040007f053575041590100")


def purchase(lab: Lab, url: str, amount: int) -> TxnReport:
    cert, key = lab.terminal_link_identity("POS00001")
    terminal = Terminal(lab.terminal_config("POS00001"), TerminalLink(cert, key), 1)
    reader = open_card_reader("mock:alice-visa", DriverContext(cards=lab.cards(), amount=amount))
    center = Center.open(lab.db_path, lab.center_keys())
    try:
        return run_transaction(
            terminal,
            Order(TxnType.PURCHASE, amount),
            reader=reader,
            link=open_phone_link(url, DriverContext(response_timeout=5.0)),
            host=LocalHost(center),
            sleep=lambda s: None,
            phone_timeout=5.0,
        )
    finally:
        center.close()


def test_registry_knows_both_sides() -> None:
    assert isinstance(open_phone_link("tcp:127.0.0.1:9"), TcpPhoneLink)
    server = open_phone_server("tcp:127.0.0.1:0")
    try:
        assert isinstance(server, TcpPhoneServer)
    finally:
        server.close()


@pytest.mark.parametrize("url", ["tcp:", "tcp:host", "tcp:host:port", "tcp::7000", "tcp:h:99999"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="tcp: URL"):
        tcp_address(url)


def test_full_transaction_over_tcp(lab: Lab, served: Served) -> None:
    report = purchase(lab, served.url, 2_50)
    assert report.outcome.ending is Ending.APPROVED, report.outcome.message
    assert report.exchanges[0].ins == "SELECT"
    assert report.exchanges[-1].ins == "RESULT"
    # The terminal disconnected: the phone saw the field drop.
    deadline = time.monotonic() + 5
    while served.phone.deactivations == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.phone.deactivations >= 1


@pytest.mark.parametrize("leave_after", [1, 3, 4])
def test_phone_closing_mid_session_is_phone_gone(lab: Lab, leave_after: int) -> None:
    s = Served(lab, leave_after=leave_after, once=True)
    try:
        report = purchase(lab, s.url, 1_00)
    finally:
        s.close()
    assert report.outcome.ending is Ending.PHONE_GONE
    assert s.phone.deactivations == 1


def test_connect_times_out_when_nobody_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = open_phone_link(f"tcp:127.0.0.1:{port}")
    with pytest.raises(LinkTimeout):
        link.connect(0.2)


def test_connect_retries_until_the_phone_listens(lab: Lab) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = open_phone_link(f"tcp:127.0.0.1:{port}")
    server: list[TcpPhoneServer] = []

    def late_start() -> None:
        time.sleep(0.2)
        server.append(TcpPhoneServer.from_url(f"tcp:127.0.0.1:{port}"))

    t = threading.Thread(target=late_start)
    t.start()
    try:
        link.connect(5.0)
    finally:
        t.join()
        link.disconnect()
        for srv in server:
            srv.close()


def test_transmit_without_connect_is_transport_error() -> None:
    with pytest.raises(TransportError):
        open_phone_link("tcp:127.0.0.1:9").transmit(SELECT)


def raw_client(url: str) -> socket.socket:
    host, port = tcp_address(url)
    sock = socket.create_connection((host, port), timeout=5)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    size = int.from_bytes(sock.recv(2), "big")
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk
        data += chunk
    return data


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def test_oversize_frame_drops_the_terminal(served: Served) -> None:
    with raw_client(served.url) as sock:
        sock.sendall(frame(SELECT))
        assert read_answer(sock)[-2:] == b"\x90\x00"
        sock.sendall((MAX_COMMAND_FRAME + 1).to_bytes(2, "big"))
        assert _closed(sock)  # nothing buffered or answered
    # ...and the phone serves the next terminal.
    with raw_client(served.url) as sock:
        sock.sendall(frame(SELECT))
        assert read_answer(sock)[-2:] == b"\x90\x00"


def test_empty_frame_gets_a_status_word(served: Served) -> None:
    with raw_client(served.url) as sock:
        sock.sendall(b"\x00\x00")
        assert read_answer(sock) == b"\x67\x00"


def test_frame_cut_short_ends_the_session(served: Served) -> None:
    with raw_client(served.url) as sock:
        sock.sendall(frame(SELECT))
        read_answer(sock)
        sock.sendall(b"\x00\x10\x80")
    deadline = time.monotonic() + 5
    while served.phone.deactivations == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.phone.deactivations == 1
    assert served.phone.applet.state.name == "IDLE"


def test_response_timeout_is_link_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    link = TcpPhoneLink("tcp:", "127.0.0.1", port, response_timeout=0.2)
    try:
        link.connect(2.0)
        conn, _ = listener.accept()
        with conn, pytest.raises(LinkTimeout):
            link.transmit(SELECT)
    finally:
        link.disconnect()
        listener.close()


def test_oversize_response_is_transport_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    link = TcpPhoneLink("tcp:", "127.0.0.1", port, response_timeout=2.0)
    try:
        link.connect(2.0)
        conn, _ = listener.accept()
        with conn:
            conn.sendall((300).to_bytes(2, "big") + b"\x00" * 300)
            with pytest.raises(TransportError):
                link.transmit(SELECT)
    finally:
        link.disconnect()
        listener.close()


class EchoPhone:
    """Answers SELECT with 9000 and everything else with 6D00: the framing is under test."""

    def process(self, apdu: bytes) -> bytes:
        return b"\x90\x00" if apdu == SELECT else b"\x6d\x00"

    def deactivate(self) -> None:
        return None


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    stop = threading.Event()
    server = TcpPhoneServer.from_url("tcp:127.0.0.1:0")
    host, port = server.address
    thread = threading.Thread(target=server.serve, args=(EchoPhone(), stop), daemon=True)
    thread.start()
    yield f"tcp:{host}:{port}"
    stop.set()
    thread.join(timeout=5)
    server.close()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_from_a_terminal_never_break_the_server(echo_url: str, data: bytes) -> None:
    """Arbitrary garbage on the socket: the server answers or drops, and keeps serving."""
    with raw_client(echo_url) as sock, contextlib.suppress(OSError):  # dropped: fine
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
    with raw_client(echo_url) as sock:
        sock.sendall(frame(SELECT))
        assert read_answer(sock)[-2:] == b"\x90\x00"


# -- one peer cannot hold the phone (issue 13, defect 3) -------------------------------------

FAST = SessionLimits(frame_timeout=0.5, idle_timeout=30.0, yield_after=0.5)


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Lab:
    """A lab of its own: the phone's DUKPT counter starts from the profile in every Served."""
    return create_lab(tmp_path / "lab")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def occupied_by(served: Served, squatter: socket.socket) -> None:
    """Return once the server is serving ``squatter`` (so the terminal comes second)."""
    wait_until(lambda: served.server.peer == squatter.getsockname()[:2])


@pytest.mark.parametrize(
    "opening", [b"", b"\x00", b"\x00\x0d\x00\xa4\x04"], ids=["silent", "half-prefix", "half-frame"]
)
def test_a_peer_that_never_completes_a_frame_is_dropped(fresh_lab: Lab, opening: bytes) -> None:
    s = Served(fresh_lab, limits=FAST)
    try:
        with raw_client(s.url) as squatter:
            squatter.sendall(opening)
            occupied_by(s, squatter)
            started = time.monotonic()
            report = purchase(fresh_lab, s.url, 1_00)
            assert _closed(squatter)
    finally:
        s.close()
    assert report.outcome.ending is Ending.APPROVED, report.outcome.message
    assert time.monotonic() - started < 3.0


def test_an_idle_session_yields_to_a_waiting_terminal(fresh_lab: Lab) -> None:
    """A peer that stopped after a SELECT (or a terminal that vanished mid-session)."""
    s = Served(fresh_lab, limits=FAST)
    try:
        with raw_client(s.url) as squatter:
            squatter.sendall(frame(SELECT))
            assert read_answer(squatter)[-2:] == b"\x90\x00"
            report = purchase(fresh_lab, s.url, 1_00)
            assert _closed(squatter)
    finally:
        s.close()
    assert report.outcome.ending is Ending.APPROVED, report.outcome.message


def test_an_idle_session_is_kept_while_nobody_waits(fresh_lab: Lab) -> None:
    """A terminal waiting for the center is silent between frames: that is not a fault."""
    s = Served(fresh_lab, limits=FAST)
    try:
        with raw_client(s.url) as sock:
            sock.sendall(frame(SELECT))
            assert read_answer(sock)[-2:] == b"\x90\x00"
            time.sleep(3 * FAST.yield_after)  # the silence under test
            sock.sendall(frame(SELECT))
            assert read_answer(sock)[-2:] == b"\x90\x00"
    finally:
        s.close()
    assert s.phone.deactivations == 1


def test_a_session_silent_past_the_idle_timeout_ends(fresh_lab: Lab) -> None:
    quick_idle = SessionLimits(frame_timeout=0.5, idle_timeout=0.5, yield_after=0.5)
    s = Served(fresh_lab, limits=quick_idle)
    try:
        with raw_client(s.url) as sock:
            sock.sendall(frame(SELECT))
            assert read_answer(sock)[-2:] == b"\x90\x00"
            assert _closed(sock)
        wait_until(lambda: s.phone.deactivations == 1)
    finally:
        s.close()


def test_the_phone_command_drops_a_silent_peer_within_seconds(fresh_lab: Lab) -> None:
    """``swipepay phone run --link tcp:`` opens the server with the default limits."""
    assert isinstance(open_phone_server("tcp:127.0.0.1:0"), TcpPhoneServer)
    s = Served(fresh_lab)
    try:
        with raw_client(s.url) as squatter:
            occupied_by(s, squatter)
            started = time.monotonic()
            report = purchase(fresh_lab, s.url, 1_00)
    finally:
        s.close()
    assert report.outcome.ending is Ending.APPROVED, report.outcome.message
    assert time.monotonic() - started < SessionLimits().frame_timeout + 2.0
