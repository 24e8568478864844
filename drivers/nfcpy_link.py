"""``nfcpy:<nfcpy path>`` — the phone link, the phone's card emulation and a contactless reader.

nfcpy paths are nfcpy's own: ``usb:054c:06c1`` (RC-S380), ``tty:USB0:pn532``, ``usb:04cc:2533``
(PN533), or ``udp:127.0.0.1:54321`` (nfcpy's simulator: two processes or threads on one port).
nfcpy is imported inside functions, so ``swipepay --help`` and the mock demo never load it.

==============  ===========================  ===================================================
role            class                        what it does
==============  ===========================  ===================================================
phone           :class:`NfcpyPhoneLink`      reader mode: Type 4A tag, RATS by nfcpy, APDUs by
                                             ``tag.transceive`` (nfcpy chains, retries, WTX)
phone-serve     :class:`NfcpyPhoneServer`    card emulation: ``clf.listen(LocalTarget('106A'))``
                                             + ``clf.exchange`` loop through
                                             :mod:`firmware_sim.isodep` (random UID per tap)
card            :class:`NfcpyCardReader`     contactless EMV read (PPSE) through
                                             :func:`firmware_sim.emv_reader.run_reader`
==============  ===========================  ===================================================

Timing: the card side answers RATS within nfcpy's 30 ms and asks for S(WTX) when the applet
takes longer than half the frame waiting time, so a slow applet never makes the reader retry.

On ``udp:`` the listening side keeps its socket bound between listen windows, and with a
loopback host binds that address instead of nfcpy's ``0.0.0.0`` (:func:`_adapt_udp_device`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import ModuleType
from typing import Any, Final

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.discovery import Device
from swipepay.drivers.registry import split_url
from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.emv_reader import EmvReader, run_reader
from swipepay.firmware_sim.errors import (
    ConfigError,
    LinkTimeout,
    LocalProtocolError,
    SwipepayError,
    TransportError,
)
from swipepay.firmware_sim.isodep import (
    Apdu,
    CardParams,
    Deselected,
    IsoDepCard,
    Reaction,
    WtxGranted,
)
from swipepay.firmware_sim.phone import Phone
from swipepay.firmware_sim.transaction import is_decimal

#: What an Android HCE controller announces in Type A anticollision: 4-byte UID, ISO-DEP.
SENS_RES: Final = b"\x04\x00"
SEL_RES_ISO_DEP: Final = 0x20
#: NFCID1 first byte 08h marks a random UID (ISO/IEC 14443-3), like HCE's new UID per tap.
RANDOM_UID_PREFIX: Final = b"\x08"
S_DESELECT: Final = b"\xc2"
#: SENS_REQ (REQA) and ALL_REQ (WUPA): a reader polling again, so its field was reset even if
#: its RF-off notice got lost (over udp: it is one datagram).  Neither is ever an ISO-DEP block
#: (their PCB bits are RFU), so a card in a session ends it and listens again instead of
#: waiting out its idle timeout while the reader polls in vain.
FIELD_RESET_FRAMES: Final = frozenset({b"\x26", b"\x52"})
#: How long the reader side waits for the S(DESELECT) answer when it disconnects.
DESELECT_TIMEOUT: Final = 0.1
#: Where nfcpy's udp driver binds the listening side: kept for a path with a host that is not a
#: loopback address (a bench across two machines asked for the network).
_UDP_ALL_INTERFACES: Final = "0.0.0.0"  # noqa: S104
#: Longest command the reader side sends: a short case-4 APDU (4 + 1 + 255 + 1 bytes).
MAX_COMMAND: Final = 261


def load_nfc() -> ModuleType:
    """Import nfcpy or say how to get it (one line, exit code 3)."""
    try:
        import nfc
        import nfc.clf
        import nfc.tag
        import nfc.tag.tt4
    except ImportError:
        raise ConfigError(
            "nfcpy is not installed: pip install swipepay[nfc] (nfcpy 1.0.4)"
        ) from None
    module: ModuleType = nfc
    return module


def nfcpy_path(url: str) -> str:
    _scheme, rest = split_url(url)
    if not rest:
        raise ConfigError(
            f"{url!r} names no nfcpy device: use e.g. nfcpy:usb:054c:06c1, nfcpy:tty:USB0:pn532 "
            "or nfcpy:udp:127.0.0.1:54321"
        )
    if rest.split(":", 1)[0] == "udp":
        _check_udp_path(rest, url)
    return rest


def _check_udp_path(path: str, url: str) -> None:
    """nfcpy reads ``udp[:HOST[:PORT]]`` by splitting at colons and ``int()``-ing the port:
    anything else would fail inside nfcpy with a bare ``ValueError`` (or take "٨٠")."""
    parts = path.split(":")
    port = parts[2] if len(parts) > 2 else ""
    if len(parts) > 3 or (port and not (is_decimal(port) and 0 < int(port) < 65536)):
        raise ConfigError(
            f"{url!r}: an nfcpy udp path is udp:HOST:PORT with a port 1 to 65535, "
            "e.g. nfcpy:udp:127.0.0.1:54321"
        )


def open_frontend(path: str) -> Any:
    """Open an nfcpy ContactlessFrontend; a missing device is a configuration error."""
    nfc = load_nfc()
    try:
        clf = nfc.ContactlessFrontend(path)
    except OSError as exc:
        raise ConfigError(
            f"no nfcpy device at {path!r} ({exc.strerror or exc}); is it plugged in, "
            "not claimed by pcscd or the pn533_usb module, and readable (udev rule)?"
        ) from None
    _adapt_udp_device(clf.device)
    return clf


def _adapt_udp_device(device: Any) -> None:
    """Two changes to nfcpy's ``udp:`` driver, for the side that listens (the card).

    * Its socket stays bound from one ``listen()`` window to the next.  nfcpy closes and binds
      it again at every call, so a frame the reader sent at that moment is lost (datagrams
      queued in the closed socket, or sent while nothing is bound), and the reader waits out
      its 0.5–1 s timeout.  The reader polls about once a second and the card re-listens every
      0.5 s, so a reader whose polls fall on that instant keeps falling on it: no activation
      for many seconds.  A kept socket loses nothing; the reader side (an unbound socket, or
      one bound to another port) is left as nfcpy has it, and closing the device closes both.
    * With a loopback host it binds that host instead of nfcpy's ``0.0.0.0``, so tests and
      benches never open a port to the network.  A port another listener holds is a
      :class:`ConfigError` (nfcpy would return from ``listen()`` at once, and a card emulator
      calling it in a loop would spin).
    """
    if type(device).__module__ != "nfc.clf.udp":
        return
    host, port = device.addr
    try:
        bind_host = host if ipaddress.ip_address(host).is_loopback else _UDP_ALL_INTERFACES
    except ValueError:
        bind_host = _UDP_ALL_INTERFACES
    reader_mute = device.mute
    listening = False  # this device bound the port: it is the listening side

    def bind(time_to_return: float) -> bool:
        nonlocal listening
        if listening:
            return True  # bound in an earlier window
        try:
            device.socket.bind((bind_host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"udp port {port} on {bind_host} is already served (another card or phone "
                    "emulator?): stop it or choose another port"
                ) from None
            raise
        listening = True
        return True

    def mute() -> None:
        if not listening:
            reader_mute()  # the reader turns its field off: RFOFF, new socket next poll

    def close() -> None:
        nonlocal listening
        if listening:
            listening = False
            device.socket.close()
            device.socket = None
        else:
            reader_mute()

    device._bind_socket = bind
    device.mute = mute
    device.close = close


def _accept_iso_dep(target: Any) -> bool:
    """Accept ISO-DEP targets even when they also offer NFC-DEP (older Androids: SEL_RES 60)."""
    if target.sel_res is not None:
        return bool(target.sel_res[0] & SEL_RES_ISO_DEP)
    return target.sensb_res is not None


def connect_type4(clf: Any, timeout: float, targets: list[str]) -> Any:
    """Wait up to ``timeout`` s for an ISO-DEP target; return nfcpy's activated Type 4 tag."""
    nfc = load_nfc()
    deadline = time.monotonic() + timeout
    tag = clf.connect(
        rdwr={
            "targets": targets,
            "on-discover": _accept_iso_dep,
            "on-connect": lambda tag: False,
            "iterations": 1,
            "interval": 0.05,
            "beep-on-connect": False,
        },
        terminate=lambda: time.monotonic() > deadline,
    )
    if tag is False:
        raise TransportError("the nfcpy device failed while polling (see nfcpy's log)")
    if tag is None:
        raise LinkTimeout(f"no ISO-DEP device in the field within {timeout:.0f} s")
    if not isinstance(tag, nfc.tag.tt4.Type4Tag):
        raise TransportError(f"{tag} in the field is not an ISO-DEP device")
    return tag


