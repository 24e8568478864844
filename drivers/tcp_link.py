"""``tcp:<host:port>`` — the phone link over a TCP socket, for two processes without NFC hardware.

Both sides speak the 2-byte length framing of :mod:`firmware_sim.framing`: the terminal sends
one framed command APDU and reads one framed response.  Closing the connection is the field
going off, so the phone server then calls ``phone.deactivate()`` exactly as an HCE service
gets ``onDeactivated``.

=====================  ======================================================================
side                   what it does
=====================  ======================================================================
``phone-serve``        listens on host:port, serves one terminal connection at a time
``phone``              connects (retrying until the phone listens), ``transmit`` with timeout
=====================  ======================================================================

Frames are bounded to short APDUs (command ≤ 261 bytes, response ≤ 258 bytes), the limits a
real phone promises: a peer announcing a bigger frame is cut off, never buffered.  A command
frame of 0 bytes is handed to the phone (which answers 6700) so that every malformed APDU
still gets a status word.  TCP_NODELAY is set on both ends: one APDU is one small write.

A phone is in one field at a time, so the server serves one terminal at a time with the
accept/serve loop of :mod:`drivers.listener` and its :class:`SessionLimits`.  Between frames a
terminal may be silent while it waits for the center (up to its host timeout), so a session may
idle up to ``idle_timeout`` — but only ``yield_after`` while another terminal is waiting to
connect: a terminal that vanished mid-session (or a peer that stops after a SELECT) does not
keep a real one out for more than a few seconds.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import deque
from typing import Final

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.listener import (
    COMMAND_FRAMES,
    MAX_COMMAND_FRAME,
    MAX_RESPONSE_FRAME,
    RESPONSE_FRAMES,
    FramedListener,
    SessionLimits,
)
from swipepay.drivers.registry import split_url
from swipepay.firmware_sim.address import Address, parse_address
from swipepay.firmware_sim.errors import LinkTimeout, LocalError, TransportError
from swipepay.firmware_sim.framing import FrameDecoder, FrameError, encode
from swipepay.firmware_sim.phone import Phone

__all__ = [
    "MAX_COMMAND_FRAME",
    "MAX_RESPONSE_FRAME",
    "SessionLimits",
    "TcpConversation",
    "TcpPhoneLink",
    "TcpPhoneServer",
    "tcp_address",
]

#: Pause between connection attempts while the phone is not listening yet (seconds).
CONNECT_RETRY: Final = 0.05
DEFAULT_RESPONSE_TIMEOUT: Final = 10.0
_CHUNK: Final = 4096


def tcp_address(url: str) -> Address:
    """``tcp:127.0.0.1:7000`` -> ``Address("127.0.0.1", 7000)``; port 0: any free port."""
    _scheme, rest = split_url(url)
    return parse_address(rest, "a tcp: URL (e.g. tcp:127.0.0.1:7000)", any_port=True)


class TcpConversation:
    """One terminal connection: every frame is a command APDU for the phone; closing it is the
    field going off; silence is allowed up to ``idle_timeout``."""

    def __init__(self, phone: Phone, limits: SessionLimits) -> None:
        self.phone = phone
        self.limits = limits
        self.finished = False

    def receive(self, payload: bytes) -> bytes | None:
        return self.phone.process(payload)

    def idle(self, seconds: float) -> bool:
        return seconds >= self.limits.idle_timeout

    def close(self) -> None:
        self.phone.deactivate()
        self.finished = True


class TcpPhoneServer(FramedListener):
    """The phone's side: listens at once (so ``address`` is known even for port 0)."""

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> TcpPhoneServer:
        host, port = tcp_address(url)
        return cls(url, host, port)

    def conversation(self, phone: Phone) -> TcpConversation:
        return TcpConversation(phone, self.limits)


class TcpPhoneLink:
    """The terminal's side: one connection per transaction."""

    def __init__(
        self, url: str, host: str, port: int, response_timeout: float = DEFAULT_RESPONSE_TIMEOUT
    ) -> None:
        self.url = url
        self.host = host
        self.port = port
        self.response_timeout = response_timeout
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(RESPONSE_FRAMES)
        self._responses: deque[bytes] = deque()

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> TcpPhoneLink:
        host, port = tcp_address(url)
        timeout = context.response_timeout
        return cls(url, host, port, DEFAULT_RESPONSE_TIMEOUT if timeout is None else timeout)

    def connect(self, timeout: float) -> None:
        """Connect, retrying until the phone listens or ``timeout`` seconds have passed."""
        self.disconnect()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                sock = socket.create_connection((self.host, self.port), timeout=max(left, 0.05))
                break
            except OSError as exc:
                if time.monotonic() + CONNECT_RETRY >= deadline:
                    raise LinkTimeout(
                        f"no phone at {Address(self.host, self.port)} within {timeout:.0f} s "
                        f"({exc.strerror or exc})"
                    ) from None
                time.sleep(CONNECT_RETRY)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._decoder = FrameDecoder(RESPONSE_FRAMES)
        self._responses.clear()

    def transmit(self, apdu: bytes) -> bytes:
        if self._sock is None:
            raise TransportError("not connected to a phone")
        if len(apdu) > MAX_COMMAND_FRAME:
            raise LocalError(f"{len(apdu)}-byte command does not fit a short APDU")
        try:
            self._sock.sendall(encode(apdu, COMMAND_FRAMES))
            return self._response()
        except TransportError:
            self.disconnect()
            raise
        except OSError as exc:
            self.disconnect()
            raise TransportError(f"the phone left: {exc.strerror or exc}") from None

    def _response(self) -> bytes:
        """The next framed response, waiting up to ``response_timeout`` for it."""
        assert self._sock is not None
        deadline = time.monotonic() + self.response_timeout
        while not self._responses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LinkTimeout("no answer from the phone in time")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(_CHUNK)
            except TimeoutError:
                raise LinkTimeout("no answer from the phone in time") from None
            if not data:
                if self._decoder.pending:
                    raise TransportError(
                        f"the phone closed the link inside a frame ({self._decoder.pending} bytes)"
                    )
                raise TransportError("the phone closed the link")
            try:
                self._responses.extend(self._decoder.feed(data))
            except FrameError as exc:
                raise TransportError(f"the phone broke the framing: {exc}") from None
        return self._responses.popleft()

    def disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
