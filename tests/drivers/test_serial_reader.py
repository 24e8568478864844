"""``serial:`` magstripe driver against simulated readers on ``loop://`` and a socat pty pair.

Every swipe class (good, missing sentinel, bad LRC, bad Luhn, garbage, partial, reader error
status) goes through the real driver: URL parsing, ``serial_for_url``, writes, timed reads,
the sans-IO parsers and the error mapping.

* ``loop://`` reads back what is written, so there is no "other end" to put a device on.  The
  fake MSR605 therefore wraps the port's ``write``: the driver's command goes into the loop
  (and comes back as an echo the parser must skip) and the canned reply is written after it.
  Raw-line readers are simulated by writing their lines into the loop before reading.
* The socat pair is two real pseudo-terminals joined by socat: the driver opens one path, a fake
  reader thread the other, and bytes cross the kernel's tty layer as with a USB-serial reader.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import serial

from swipepay.drivers.registry import open_card_reader
from swipepay.drivers.serial_reader import SerialCardReader, split_serial_url
from swipepay.firmware_sim.errors import (
    ConfigError,
    LinkTimeout,
    RemoteProtocolError,
    TransportError,
)
from swipepay.firmware_sim.msr605 import ReaderSwipeError
from swipepay.firmware_sim.tracks import SwipeError, track1_lrc, track2_lrc

PAN = "4111111111111111"
T1 = "%B4111111111111111^DOE/JOHN^2812201000000000000?"
T2 = ";4111111111111111=28122011234567?"
T1_LRC = T1 + track1_lrc(T1)
BAD_LRC = T2 + ("5" if track2_lrc(T2) != "5" else "6")
NO_SENTINEL = T2[1:]
BAD_LUHN = ";4111111111111112=28122011234567?"
NOISE = b"\xff\x00\x13garbage\x80\xfe"


def msr_reply(t1: str | None, t2: str | None, status: int = 0x30) -> bytes:
    body = b""
    for marker, text in ((b"\x01", t1), (b"\x02", t2)):
        if text is not None:
            body += b"\x1b" + marker + text.encode("latin-1")
    return b"\x1bs" + body + b"?\x1c\x1b" + bytes([status])


#: scenario -> (MSR605 reply, raw reader lines, expected error or None, text in the message).
#: Garbage and partial replies are followed by silence: the driver's timeout ends them.
SCENARIOS: dict[str, tuple[bytes, bytes, type[Exception] | None, str]] = {
    "good": (msr_reply(T1_LRC, T2), f"{T1_LRC}\r\n{T2}\r\n".encode(), None, ""),
    "good-track2-only": (msr_reply(None, T2), f"{T2}\r\n".encode(), None, ""),
    "missing-sentinel": (
        msr_reply(None, NO_SENTINEL), f"{NO_SENTINEL}\r\n".encode(), SwipeError, "start"
    ),
    "bad-lrc": (msr_reply(T1, BAD_LRC), f"{T1}\r\n{BAD_LRC}\r\n".encode(), SwipeError, "LRC"),
    "bad-luhn": (msr_reply(None, BAD_LUHN), f"{BAD_LUHN}\n".encode(), SwipeError, "check digit"),
    "garbage": (NOISE, NOISE + b"\r\n", SwipeError, "unreadable"),
    "partial": (b"\x1bs\x1b\x02;4111111", b";4111111", SwipeError, "partial read"),
    "status-31": (msr_reply(None, None, 0x31), b"", ReaderSwipeError, "status 0x31"),
    "status-34": (msr_reply(None, None, 0x34), b"", RemoteProtocolError, "invalid command"),
}
RAW_SCENARIOS = [name for name, (_, raw, _, _) in SCENARIOS.items() if raw]
SLOW = {"garbage", "partial"}  # the read only ends at the timeout


def timeout_for(name: str) -> float:
    return 0.5 if name in SLOW else 5.0


def check(read: Callable[[], Any], name: str) -> None:
    """Run a read and check it gives the scenario's card or error."""
    _, _, error, text = SCENARIOS[name]
    if error is None:
        card = read()
        assert card.pan == PAN and card.expiry == "2812" and card.entry_mode == "90"
        return
    with pytest.raises(error) as info:
        read()
    assert text in str(info.value)
    if issubclass(error, SwipeError):
        assert "swipe the card again" in str(info.value)
    assert PAN not in str(info.value)


# --------------------------------------------------------------------------- URLs, errors


