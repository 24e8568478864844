"""``serial:<pyserial URL>[?proto=raw|msr605&baud=9600]`` — serial magstripe readers.

The part after ``serial:`` is anything :func:`serial.serial_for_url` opens: a device path
(``/dev/ttyUSB0``, ``COM3``) or a pyserial URL (``loop://``, ``socket://host:port``,
``spy://...``, ``rfc2217://...``).  Only ``proto`` and ``baud`` are taken out of the query;
every other parameter stays with the pyserial URL, so ``spy://...?file=...`` keeps working.

=========  ==============================================================================
proto      reader
=========  ==============================================================================
raw        (default) sends each track as a text line, CR/LF terminated, when a card is
           swiped (:mod:`firmware_sim.swipe_lines`).  A single-track swipe is complete
           after :data:`END_OF_SWIPE_GAP` seconds of silence.
msr605     MSR605 / MSR206 command protocol (:mod:`firmware_sim.msr605`): ``ESC r`` arms
           the reader, the reply comes after the swipe; ``ESC a`` resets it on a timeout.
=========  ==============================================================================

Line settings: ``baud`` (default 9600), 8 data bits, no parity, 1 stop bit.
"""

from __future__ import annotations

import contextlib
import errno
import time
from typing import Any
from urllib.parse import parse_qsl

import serial

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.discovery import Device
from swipepay.drivers.registry import split_url
from swipepay.drivers.swipe_reading import SwipeLines
from swipepay.firmware_sim import msr605
from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError
from swipepay.firmware_sim.tracks import card_from_tracks

#: Query parameters that belong to this driver (the rest belong to pyserial's URL).
OWN_PARAMS = frozenset({"proto", "baud"})
PROTOCOLS = ("raw", "msr605")
DEFAULT_BAUD = 9600
#: Longest single blocking read, so deadlines are kept without busy-waiting.
_POLL = 0.05

#: errno of a failed open -> (error class, what to tell the user).
_OPEN_ERRORS: dict[int, tuple[type[Exception], str]] = {
    errno.ENOENT: (ConfigError, "no such serial port"),
    errno.ENODEV: (ConfigError, "no such serial device"),
    errno.ENXIO: (ConfigError, "no such serial device"),
    errno.EACCES: (ConfigError, "permission denied (is the user in the dialout group?)"),
    errno.EBUSY: (TransportError, "port busy (another program has it open)"),
    errno.EWOULDBLOCK: (TransportError, "port busy (another program has it locked)"),
}


def split_serial_url(url: str) -> tuple[str, dict[str, str]]:
    """``serial:loop://?proto=msr605&logging=debug`` -> ``("loop://?logging=debug", {...})``.

    The query is split on ``&`` and only our keys are removed, so pyserial's own parameters
    keep their exact spelling (including flags without ``=``).
    """
    _scheme, rest = split_url(url)
    target, _sep, query = rest.partition("?")
    own: dict[str, str] = {}
    theirs: list[str] = []
    for piece in query.split("&") if query else []:
        pairs = parse_qsl(piece, keep_blank_values=True)
        key = pairs[0][0] if pairs else piece
        if key in OWN_PARAMS:
            own[key] = pairs[0][1] if pairs else ""
        else:
            theirs.append(piece)
    if not target:
        raise ConfigError(f"{url!r}: give a port after serial: (e.g. serial:/dev/ttyUSB0)")
    return target + ("?" + "&".join(theirs) if theirs else ""), own


class SerialCardReader:
    """A magstripe reader on a serial line (see the module docstring for the URL)."""

    def __init__(self, url: str, port: Any, proto: str) -> None:
        self.url = url
        self.port = port
        self.proto = proto
        self._swipes = SwipeLines()
        self._parser = msr605.Msr605Parser()

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> SerialCardReader:
        target, own = split_serial_url(url)
        proto = own.get("proto", "raw") or "raw"
        if proto not in PROTOCOLS:
            raise ConfigError(f"{url!r}: proto must be one of {', '.join(PROTOCOLS)}")
        try:
            baud = int(own.get("baud", DEFAULT_BAUD))
            if baud <= 0:
                raise ValueError(baud)
        except ValueError:
            raise ConfigError(f"{url!r}: baud must be a positive integer") from None
        return cls(url, open_port(target, baud), proto)

    def read_card(self, timeout: float) -> CardData:
        if self.proto == "msr605":
            return self._read_msr605(timeout)
        return self._read_raw(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            self.port.close()

    # -- raw-line readers

    def _read_raw(self, timeout: float) -> CardData:
        return self._swipes.read(timeout, self._read, poll=_POLL)

    # -- MSR605 / MSR206

    def _read_msr605(self, timeout: float) -> CardData:
        self.port.reset_input_buffer()  # a reply to an older command is not this swipe
        self._parser.end()
        self._write(msr605.command("reset") + msr605.command("read_iso"))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                events = self._parser.end()
                self._write(msr605.command("reset"))  # take the reader out of read mode
                if not events:
                    raise LinkTimeout(f"no card swiped within {timeout:g} s")
            else:
                data = self._read(min(_POLL, remaining))
                events = self._parser.feed(data) if data else []
            for event in events:
                if isinstance(event, msr605.BadReply):
                    raise event.error
                if isinstance(event, msr605.StatusReply | msr605.ReadReply):
                    error = event.error
                    if error is not None:
                        raise error
                if isinstance(event, msr605.ReadReply):
                    return card_from_tracks(event.track(1), event.track(2))

    # -- port I/O

    def _read(self, wait: float) -> bytes:
        try:
            self.port.timeout = wait
            data: bytes = self.port.read(max(1, self.port.in_waiting))
        except (OSError, serial.SerialException) as exc:
            raise TransportError(f"serial port {self.url!r} failed: {exc}") from None
        return data

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (OSError, serial.SerialException) as exc:
            raise TransportError(f"serial port {self.url!r} failed: {exc}") from None


def open_port(target: str, baud: int) -> Any:
    """Open ``target`` at ``baud`` 8N1 with pyserial; a clear ConfigError/TransportError if not."""
    options: dict[str, Any] = {
        "baudrate": baud,
        "bytesize": serial.EIGHTBITS,
        "parity": serial.PARITY_NONE,
        "stopbits": serial.STOPBITS_ONE,
        "timeout": _POLL,
    }
    if "://" not in target:
        options["exclusive"] = True  # a second terminal on the same reader is an error
    try:
        return serial.serial_for_url(target, **options)
    except ValueError as exc:
        raise ConfigError(f"serial port {target!r}: {exc}") from None
    except (OSError, serial.SerialException) as exc:
        code = getattr(exc, "errno", None)
        kind, what = _OPEN_ERRORS.get(code or 0, (TransportError, "cannot open"))
        raise kind(f"serial port {target!r}: {what} ({exc})") from None


def list_devices() -> list[Device]:
    """Every serial port pyserial finds, with its description (``swipepay readers``)."""
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    return [Device(f"serial:{p.device}", str(p.description)) for p in ports]
