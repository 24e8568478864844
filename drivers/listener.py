"""The phone side of a framed TCP link that listens: accept one peer at a time, serve its frames.

Two phone-side links listen for the peer that carries the field and speak the 2-byte framing of
:mod:`firmware_sim.framing`: ``tcp:`` (a terminal connects, one connection per transaction;
:mod:`drivers.tcp_link`) and ``vpcd-listen:`` (a relay app on an Android phone connects once and
keeps its connection across taps; :mod:`drivers.vpcd_listen`).  They differ only in what a frame
means and in how long a silent peer may stay, so each gives a :class:`Conversation` per
connection and this module holds the loop both share.

A phone is in one field at a time, so one peer is served at a time; the :class:`SessionLimits`
keep one peer from holding the phone.  Both peers send their first frame as soon as they are
connected and every frame in one write, so a connection whose first frame (or any frame it has
begun) is not complete after ``frame_timeout`` is dropped.  How long the peer may be silent
between frames is the conversation's rule (:meth:`Conversation.idle`), but never more than
``yield_after`` while another peer is waiting to connect: a peer that vanished without closing
does not keep a live one out for more than a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Final, Protocol

from swipepay.firmware_sim.address import Address
from swipepay.firmware_sim.errors import ConfigError
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
_CHUNK: Final = 4096


@dataclass(frozen=True)
class SessionLimits:
    """How long the phone server waits for one peer (seconds); see the module docstring."""

    #: The first frame after connecting, and any frame once begun, must be complete by then.
    frame_timeout: float = 3.0
    #: Longest silence between frames in a transaction (above the terminal's 15 s host timeout).
    idle_timeout: float = 30.0
    #: Longest silence between frames while another peer is waiting to connect.
    yield_after: float = 3.0


class Conversation(Protocol):
    """What one connection's frames mean to the phone (one object per connection)."""

    def receive(self, payload: bytes) -> bytes | None:
        """Handle one frame; the payload to answer with, or None for no answer."""
        ...

    def idle(self, seconds: float) -> bool:
        """The peer has been silent ``seconds`` since its last frame: True drops it."""
        ...

    def close(self) -> None:
        """The connection is over (the field is gone)."""
        ...

    @property
    def finished(self) -> bool:
        """A whole session was served (``serve(once=True)`` returns then)."""
        ...


class FramedListener:
    """Listens at once (so ``address`` is known even for port 0); serves one peer at a time."""

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
        #: Connections served so far.
        self.sessions = 0
        #: The address of the peer being served (None between connections).
        self.peer: tuple[str, int] | None = None

    def conversation(self, phone: Phone) -> Conversation:
        """What a new connection's frames mean (each link says)."""
        raise NotImplementedError

    @property
    def scheme(self) -> str:
        return self.url.partition(":")[0]

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
            talk = self.conversation(phone)
            try:
                with conn:
                    self._session(conn, talk, stop, once)
            finally:
                self.peer = None
                talk.close()
            self.sessions += 1
            if once and talk.finished:
                return

    def _session(
        self, conn: socket.socket, talk: Conversation, stop: threading.Event, once: bool
    ) -> None:
        """Serve one peer until it leaves, breaks the rules or overstays (or ``once`` is done)."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(POLL_INTERVAL)
        heard = time.monotonic()  # when the last frame was handled (here: connected)
        decoder = FrameDecoder(COMMAND_FRAMES, began=heard)  # the first frame is due now
        while not stop.is_set() and not (once and talk.finished):
            try:
                data = conn.recv(_CHUNK)
            except TimeoutError:
                if self._overdue(decoder, heard, talk):
                    return
                continue
            except OSError:
                return
            if not data:
                return
            try:
                frames = decoder.feed(data, time.monotonic())
            except FrameError as exc:
                log.warning("%s: %s from %s; dropped", self.scheme, exc, self.peer)
                return  # oversize frame: drop the peer, never guess
            for frame in frames:
                reply = talk.receive(frame)
                if reply is not None:
                    try:
                        conn.sendall(encode(reply))
                    except OSError:
                        return
                heard = time.monotonic()

    def _overdue(self, decoder: FrameDecoder, heard: float, talk: Conversation) -> bool:
        """Whether the peer has waited longer than the limits and the conversation allow."""
        now, limits = time.monotonic(), self.limits
        if decoder.began is not None:
            if not decoder.overdue(now, limits.frame_timeout):
                return False
            log.warning("%s: %s sent no complete frame in time; dropped", self.scheme, self.peer)
            return True
        idle = now - heard
        if talk.idle(idle):
            log.warning("%s: %s silent for %.0f s; dropped", self.scheme, self.peer, idle)
            return True
        if idle >= limits.yield_after and self._someone_waiting():
            log.warning("%s: %s idle while another peer waits; dropped", self.scheme, self.peer)
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
