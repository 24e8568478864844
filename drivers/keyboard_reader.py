"""``keyboard:`` — a keyboard-wedge magstripe reader typing the swipe into stdin.

A wedge "types" ``%B...?`` Enter ``;...?`` Enter.  stdin may be a terminal (the reader is a USB
keyboard) or a pipe (another program relays it); either way the bytes go through the same
:class:`~firmware_sim.swipe_lines.SwipeSplitter` as a raw serial reader's.  On a terminal, echo
is switched off while waiting so the card number is not printed on the screen; canonical
(line) mode stays on, which is what a wedge's Enter needs.  Waiting uses ``select`` on the file
descriptor (POSIX: terminals and pipes).
"""

from __future__ import annotations

import os
import select
import sys
from typing import IO, Any

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.registry import split_url
from swipepay.drivers.swipe_reading import SwipeLines
from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.errors import ConfigError, TransportError

_CHUNK = 4096


class KeyboardCardReader:
    def __init__(self, url: str, stream: IO[str] | IO[bytes]) -> None:
        self.url = url
        try:
            self._fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            raise ConfigError("keyboard: needs stdin to be a terminal or a pipe") from None
        self._swipes = SwipeLines()
        self._eof = False

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> KeyboardCardReader:
        _scheme, rest = split_url(url)
        if rest:
            raise ConfigError(f"{url!r}: keyboard: takes no parameters")
        return cls(url, context.stdin if context.stdin is not None else sys.stdin)

    def read_card(self, timeout: float) -> CardData:
        with _EchoOff(self._fd):
            return self._read(timeout)

    def close(self) -> None:
        pass  # stdin is not ours to close

    def _read(self, timeout: float) -> CardData:
        return self._swipes.read(
            timeout, self._read_chunk, at_eof=lambda: self._eof,
            eof_message="stdin closed: no keyboard-wedge swipe to read",
        )  # fmt: skip

    def _read_chunk(self, wait: float) -> bytes:
        try:
            ready, _, _ = select.select([self._fd], [], [], max(wait, 0.0))
            if not ready:
                return b""
            data = os.read(self._fd, _CHUNK)
        except OSError as exc:
            raise TransportError(f"cannot read stdin: {exc}") from None
        if not data:
            self._eof = True
        return data


class _EchoOff:
    """Turn terminal echo off while a swipe is awaited (no-op for pipes and non-POSIX)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> None:
        if not os.isatty(self._fd):
            return
        try:
            import termios

            self._saved = termios.tcgetattr(self._fd)
            quiet = list(self._saved)
            quiet[3] = quiet[3] & ~termios.ECHO
            termios.tcsetattr(self._fd, termios.TCSANOW, quiet)
        except (ImportError, OSError):
            self._saved = None

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
            self._saved = None