@pytest.mark.parametrize(
    ("url", "target", "own"),
    [
        ("serial:/dev/ttyUSB0", "/dev/ttyUSB0", {}),
        ("serial:/dev/ttyUSB0?proto=msr605", "/dev/ttyUSB0", {"proto": "msr605"}),
        (
            "serial:spy://loop://?file=x.txt&proto=raw&baud=19200&color",
            "spy://loop://?file=x.txt&color",
            {"proto": "raw", "baud": "19200"},
        ),
        ("serial:socket://127.0.0.1:7000", "socket://127.0.0.1:7000", {}),
    ],
)
def test_split_url_keeps_pyserial_parameters(url: str, target: str, own: dict[str, str]) -> None:
    assert split_serial_url(url) == (target, own)


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("serial:", "give a port"),
        ("serial:loop://?proto=ascii", "proto must be"),
        ("serial:loop://?baud=fast", "baud must be"),
        ("serial:nosuchscheme://x", "nosuchscheme"),
        ("serial:/dev/swipepay-no-such-port", "no such serial port"),
    ],
)
def test_config_errors(url: str, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        open_card_reader(url)


def test_registry_and_pyserial_options() -> None:
    reader = open_card_reader("serial:loop://?logging=debug&proto=msr605&baud=19200")
    try:
        assert isinstance(reader, SerialCardReader)
        assert reader.proto == "msr605" and reader.port.baudrate == 19200
        assert (reader.port.bytesize, reader.port.parity, reader.port.stopbits) == (8, "N", 1)
    finally:
        reader.close()


# --------------------------------------------------------------------------- loop://


class LoopMsr605:
    """A fake MSR605 behind a loop:// port: answers the read command with a canned reply."""

    def __init__(self, port: Any, reply: bytes) -> None:
        self.written = bytearray()
        self._write = port.write
        self._reply = reply
        port.write = self.write

    def write(self, data: bytes) -> int | None:
        # loop:// echoes the command back: the parser must skip it.
        result: int | None = self._write(data)
        self.written += data
        if b"\x1br" in data:
            self._write(self._reply)
        return result


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_loop_msr605(name: str) -> None:
    reader = SerialCardReader.from_url("serial:loop://?proto=msr605")
    try:
        device = LoopMsr605(reader.port, SCENARIOS[name][0])
        check(lambda: reader.read_card(timeout_for(name)), name)
        assert device.written.startswith(b"\x1ba\x1br")
    finally:
        reader.close()


@pytest.mark.parametrize("name", RAW_SCENARIOS)
def test_loop_raw(name: str) -> None:
    reader = SerialCardReader.from_url("serial:loop://")
    try:
        reader.port.write(SCENARIOS[name][1])
        check(lambda: reader.read_card(timeout_for(name)), name)
    finally:
        reader.close()


def test_loop_timeouts_and_reset() -> None:
    reader = SerialCardReader.from_url("serial:loop://?proto=msr605")
    try:
        device = LoopMsr605(reader.port, b"")
        with pytest.raises(LinkTimeout, match="no card swiped"):
            reader.read_card(0.2)
        assert device.written.endswith(b"\x1ba")  # reader taken out of read mode
    finally:
        reader.close()
    raw = SerialCardReader.from_url("serial:loop://")
    try:
        with pytest.raises(LinkTimeout):
            raw.read_card(0.2)
    finally:
        raw.close()


def test_loop_raw_two_swipes_in_a_row() -> None:
    reader = SerialCardReader.from_url("serial:loop://?proto=raw")
    try:
        reader.port.write(f"{T2}\r\n{BAD_LUHN}\r\n".encode())
        # Both arrive before the first read: each read gets the next swipe, in order.
        assert reader.read_card(5.0).pan == PAN
        with pytest.raises(SwipeError, match="check digit"):
            reader.read_card(5.0)
        reader.port.write(f"{T2}\n{T1}\n".encode())
        assert reader.read_card(5.0).name == "DOE/JOHN"
    finally:
        reader.close()


# --------------------------------------------------------------------------- socat pty pair


class PtyMsr605(threading.Thread):
    """A fake MSR605 on the device end of the pty pair, answering commands from a table."""

    def __init__(self, path: str, reply: bytes) -> None:
        super().__init__(daemon=True)
        self.port = serial.Serial(path, 9600, timeout=0.05)
        self.answers = {b"\x1br": reply, b"\x1be": b"\x1by", b"\x1ba": b""}
        self.received = bytearray()
        self.stop = threading.Event()

    def run(self) -> None:
        pending = bytearray()
        while not self.stop.is_set():
            data = self.port.read(64)
            self.received += data
            pending += data
            while len(pending) >= 2:
                answer = self.answers.get(bytes(pending[:2]), b"")
                del pending[:2]
                if answer:
                    self.port.write(answer)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.port.close()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pty_msr605(pty_pair: tuple[str, str], name: str) -> None:
    driver_end, device_end = pty_pair
    device = PtyMsr605(device_end, SCENARIOS[name][0])
    device.start()
    reader = open_card_reader(f"serial:{driver_end}?proto=msr605&baud=9600")
    try:
        check(lambda: reader.read_card(timeout_for(name)), name)
        assert device.received.startswith(b"\x1ba\x1br")
    finally:
        reader.close()
        device.close()


@pytest.mark.parametrize("name", RAW_SCENARIOS)
def test_pty_raw(pty_pair: tuple[str, str], name: str) -> None:
    driver_end, device_end = pty_pair
    reader = open_card_reader(f"serial:{driver_end}")
    device = serial.Serial(device_end, 9600, timeout=1)
    try:
        device.write(SCENARIOS[name][1])
        device.flush()
        check(lambda: reader.read_card(timeout_for(name)), name)
    finally:
        reader.close()
        device.close()


def test_pty_port_busy(pty_pair: tuple[str, str]) -> None:
    driver_end, _ = pty_pair
    first = open_card_reader(f"serial:{driver_end}")
    try:
        with pytest.raises(TransportError, match="busy"):
            open_card_reader(f"serial:{driver_end}")
    finally:
        first.close()
