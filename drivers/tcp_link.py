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

A phone is in one field at a time, so the server serves one terminal at a time; the
:class:`SessionLimits` keep one peer from holding it.  A terminal sends its SELECT as soon as it
is connected and every frame in one write, so a connection whose first frame (or any frame it
has begun) is not complete after ``frame_timeout`` is dropped.  Between frames a terminal may be
silent while it waits for the center (up to its host timeout), so a session may idle up to
``idle_timeout`` — but only ``yield_after`` while another terminal is waiting to connect: a
terminal that vanished mid-session (or a peer that stops after a SELECT) does not keep a real
one out for more than a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.registry import split_url
from swipepay.firmware_sim.address import Address, parse_address
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, LocalError, TransportError
from swipepay.firmware_sim.framing import FrameDecoder, FrameError, FrameLimits, encode
from swipepay.firmware_sim.phone import Phone

log = logging.getLogger(__name__)

#: Short APDU limits: header 4 + Lc 1 + 255 data + Le 1; data 256 + SW 2.
MAX_COMMAND_FRAME: Final = 261
MAX_RESPONSE_FRAME: Final = 258
COMMAND_FRAMES: Final = FrameLimits(max_length=MAX_COMMAND_FRAME)
RESPONSE_FRAMES: Final = FrameLimits(max_length=MAX_RESPONSE_FRAME)
#: How often a blocked accept/recv wakes up to look at the stop flag and the deadlines (s).
POLL_INTERVAL: Final = 0.1
#: Pause between connection attempts while the phone is not listening yet (seconds).
CONNECT_RETRY: Final = 0.05
DEFAULT_RESPONSE_TIMEOUT: Final = 10.0
_CHUNK: Final = 4096


@dataclass(frozen=True)
class SessionLimits:
    """How long the phone server waits for one terminal (seconds); see the module docstring."""

    #: The first frame after connecting, and any frame once begun, must be complete by then.
    frame_timeout: float = 3.0
    #: Longest silence between frames (above the terminal's 15 s host timeout).
    idle_timeout: float = 30.0
    #: Longest silence between frames while another terminal is waiting to connect.
    yield_after: float = 3.0


def tcp_address(url: str) -> Address:
    """``tcp:127.0.0.1:7000`` -> ``Address("127.0.0.1", 7000)``; port 0: any free port."""
    _scheme, rest = split_url(url)
    return parse_address(rest, "a tcp: URL (e.g. tcp:127.0.0.1:7000)", any_port=True)


class TcpPhoneServer:
    """The phone's side: listens at once (so ``address`` is known even for port 0)."""

    def __init__(
        self, url: str, host: str, port: int, limits: SessionLimits | None = None
    ) -> None:
        self.url = url
        self.limits = limits or SessionLimits()
        try:
            self._listener = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            where = Address(host, port)
            raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self._listener.settimeout(POLL_INTERVAL)
        #: Sessions served so far (a session is one terminal connection).
        self.sessions = 0
        #: The address of the terminal being served (None between sessions).
        self.peer: tuple[str, int] | None = None

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> TcpPhoneServer:
        host, port = tcp_address(url)
        return cls(url, host, port)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def serve(self, phone: Phone, stop: threading.Event | None = None, once: bool = False) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                raise
            self.peer = (str(peer[0]), int(peer[1]))
            try:
                with conn:
                    self._session(conn, phone, stop)
            finally:
                self.peer = None
            self.sessions += 1
            if once:
                return

    def _session(self, conn: socket.socket, phone: Phone, stop: threading.Event) -> None:
        """Serve one terminal; whatever ends the connection, the phone sees the field drop."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(POLL_INTERVAL)
        answered = time.monotonic()  # when the last answer went out (here: connected)
        decoder = FrameDecoder(COMMAND_FRAMES, began=answered)  # the first frame is due now
        try:
            while not stop.is_set():
                try:
                    data = conn.recv(_CHUNK)
                except TimeoutError:
                    if self._overdue(decoder, answered):
                        return
                    continue
                except OSError:
                    return
                if not data:
                    return
                try:
                    commands = decoder.feed(data, time.monotonic())
                except FrameError as exc:
                    log.warning("tcp: %s from %s; dropped", exc, self.peer)
                    return  # oversize frame: drop the terminal, never guess
                for command in commands:
                    try:
                        conn.sendall(encode(phone.process(command)))
                    except OSError:
                        return
                    answered = time.monotonic()
        finally:
            phone.deactivate()

    def _overdue(self, decoder: FrameDecoder, answered: float) -> bool:
        """Whether the session has waited longer than :class:`SessionLimits` allow."""
        now, limits = time.monotonic(), self.limits
        if decoder.began is not None:
            if not decoder.overdue(now, limits.frame_timeout):
                return False
            log.warning("tcp: %s sent no complete frame in time; dropped", self.peer)
            return True
        idle = now - answered
        if idle >= limits.idle_timeout:
            log.warning("tcp: %s silent for %.0f s; dropped", self.peer, idle)
            return True
        if idle >= limits.yield_after and self._someone_waiting():
            log.warning("tcp: %s idle while another terminal waits; dropped", self.peer)
            return True
        return False

    def _someone_waiting(self) -> bool:
        """A connection is queued on the listener (readable = accept would not block)."""
        try:
            ready, _, _ = select.select([self._listener], [], [], 0)
        except (OSError, ValueError):  # listener closed: the server is shutting down
            return False
        return bool(ready)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()


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
