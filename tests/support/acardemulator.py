"""A stand-in for an Android phone running vsmartcard's Android Smart Card Emulator
(ACardEmulator) in "Remote Virtual Smart Card" mode, written from the app's source
(``VICCEmulator.java``, ``EmulatorSingleton.java``, ``EmulatorHostApduService.java``,
``res/xml/aid_list.xml``) and from what Android's HCE stack answers by itself.

Three parts, as on the phone:

* :class:`RelayApp` — the app: one connection to the virtual card program (``swipepay phone
  run --link vpcd-listen:...``), opened when the app's service first starts, with a power on
  (``01``); each routed APDU is sent and the answer relayed; Android's deactivation sends a
  power off (``00``) on the same connection, which stays open for the next tap.  When the
  connection is broken the app answers ``6D00`` (a write that fails) or nothing at all (the
  program closed: the read meets the end of the stream); the app only connects again when it
  is started again (:meth:`RelayApp.restart`).
* :class:`HceRouter` — Android's routing in front of it: per tap, nothing reaches the app until a
  SELECT of an AID it registers; before that a SELECT of another AID gets ``6A82`` and any
  other command ``6F00``, from Android itself.  Once the app is selected, a SELECT of an
  unregistered AID still gets ``6A82`` from Android (the app never sees it) and everything else
  goes to the app.  The field dropping deactivates the app (it sends the power off).
* :class:`ACardEmulatorStandIn` — the field, as a terminal reaches it in the tests: a ``tcp:``
  port (one connection = one tap; closing it = the phone leaving) or a vpcd slot of pcscd (the
  reader's power on/off = the field), in front of one router and one app.  Over vpcd a relay
  that gives no answer is reported as 6D00 (a reader would time out instead).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from enum import Enum, auto
from typing import Any

from swipepay.drivers.listener import FramedListener
from swipepay.drivers.vpcd import HCE_PHONE_ATR, VirtualCard, VpcdClient
from swipepay.firmware_sim.framing import FrameDecoder, encode

#: The AIDs the app registers (res/xml/aid_list.xml and res/values/strings.xml): OpenPGP,
#: OATH, IsoApplet, PIV, GIDS (with their truncated forms) and PersoSim.
REGISTERED_AIDS: frozenset[bytes] = frozenset(
    bytes.fromhex(aid)
    for aid in (
        "D2760001240102000000000000010000", "D27600012401",  # OpenPGP
        "A000000527210101",  # OATH
        "F276A288BCFBA69D34F31001",  # IsoApplet
        "A00000030800001000", "A000000308000010", "A0000003080000", "A00000030800",
        "A000000308",  # PIV
        "A000000397425446590201", "A0000003974254465902", "A00000039742544659",  # GIDS
        "F04E66E75C02D8",  # PersoSim
    )
)  # fmt: skip
PERSOSIM_AID = bytes.fromhex("F04E66E75C02D8")

AID_NOT_FOUND = bytes.fromhex("6A82")
NOTHING_SELECTED = bytes.fromhex("6F00")
RELAY_LOST = bytes.fromhex("6D00")
POWER_ON, POWER_OFF = b"\x01", b"\x00"


class RelayApp:
    """The app's relay to the virtual card program: one connection kept across taps."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._started = False
        self._decoder = FrameDecoder()
        self._lock = threading.Lock()
        #: Connections opened so far, and everything sent (for the tests to look at).
        self.connections = 0
        self.sent: list[bytes] = []

    def start(self) -> None:
        """The service starts (the first tap that selects it): connect and power on."""
        with self._lock:
            self._started = True
            self._connect()

    def restart(self) -> None:
        """The app is started again (its process was recreated): a new connection."""
        with self._lock:
            self._close()
            self._connect()

    def break_connection(self) -> None:
        """The connection breaks under the app (which does not notice until it writes)."""
        with self._lock:
            self._close()

    def process(self, apdu: bytes) -> bytes | None:
        """Relay one APDU; 6D00 when the write fails, None when the program closed."""
        with self._lock:
            if not self._started:
                self._started = True
                self._connect()
            try:
                self._send(apdu)
                return self._receive()
            except OSError:
                return RELAY_LOST

    def deactivate(self) -> None:
        """Android deactivated the app: power off; a failed write drops the connection."""
        with self._lock:
            try:
                self._send(POWER_OFF)
            except OSError:
                self._close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5.0)
        except OSError:
            self._sock = None  # the app logs it; every APDU then fails (6D00)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._decoder = FrameDecoder()
        self.connections += 1
        with contextlib.suppress(OSError):
            self._send(POWER_ON)

    def _send(self, payload: bytes) -> None:
        if self._sock is None:
            raise OSError("not connected")
        self.sent.append(payload)
        self._sock.sendall(encode(payload))

    def _receive(self) -> bytes | None:
        assert self._sock is not None
        while True:
            data = self._sock.recv(4096)
            if not data:
                return None
            frames = self._decoder.feed(data)
            if frames:
                return frames[0]

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class _State(Enum):
    IDLE = auto()  # no field
    WAIT_SELECT = auto()  # field on, no service selected
    ROUTED = auto()  # the app is selected


