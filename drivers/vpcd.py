"""Virtual cards on pcscd's vsmartcard ``vpcd`` driver, and the phone-side ``vpcd:<host:port>``.

vpcd makes pcscd show readers ``Virtual PCD 00 00`` (TCP 35963) and ``Virtual PCD 00 01``
(TCP 35964); the *card* is the TCP client: connected = inserted, closed = removed.  Every
message both ways is a 2-byte big-endian length + payload.  From vpcd a 1-byte payload is a
control message (:data:`CONTROL`), anything longer a command APDU answered with exactly one
framed response (the framing of :mod:`firmware_sim.framing`).  So real pyscard code against a
real pcscd can talk to the lab's simulated cards and phones, with no hardware.

Layers, as in the rest of the project:

* :class:`VirtualCard` — one card's reaction to a payload (control or APDU), sans-IO.
* :class:`VpcdClient` — the socket: connect, serve until a :class:`threading.Event`, reconnect
  (or report) when vpcd goes away.  It sets ``TCP_NODELAY`` and re-arms ``TCP_QUICKACK`` before
  every ``recv``: Debian's vpcd writes length and payload in two ``send`` calls without
  ``TCP_NODELAY``, and Nagle + delayed ACK would otherwise stall each APDU by ~44 ms.
  Those two writes follow each other at once, so a frame still incomplete after
  :data:`FRAME_TIMEOUT` means a broken stream: the card is taken out (and comes back with
  ``reconnect``) rather than stuck on half a frame.  Silence between frames is normal (an idle
  reader); pcscd is the only peer, and nothing else can connect to the phone on this side.
* :class:`VpcdPhoneServer` — the ``phone-serve`` driver: a :class:`~firmware_sim.phone.Phone`
  as an HCE-like ISO 14443-4 card.

=========  ==========================================================
payload    meaning (from vpcd)
=========  ==========================================================
``00``     power off (no reply) -> ``on_power_off``
``01``     power on (no reply) -> ``on_power_off`` too (fresh state)
``02``     reset (no reply) -> ``on_power_off``
``04``     get ATR -> reply the ATR (also pcscd's ~400 ms presence poll)
> 1 byte   command APDU -> reply one response APDU
=========  ==========================================================
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.registry import split_url
from swipepay.firmware_sim.address import Address, parse_address
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError
from swipepay.firmware_sim.framing import FrameDecoder, encode
from swipepay.firmware_sim.phone import Phone
from swipepay.firmware_sim.statuswords import SW

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
#: vpcd's slots: TCP port -> reader name pcscd shows.
SLOTS: Final[dict[int, str]] = {35963: "Virtual PCD 00 00", 35964: "Virtual PCD 00 01"}
DEFAULT_PORT: Final = 35963
#: A frame begun but not complete after this long (seconds) ends the connection.
FRAME_TIMEOUT: Final = 5.0

POWER_OFF: Final = 0x00
POWER_ON: Final = 0x01
RESET: Final = 0x02
GET_ATR: Final = 0x04
#: Control byte -> what it does to the card (specs as data).
CONTROL: Final[dict[int, str]] = {
    POWER_OFF: "power off",
    POWER_ON: "power on",
    RESET: "reset",
    GET_ATR: "get ATR",
}


def pcsc_contactless_atr(historical: bytes) -> bytes:
    """The ATR a PC/SC reader builds for an ISO 14443-4 card (PC/SC part 3, 3.1.3.2.3.2).

    ``3B 8n 80 01`` + the ATS historical bytes + TCK (XOR of T0 .. last historical byte).
    """
    if len(historical) > 15:
        raise ConfigError("an ATR carries at most 15 historical bytes")
    body = bytes((0x8 << 4 | len(historical), 0x80, 0x01)) + historical
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes((tck,))


#: What an Android HCE phone looks like through an ACR122U: ISO 14443-4 type A, no historical
#: bytes in its ATS (the NFC controller builds the ATS) -> the well-known ``3B 80 80 01 01``.
HCE_PHONE_ATR: Final = pcsc_contactless_atr(b"")


class VirtualCard:
    """One card's answers to vpcd payloads, without I/O.

    ``handler`` answers command APDUs (it should never raise; if it does, the card answers
    ``6F00`` rather than dying).  ``on_power_off`` runs on power off, power on and reset, and
    when the connection ends, so a phone deactivates and a card forgets its selection.
    """

    def __init__(
        self,
        handler: Callable[[bytes], bytes],
        atr: bytes,
        on_power_off: Callable[[], None] | None = None,
    ) -> None:
        if not 2 <= len(atr) <= 33:
            raise ConfigError("an ATR is 2 to 33 bytes")
        self.handler = handler
        self.atr = bytes(atr)
        self.on_power_off = on_power_off
        self.powered = False
        self.apdus = 0

    def respond(self, payload: bytes) -> bytes | None:
        """The reply payload to send back, or ``None`` when vpcd expects no reply."""
        if len(payload) == 1:
            control = payload[0]
            if control == GET_ATR:
                return self.atr
            if control in (POWER_OFF, POWER_ON, RESET):
                self.powered = control != POWER_OFF
                self.power_off()
                return None
            log.warning("vpcd sent unknown control byte %02X; ignored", control)
            return None
        if not payload:
            log.warning("vpcd sent an empty frame; ignored")
            return None
        self.apdus += 1
        try:
            return bytes(self.handler(payload))
        except Exception:  # a broken handler must not take the card off the reader
            log.exception("APDU handler failed; answering 6F00")
            return SW.NO_PRECISE_DIAGNOSIS.to_bytes(2, "big")

    def power_off(self) -> None:
        if self.on_power_off is not None:
            self.on_power_off()


def _quickack(sock: socket.socket) -> None:
    """Re-arm TCP_QUICKACK (Linux clears it after each ACK) so vpcd's split writes flow."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)