def transceive(tag: Any, apdu: bytes) -> bytes:
    """One command APDU out, the response back; TransportError when the target left.

    Only the size is bounded (a short APDU's 261 bytes, as on ``tcp:``): a reader puts any bytes
    on the air, so the conformance checks can send malformed length encodings to the phone and
    see its status word, exactly as over ``pcsc:``.
    """
    nfc = load_nfc()
    if not 1 <= len(apdu) <= MAX_COMMAND:
        raise LocalProtocolError(
            f"a {len(apdu)}-byte command does not fit a short APDU (1 to {MAX_COMMAND} bytes)"
        )
    try:
        response = tag.transceive(bytearray(apdu))
    except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
        raise TransportError(f"the ISO-DEP device left the field ({exc})") from None
    if response is None:
        raise TransportError("the ISO-DEP device left the field")
    return bytes(response)


def release(clf: Any) -> None:
    """S(DESELECT) (best effort, so the card side ends its session at once), then RF off."""
    nfc = load_nfc()
    try:
        if clf.target is not None:
            clf.exchange(bytearray(S_DESELECT), DESELECT_TIMEOUT)
    except nfc.clf.CommunicationError:
        pass
    finally:
        clf.close()


# -- terminal side --------------------------------------------------------------------------


class NfcpyPhoneLink:
    """The terminal is the reader; the phone (HCE, or the nfcpy emulator) is a Type 4A tag."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        self._clf: Any = None
        self._tag: Any = None

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> NfcpyPhoneLink:
        return cls(url, nfcpy_path(url))

    def connect(self, timeout: float) -> None:
        if self._clf is None:
            self._clf = open_frontend(self.path)
        try:
            self._tag = connect_type4(self._clf, timeout, ["106A"])
        except SwipepayError:
            self.disconnect()
            raise

    def transmit(self, apdu: bytes) -> bytes:
        if self._tag is None:
            raise TransportError("no phone connected")
        try:
            return transceive(self._tag, apdu)
        except TransportError:
            self._tag = None
            raise

    def disconnect(self) -> None:
        clf, self._clf, self._tag = self._clf, None, None
        if clf is not None:
            release(clf)


# -- card side (the phone, or a virtual card) ---------------------------------------------------


Handler = Callable[[bytes], bytes]


class CardEmulator:
    """Serves an APDU handler as an ISO-DEP card on an nfcpy device (listen + exchange).

    One session per activation: RATS (or the device's own RATS handling), APDUs through
    :class:`~firmware_sim.isodep.IsoDepCard`, until S(DESELECT), RF off, the reader polling
    again or ``idle_timeout`` seconds without a frame; ``on_end`` runs after every session (the
    phone's deactivate).
    """

    def __init__(
        self,
        url: str,
        path: str,
        params: CardParams | None = None,
        *,
        listen_window: float = 0.5,
        idle_timeout: float = 10.0,
        wtxm: int = 13,
    ) -> None:
        self.url = url
        self.path = path
        self.params = params or CardParams()
        self.listen_window = listen_window
        self.idle_timeout = idle_timeout
        self.wtxm = wtxm
        self.sessions = 0
        self._clf: Any = None
        self._lock = threading.Lock()

    def _frontend(self) -> Any:
        with self._lock:
            if self._clf is None:
                self._clf = open_frontend(self.path)
            return self._clf

    def close(self) -> None:
        with self._lock:
            clf, self._clf = self._clf, None
        if clf is not None:
            clf.close()

    def local_target(self) -> Any:
        nfc = load_nfc()
        target = nfc.clf.LocalTarget("106A")
        target.sens_res = bytearray(SENS_RES)
        target.sdd_res = bytearray(RANDOM_UID_PREFIX + os.urandom(3))
        target.sel_res = bytearray([SEL_RES_ISO_DEP])
        target.rats_res = bytearray(self.params.ats())  # used by RC-S380 / PN53x
        return target

    def serve_handler(
        self,
        handler: Handler,
        on_end: Callable[[], None],
        stop: threading.Event | None = None,
        once: bool = False,
    ) -> None:
        stop = stop or threading.Event()
        clf = self._frontend()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="isodep-applet") as pool:
            # One UID from one tap to the next, not per listen window: a reader whose
            # anticollision spans two windows still selects the UID it was given.
            local = self.local_target()
            while not stop.is_set():
                try:
                    target = clf.listen(local, self.listen_window)
                except OSError as exc:
                    raise TransportError(f"the nfcpy device {self.path} failed: {exc}") from None
                if target is None:
                    continue
                card = IsoDepCard(self.params)
                first = _first_frame(card, target)
                if first is None:
                    continue  # a stray frame (e.g. a late R(NAK)), not an ISO-DEP activation
                try:
                    self._session(clf, card, first, handler, pool, stop)
                finally:
                    on_end()
                self.sessions += 1
                local = self.local_target()  # the next tap: a new random UID, as on HCE
                if once:
                    break

    def _session(
        self,
        clf: Any,
        card: IsoDepCard,
        frame: bytes,
        handler: Handler,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
    ) -> None:
        reaction = card.receive(frame)
        while True:
            send = reaction.send
            for event in reaction.events:
                if isinstance(event, Deselected):
                    self._send_last(clf, send)
                    return
                if isinstance(event, Apdu):
                    send = self._run(clf, card, handler, pool, event.data, stop)
                    if send is None:
                        return
            received = self._next_frame(clf, send, stop, self.idle_timeout)
            if received is None:
                return
            reaction = card.receive(received)

    def _run(
        self,
        clf: Any,
        card: IsoDepCard,
        handler: Handler,
        pool: ThreadPoolExecutor,
        apdu: bytes,
        stop: threading.Event,
    ) -> bytes | None:
        """The applet's answer as the first I-block, asking S(WTX) while it is busy.

        ``None`` when the reader left or deselected meanwhile (the applet is still waited for,
        so ``on_end`` never races it).
        """
        future: Future[bytes] = pool.submit(_safe, handler, apdu)
        budget = card.params.fwt / 2
        while True:
            try:
                return card.respond(future.result(timeout=budget))
            except FutureTimeout:
                pass
            frame: bytes | None = card.request_wtx(self.wtxm)
            granted = False
            while not granted:
                received = self._next_frame(clf, frame, stop, self.wtxm * card.params.fwt)
                if received is None:
                    future.result()
                    return None
                reaction: Reaction = card.receive(received)
                if any(isinstance(e, Deselected) for e in reaction.events):
                    self._send_last(clf, reaction.send)
                    future.result()
                    return None
                granted = any(isinstance(e, WtxGranted) for e in reaction.events)
                frame = reaction.send
            budget = self.wtxm * card.params.fwt / 2

    def _next_frame(
        self, clf: Any, send: bytes | None, stop: threading.Event, wait: float
    ) -> bytes | None:
        """Send ``send`` (if any) and wait for the next frame; None: RF off, the reader polling
        again (:data:`FIELD_RESET_FRAMES`), idle, or stop."""
        nfc = load_nfc()
        deadline = time.monotonic() + wait
        data = None if send is None else bytearray(send)
        while True:
            remaining = deadline - time.monotonic()
            try:
                received = clf.exchange(data, max(0.01, min(self.listen_window, remaining)))
            except nfc.clf.TimeoutError:
                received = None
            except nfc.clf.TransmissionError:
                received = None  # a garbled frame: stay in receive mode (rule 10)
            except nfc.clf.CommunicationError:
                return None  # RF off (BrokenLinkError) or the device gave up
            if received is not None:
                frame = bytes(received)
                return None if frame in FIELD_RESET_FRAMES else frame
            if stop.is_set() or time.monotonic() >= deadline:
                return None
            data = None

    def _send_last(self, clf: Any, frame: bytes | None) -> None:
        nfc = load_nfc()
        if frame is None:
            return
        with contextlib.suppress(nfc.clf.CommunicationError):
            clf.exchange(bytearray(frame), 0)


def _safe(handler: Handler, apdu: bytes) -> bytes:
    """An applet that raises a swipepay error still answers with that error's status word."""
    try:
        return handler(apdu)
    except SwipepayError as exc:
        return exc.status_word.to_bytes(2, "big")


def _first_frame(card: IsoDepCard, target: Any) -> bytes | None:
    """udp: hands over the raw RATS; RC-S380 / PN53x answered it and give the first block."""
    command = target.tt4_cmd
    if command is None or len(command) == 0:
        return None
    if command[0] == 0xE0 and len(command) == 2:
        return bytes(command)
    rats = target.rats_cmd
    card.assume_activated(None if rats is None else bytes(rats))
    return bytes(command)


class NfcpyPhoneServer:
    """The phone's side: the lab phone as an ISO-DEP card, like an Android HCE service."""

    def __init__(self, url: str, path: str, **options: Any) -> None:
        self.url = url
        self.emulator = CardEmulator(url, path, **options)

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> NfcpyPhoneServer:
        return cls(url, nfcpy_path(url))

    def serve(self, phone: Phone, stop: threading.Event | None = None, once: bool = False) -> None:
        self.emulator.serve_handler(phone.process, phone.deactivate, stop, once)

    def close(self) -> None:
        self.emulator.close()


# -- contactless card reader ---------------------------------------------------------------------


class NfcpyCardReader:
    """Reads a contactless EMV card (PPSE, EMV Contactless Book B) through nfcpy."""

    def __init__(
        self, url: str, path: str, targets: list[str] | None = None, amount: int = 0
    ) -> None:
        self.url = url
        self.path = path
        self.targets = targets or ["106A", "106B"]
        #: Amount (minor units) for the PDOL's 9F02.
        self.amount = amount

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> NfcpyCardReader:
        return cls(url, nfcpy_path(url), amount=context.amount)

    def read_card(self, timeout: float) -> CardData:
        clf = open_frontend(self.path)
        try:
            tag = connect_type4(clf, timeout, self.targets)
            terminal_data = {0x9F02: bytes.fromhex(f"{self.amount:012d}"), 0x9F37: os.urandom(4)}
            reader = EmvReader(contactless=True, terminal_data=terminal_data)
            return run_reader(reader, lambda apdu: transceive(tag, apdu))
        finally:
            release(clf)

    def close(self) -> None:
        pass


# -- discovery ---------------------------------------------------------------------------------


def list_devices() -> list[Device]:
    """The USB devices nfcpy knows how to drive (``swipepay readers``); udp: is not listed."""
    load_nfc()
    from nfc.clf import device as nfc_device
    from nfc.clf import transport

    try:
        found = transport.USB.find("usb") or []
    except Exception as exc:  # libusb missing or no permission: pyusb raises various classes
        raise ConfigError(f"cannot list USB devices ({type(exc).__name__}: {exc})") from None
    return [
        Device(
            f"nfcpy:usb:{bus:03d}:{dev:03d}",
            f"{vid:04x}:{pid:04x} {nfc_device.usb_device_map.get((vid, pid), '?')}",
        )
        for vid, pid, bus, dev in found
    ]