def select_aid(apdu: bytes) -> bytes | None:
    """The AID of a SELECT by name as Android recognises one (CLA 00, INS A4, P1 04, an AID of
    at least 5 bytes inside the command); None for any other command."""
    if len(apdu) < 10 or apdu[:3] != b"\x00\xa4\x04":
        return None
    length = apdu[4]
    if len(apdu) < 5 + length:
        return None
    return apdu[5 : 5 + length]


class HceRouter:
    """Android's HCE routing for one app, tap by tap."""

    def __init__(self, app: RelayApp, registered: frozenset[bytes] = REGISTERED_AIDS) -> None:
        self.app = app
        self.registered = registered
        self.state = _State.IDLE
        #: What Android answered itself (not the app), for the tests.
        self.answered_by_android: list[bytes] = []

    def process(self, apdu: bytes) -> bytes | None:
        if self.state is _State.IDLE:
            self.state = _State.WAIT_SELECT  # the field came on with this tap
        aid = select_aid(apdu)
        if aid is not None and aid not in self.registered:
            return self._android(AID_NOT_FOUND)
        if aid is None and self.state is _State.WAIT_SELECT:
            return self._android(NOTHING_SELECTED)
        self.state = _State.ROUTED
        return self.app.process(apdu)

    def field_off(self) -> None:
        """The phone left the field (or the reader switched it off)."""
        if self.state is _State.ROUTED:
            self.app.deactivate()
        self.state = _State.IDLE

    def deactivate(self) -> None:  # the name a phone-side driver calls
        self.field_off()

    def _android(self, sw: bytes) -> bytes:
        self.answered_by_android.append(sw)
        return sw


class _FieldConversation:
    """One terminal connection to the stand-in: one tap."""

    def __init__(self, router: HceRouter) -> None:
        self.router = router
        self.finished = False

    def receive(self, payload: bytes) -> bytes | None:
        return self.router.process(payload)

    def idle(self, seconds: float) -> bool:
        return False

    def close(self) -> None:
        self.router.field_off()
        self.finished = True


class _TcpField(FramedListener):
    """The stand-in's ``tcp:`` side; :meth:`pull` takes the phone out of the field."""

    def __init__(self, router: HceRouter) -> None:
        super().__init__("tcp:127.0.0.1:0", "127.0.0.1", 0)
        self.router = router
        self._conn: socket.socket | None = None

    def conversation(self, phone: Any) -> _FieldConversation:
        return _FieldConversation(self.router)

    def _session(self, conn: socket.socket, talk: Any, stop: threading.Event, once: bool) -> None:
        self._conn = conn
        try:
            super()._session(conn, talk, stop, once)
        finally:
            self._conn = None

    def pull(self) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class ACardEmulatorStandIn:
    """The phone with ACardEmulator, relaying to ``swipepay phone run`` at ``host:port``.

    ``field_url`` is where a terminal finds it (``tcp:127.0.0.1:<port>``); with
    :meth:`on_vpcd` it sits on a vpcd slot of pcscd instead.
    """

    def __init__(self, host: str, port: int) -> None:
        self.app = RelayApp(host, port)
        self.router = HceRouter(self.app)
        self._stop = threading.Event()
        self._field = _TcpField(self.router)
        field_host, field_port = self._field.address
        self.field_url = f"tcp:{field_host}:{field_port}"
        self._thread = threading.Thread(
            target=self._field.serve, args=(self.router, self._stop), daemon=True
        )
        self._thread.start()

    def vpcd_client(self, host: str, port: int) -> VpcdClient:
        """The phone as a card for a vpcd slot of pcscd (insert it there): the reader's power
        on/off and reset are the field."""
        card = VirtualCard(self._vpcd_apdu, HCE_PHONE_ATR, self.router.field_off)
        return VpcdClient(card, host, port)

    def _vpcd_apdu(self, apdu: bytes) -> bytes:
        answer = self.router.process(apdu)
        return RELAY_LOST if answer is None else answer

    def pull(self) -> None:
        """The phone leaves the field in the middle of a tap."""
        self._field.pull()

    def close(self) -> None:
        self._stop.set()
        self._field.pull()
        self._thread.join(timeout=5)
        self._field.close()
        self.app.close()