class VpcdClient:
    """Serves one :class:`VirtualCard` on one vpcd slot over TCP.

    :meth:`insert` connects (the card appears in the reader) and serves in a background thread;
    :meth:`remove` closes (the card disappears); :meth:`serve` does the same in the caller's
    thread until ``stop`` is set.  With ``reconnect`` the card comes back when vpcd restarts,
    else a lost connection ends :meth:`serve` with a :class:`TransportError`.
    """

    #: How often blocking calls look at the stop event.
    POLL: Final = 0.2

    def __init__(
        self, card: VirtualCard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
    ) -> None:
        self.card = card
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        #: Seconds a begun frame may stay incomplete before the card is taken out.
        self.frame_timeout = FRAME_TIMEOUT

    @property
    def address(self) -> str:
        return str(Address(self.host, self.port))

    def connect(self, timeout: float = 2.0) -> None:
        """Connect to the slot (the card appears).  A slot another client holds is refused:
        vpcd serves one client per slot and would leave a second one waiting unseen."""
        if slot_taken(self.host, self.port):
            raise ConfigError(
                f"vpcd slot {self.address} is already taken (another `card serve` or "
                "`phone run` on it?); stop that one or use the other slot"
            )
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise TransportError(
                f"cannot reach vpcd at {self.address} ({exc.strerror or exc}); is pcscd running "
                "with the vsmartcard-vpcd driver?"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.POLL)
        self._sock = sock

    def serve(
        self, stop: threading.Event | None = None, *, reconnect: bool = False, retry: float = 0.5
    ) -> None:
        """Serve until ``stop`` is set (or the connection ends, without ``reconnect``)."""
        stop = stop or self._stop
        unreachable = False  # said once per outage, not every ``retry`` seconds
        while not stop.is_set():
            if self._sock is None:
                try:
                    self.connect()
                except TransportError as exc:
                    if not reconnect:
                        raise
                    if not unreachable:
                        unreachable = True
                        log.warning("%s; trying again every %g s", exc, retry)
                    stop.wait(retry)
                    continue
                if unreachable:
                    unreachable = False
                    log.warning("vpcd at %s reached; the card is in the slot", self.address)
            try:
                self._serve_connection(stop)
            finally:
                self._drop()
            if not stop.is_set() and not reconnect:
                raise TransportError(f"vpcd at {self.address} closed the connection")

    def _serve_connection(self, stop: threading.Event) -> None:
        sock = self._sock
        assert sock is not None
        decoder = FrameDecoder()
        while not stop.is_set():
            _quickack(sock)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                if decoder.overdue(time.monotonic(), self.frame_timeout):
                    log.warning("vpcd at %s: frame incomplete; card taken out", self.address)
                    return
                continue
            except OSError:
                return
            if not data:
                return
            payloads = decoder.feed(data, time.monotonic())
            for payload in payloads:
                reply = self.card.respond(payload)
                if reply is None:
                    continue
                try:
                    sock.sendall(encode(reply))
                except OSError:
                    return

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
            self.card.power_off()

    def pull(self) -> None:
        """Tear the card out now (any thread, also from inside the handler): vpcd sees a close."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- background use (tests, bench) ------------------------------------------------------

    def insert(self) -> None:
        """Connect now (errors surface here) and serve in a daemon thread until :meth:`remove`."""
        self._stop.clear()
        self.error = None
        self.connect()

        def run() -> None:
            try:
                self.serve(self._stop)
            except BaseException as exc:  # kept for the owner to look at
                self.error = exc

        self._thread = threading.Thread(target=run, name=f"vpcd-{self.port}", daemon=True)
        self._thread.start()

    def remove(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.pull()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._drop()

    @property
    def connected(self) -> bool:
        return self._sock is not None


def slot_address(text: str) -> Address:
    """A vpcd slot: ``host:port`` (either part optional; ``vpcd://`` and a query ignored)."""
    text = text.split("?", 1)[0].strip("/")
    return parse_address(text, "a vpcd slot", default_host=DEFAULT_HOST, default_port=DEFAULT_PORT)


class VpcdPhoneServer:
    """``vpcd:<host:port>`` — the phone as a virtual ISO 14443-4 card on a vpcd slot.

    pcscd's power off / reset and a lost connection are the field dropping: the phone
    deactivates (its session is wiped), as an HCE service does on ``onDeactivated``.
    ``once`` returns after the first session: the first power-off that follows an APDU.
    """

    def __init__(self, url: str, host: str, port: int, atr: bytes = HCE_PHONE_ATR) -> None:
        self.url = url
        self.host = host
        self.port = port
        self.atr = atr
        self._client: VpcdClient | None = None

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> VpcdPhoneServer:
        _scheme, rest = split_url(url)
        host, port = slot_address(rest)
        return cls(url, host, port)

    def serve(self, phone: Phone, stop: threading.Event | None = None, once: bool = False) -> None:
        stop = stop or threading.Event()
        done = threading.Event()
        card: VirtualCard

        def power_off() -> None:
            phone.deactivate()
            if once and card.apdus:
                done.set()

        card = VirtualCard(phone.process, self.atr, power_off)
        client = VpcdClient(card, self.host, self.port)
        self._client = client
        both = threading.Event()

        def relay() -> None:
            while not both.is_set():
                if stop.wait(0.1) or done.is_set():
                    both.set()

        watcher = threading.Thread(target=relay, daemon=True)
        watcher.start()
        try:
            client.serve(both, reconnect=not once)
        except TransportError:
            if not done.is_set():
                raise
        finally:
            both.set()
            watcher.join()
            self._client = None

    def pull(self) -> None:
        """Take the phone out of the field (tests: phone leaving mid-transaction)."""
        if self._client is not None:
            self._client.pull()

    def close(self) -> None:
        self.pull()


def slot_taken(host: str, port: int, table: Path = Path("/proc/net/tcp")) -> bool:
    """Whether a TCP connection to ``host:port`` is established right now (Linux: read from
    ``/proc/net/tcp``; elsewhere unknown, so False)."""
    try:
        packed = socket.inet_aton(socket.gethostbyname(host))
        lines = table.read_text(encoding="ascii").splitlines()[1:]
    except (OSError, UnicodeDecodeError):
        return False
    # /proc/net/tcp: "sl local rem st ...", addresses as little-endian hex IP : hex port.
    want = f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"
    return any(len(f) > 3 and f[2] == want and f[3] == "01" for f in map(str.split, lines))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms up to ``timeout`` seconds; LinkTimeout naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LinkTimeout(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(0.02)
