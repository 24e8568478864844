"""``tcp:<host:port>`` — the phone link over a TCP socket, for two processes without NFC hardware.

Both sides speak the same framing: every APDU is preceded by its length as 2 bytes big-endian,
the terminal sends one framed command and reads one framed response.  Closing the connection
is the field going off, so the phone server then calls ``phone.deactivate()`` exactly as an
HCE service gets ``onDeactivated``.

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
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from swipepay.drivers.registry import split_url
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, LocalError, TransportError
from swipepay.firmware_sim.phone import Phone

#: Short APDU limits: header 4 + Lc 1 + 255 data + Le 1; data 256 + SW 2.
MAX_COMMAND_FRAME = 261
MAX_RESPONSE_FRAME = 258
LENGTH_PREFIX = 2
#: How often a blocked accept/recv wakes up to look at the stop flag (seconds).
POLL_INTERVAL = 0.1
#: Pause between connection attempts while the phone is not listening yet (seconds).
CONNECT_RETRY = 0.05
DEFAULT_RESPONSE_TIMEOUT = 10.0


def parse_address(url: str) -> tuple[str, int]:
    """``tcp:127.0.0.1:7000`` -> ``("127.0.0.1", 7000)``; ConfigError for anything else."""
    _scheme, rest = split_url(url)
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"tcp: URL needs host:port, e.g. tcp:127.0.0.1:7000 (got {url!r})")
    return host.strip("[]"), int(port_text)


class FrameError(TransportError):
    """The peer sent a frame that breaks the framing rules; the connection is dropped."""


def recv_exact(sock: socket.socket, n: int, keep_waiting: Callable[[], bool]) -> bytes | None:
    """Read exactly ``n`` bytes; None if the peer closed before the first byte.

    ``sock`` must have a timeout; on each timeout ``keep_waiting()`` decides whether to go on
    (False raises :class:`LinkTimeout`).  A close in the middle of a frame is a FrameError.
    """
    chunks: list[bytes] = []
    got = 0
    while got < n:
        try:
            chunk = sock.recv(n - got)
        except TimeoutError:
            if keep_waiting():
                continue
            raise LinkTimeout("no answer from the peer in time") from None
        except OSError as exc:
            raise TransportError(f"connection lost: {exc.strerror or exc}") from None
        if not chunk:
            if got == 0:
                return None
            raise FrameError(f"connection closed inside a frame ({got} of {n} bytes)")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(
    sock: socket.socket, limit: int, keep_waiting: Callable[[], bool]
) -> bytes | None:
    """One length-prefixed frame of at most ``limit`` bytes; None on a clean close."""
    prefix = recv_exact(sock, LENGTH_PREFIX, keep_waiting)
    if prefix is None:
        return None
    size = int.from_bytes(prefix, "big")
    if size > limit:
        raise FrameError(f"peer announced a {size}-byte frame (limit {limit})")
    if size == 0:
        return b""
    body = recv_exact(sock, size, keep_waiting)
    if body is None:
        raise FrameError("connection closed after a frame length")
    return body


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(LENGTH_PREFIX, "big") + data


class TcpPhoneServer:
    """The phone's side: listens at once (so ``address`` is known even for port 0)."""

    def __init__(self, url: str, host: str, port: int) -> None:
        self.url = url
        try:
            self._listener = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._listener.settimeout(POLL_INTERVAL)
        #: Sessions served so far (a session is one terminal connection).
        self.sessions = 0

    @classmethod
    def from_url(cls, url: str, **_: object) -> TcpPhoneServer:
        host, port = parse_address(url)
        return cls(url, host, port)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def serve(self, phone: Phone, stop: threading.Event | None = None, once: bool = False) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                conn, _peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                raise
            with conn:
                self._session(conn, phone, stop)
            self.sessions += 1
            if once:
                return

    def _session(self, conn: socket.socket, phone: Phone, stop: threading.Event) -> None:
        """Serve one terminal; whatever ends the connection, the phone sees the field drop."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(POLL_INTERVAL)
        try:
            while not stop.is_set():
                try:
                    command = read_frame(conn, MAX_COMMAND_FRAME, lambda: not stop.is_set())
                except TransportError:
                    return  # oversize / broken frame: drop the terminal, never guess
                if command is None:
                    return
                response = phone.process(command)
                try:
                    conn.sendall(frame(response))
                except OSError:
                    return
        finally:
            phone.deactivate()

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

    @classmethod
    def from_url(
        cls, url: str, response_timeout: float = DEFAULT_RESPONSE_TIMEOUT, **_: object
    ) -> TcpPhoneLink:
        host, port = parse_address(url)
        return cls(url, host, port, response_timeout)

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
                        f"no phone at {self.host}:{self.port} within {timeout:.0f} s "
                        f"({exc.strerror or exc})"
                    ) from None
                time.sleep(CONNECT_RETRY)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.response_timeout)
        self._sock = sock

    def transmit(self, apdu: bytes) -> bytes:
        sock = self._sock
        if sock is None:
            raise TransportError("not connected to a phone")
        if len(apdu) > MAX_COMMAND_FRAME:
            raise LocalError(f"{len(apdu)}-byte command does not fit a short APDU")
        try:
            sock.sendall(frame(apdu))
            response = read_frame(sock, MAX_RESPONSE_FRAME, lambda: False)
        except TransportError:
            self.disconnect()
            raise
        except OSError as exc:
            self.disconnect()
            raise TransportError(f"the phone left: {exc.strerror or exc}") from None
        if response is None:
            self.disconnect()
            raise TransportError("the phone closed the link")
        return response

    def disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
