"""``pcsc:<reader name part>`` — card reader and terminal-side phone link through PC/SC (pyscard).

pyscard is imported inside functions only, so the demo and ``swipepay --help`` work without it.

Card reader (role ``card``), ``pcsc:<name part>[?mode=auto|contact|contactless]``:

* waits for a card (``CardRequest``, bounded), reads the ATR, connects T=0 or T=1;
* ``auto`` picks the EMV read by the ATR: a PC/SC part 3 ATR (``3B 8n 80 01``, what contactless
  readers report) means contactless (SELECT PPSE), anything else contact (SELECT PSE);
  a part-3 *storage card* ATR (``.. 80 4F 0C A0 00 00 03 06 ..``, MIFARE and friends) and a
  contactless card with no payment application are identified by UID (``FF CA 00 00 00``);
* on an ACR122U (reader name contains "ACR122") the LED and buzzer show the result
  (:data:`ACR122_SIGNALS`, the reader's ``FF 00 40`` pseudo-APDU).

Phone link (role ``phone``), ``pcsc:<name part>``: the phone is the card in the reader's field.

Errors: no pyscard / no pcscd / no such reader -> :class:`ConfigError` (the operator's set-up);
reader unplugged, card pulled mid-read (PC/SC reports ``SCARD_E_NOT_TRANSACTED`` or
``SCARD_W_REMOVED_CARD``) -> :class:`TransportError`; no card in time -> :class:`LinkTimeout`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.discovery import Device
from swipepay.drivers.registry import url_options
from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.emv_reader import CardReadError, EmvReader, Step, run_reader
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError

INSTALL_HINT: Final = "pip install swipepay[pcsc]"

#: PC/SC error codes the drivers explain (winscard.h).
SCARD_ERRORS: Final[dict[int, str]] = {
    0x8010001D: "pcscd is not running (SCARD_E_NO_SERVICE); start it with `pcscd` or "
    "`systemctl start pcscd`",
    0x8010001E: "pcscd stopped (SCARD_E_SERVICE_STOPPED); start it again and retry",
    0x80100013: "lost contact with pcscd (SCARD_E_COMM_ERROR); was it stopped or restarted?",
    0x8010002E: "no PC/SC readers are connected (SCARD_E_NO_READERS_AVAILABLE)",
    0x80100009: "the reader is unknown to pcscd (SCARD_E_UNKNOWN_READER)",
    0x80100017: "the reader was unplugged (SCARD_E_READER_UNAVAILABLE)",
    0x80100016: "the card was removed during the exchange (SCARD_E_NOT_TRANSACTED)",
    0x80100069: "the card was removed (SCARD_W_REMOVED_CARD)",
    0x80100068: "the card was reset by another application (SCARD_W_RESET_CARD)",
    0x8010000C: "no card in the reader (SCARD_E_NO_SMARTCARD)",
    0x80100066: "the card does not answer (SCARD_W_UNRESPONSIVE_CARD)",
    0x8010000F: "the card does not speak the requested protocol (SCARD_E_PROTO_MISMATCH)",
    0x8010000B: "the reader is used exclusively by another program (SCARD_E_SHARING_VIOLATION)",
}


#: PC/SC part 3 storage-card marker in the historical bytes (RID A0 00 00 03 06).
STORAGE_CARD_MARK: Final = bytes.fromhex("804F0CA000000306")

GET_UID: Final = bytes.fromhex("FFCA000000")

#: ACR122U LED + buzzer pseudo-APDU ``FF 00 40 P2 04 T1 T2 repeat buzzer`` (ACR122U API 6.2):
#: P2 bit 7/6 green/red blink mask, 5/4 initial green/red blink state, 3/2 green/red state
#: mask, 1/0 final green/red state; T1/T2 in units of 100 ms; buzzer 01 = during T1.
ACR122_SIGNALS: Final[dict[str, bytes]] = {
    # green blink once for 300 ms with one beep, LEDs off after
    "success": bytes.fromhex("FF0040AC0403010101"),
    # red blink three times 200/200 ms with a beep each, LEDs off after
    "failure": bytes.fromhex("FF00405C0402020301"),
}


def _smartcard() -> Any:
    try:
        import smartcard.System  # noqa: F401
        from smartcard import scard
    except ImportError:
        raise ConfigError(f"pyscard is not installed: {INSTALL_HINT}") from None
    return scard


def _hresult(exc: BaseException) -> int | None:
    value = getattr(exc, "hresult", None)
    if isinstance(value, int):
        return value & 0xFFFFFFFF
    return None


def explain(exc: BaseException, fallback: str) -> str:
    code = _hresult(exc)
    if code is not None and code in SCARD_ERRORS:
        return SCARD_ERRORS[code]
    if code is not None and code != 0:
        return f"{fallback} (PC/SC error 0x{code:08X})"
    return f"{fallback} ({exc})"


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd knows; ConfigError when pyscard or pcscd is missing."""
    _smartcard()
    from smartcard.System import readers

    try:
        return [str(r) for r in readers()]
    except Exception as exc:  # pyscard raises several unrelated classes here
        if _hresult(exc) == 0x8010002E:
            return []
        raise ConfigError(explain(exc, "cannot list PC/SC readers")) from None


def card_present(reader_name: str) -> bool | None:
    """Whether a card is in the reader (``None`` when it cannot be told)."""
    scard = _smartcard()
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return None
    try:
        hresult, states = scard.SCardGetStatusChange(
            context, 0, [(reader_name, scard.SCARD_STATE_UNAWARE)]
        )
        if hresult != scard.SCARD_S_SUCCESS:
            return None
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)
    finally:
        scard.SCardReleaseContext(context)


def find_reader(part: str) -> Any:
    """The pyscard reader named ``part``, or the only one whose name contains it
    (case-insensitive); a part that several names contain is refused with their list."""
    _smartcard()
    from smartcard.System import readers

    try:
        found = readers()
    except Exception as exc:
        if _hresult(exc) == 0x8010002E:
            found = []
        else:
            raise ConfigError(explain(exc, "cannot list PC/SC readers")) from None
    matches = [r for r in found if part.lower() in str(r).lower()]
    if not matches:
        names = ", ".join(repr(str(r)) for r in found) or "none"
        raise ConfigError(f"no PC/SC reader matches {part!r}; readers: {names}")
    exact = [r for r in matches if str(r) == part]
    if not exact and len(matches) > 1:  # "Virtual" matches both vpcd slots: never guess
        names = ", ".join(repr(str(r)) for r in matches)
        raise ConfigError(f"{part!r} matches {len(matches)} PC/SC readers ({names}); name one")
    return (exact or matches)[0]


def wait_for_card(reader: Any, timeout: float, what: str = "card") -> Any:
    """Wait up to ``timeout`` s for a card in ``reader``; return a connected pyscard connection."""
    from smartcard.CardConnection import CardConnection
    from smartcard.CardRequest import CardRequest
    from smartcard.Exceptions import CardRequestTimeoutException

    request: Any = None
    try:
        request = CardRequest(readers=[reader], timeout=max(timeout, 0.001), newcardonly=False)
        service = request.waitforcard()
    except CardRequestTimeoutException:
        raise LinkTimeout(f"no {what} on {reader} within {timeout:.1f} s") from None
    except Exception as exc:
        raise TransportError(explain(exc, f"waiting for a {what} on {reader} failed")) from None
    finally:
        _forget(request)
    # The CardService disconnects its connection when garbage-collected: drop it, use our own.
    release(service.connection)
    del service
    connection = reader.createConnection()
    try:
        connection.connect(CardConnection.T0_protocol | CardConnection.T1_protocol)
    except Exception as exc:
        raise TransportError(explain(exc, f"cannot connect to the {what} on {reader}")) from None
    return connection


def _forget(request: Any) -> None:
    """Free a CardRequest's PC/SC context now, ignoring a daemon already gone.

    pyscard releases it in ``__del__`` and raises there when pcscd was stopped or restarted
    meanwhile, which prints a traceback ("Exception ignored in ... Service not available").
    """
    inner = getattr(request, "pcsccardrequest", None)
    if inner is None:
        return
    with contextlib.suppress(Exception):
        inner.release()
    inner.hcontext = None


def release(connection: Any) -> None:
    """Disconnect and free a pyscard connection, ignoring a card or daemon already gone."""
    for step in ("disconnect", "release"):
        with contextlib.suppress(Exception):
            getattr(connection, step)()


def transmitter(connection: Any, removed: str) -> Callable[[bytes], bytes]:
    """``transmit(apdu) -> response bytes`` over a pyscard connection; TransportError on loss."""

    def transmit(apdu: bytes) -> bytes:
        try:
            data, sw1, sw2 = connection.transmit(list(apdu))
        except Exception as exc:
            raise TransportError(explain(exc, removed)) from None
        return bytes(data) + bytes((sw1, sw2))

    return transmit


def is_storage_card(atr: bytes) -> bool:
    return atr[:4] == bytes.fromhex("3B8F8001") and STORAGE_CARD_MARK in atr


def is_contactless(atr: bytes) -> bool:
    """A PC/SC part 3 ATR: ``3B 8n 80 01`` (TD1 = 80, TD2 = 01), built by contactless readers."""
    return len(atr) >= 4 and atr[0] == 0x3B and atr[1] >> 4 == 0x8 and atr[2:4] == b"\x80\x01"


MODES: Final = ("auto", "contact", "contactless")
#: Steps whose failure means "this card has no payment application" (then try the UID).
NO_APPLICATION_STEPS: Final = frozenset({Step.SELECT_DIRECTORY, Step.SELECT_CANDIDATE})


@dataclass
class ReadResult:
    """A read plus what was seen on the way (for ``swipepay card read --trace``)."""

    card: CardData
    atr: bytes
    mode: str
    trace: list[tuple[bytes, bytes]]


class PcscCardReader:
    """A PC/SC card reader (contact slot or contactless reader such as the ACR122U)."""

    def __init__(self, url: str, name_part: str, mode: str = "auto", amount: int = 0) -> None:
        if mode not in MODES:
            raise ConfigError(f"pcsc: mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not name_part:
            raise ConfigError("pcsc: URL needs a reader name part, e.g. pcsc:ACR122")
        self.url = url
        self.name_part = name_part
        self.mode = mode
        #: Amount (minor units) for the PDOL's 9F02.
        self.amount = amount
        self.last: ReadResult | None = None

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> PcscCardReader:
        name, options = url_options(url, ("mode",))
        return cls(url, name, options.get("mode", "auto"), context.amount)

    def read_card(self, timeout: float) -> CardData:
        return self.read(timeout).card

    def read(self, timeout: float) -> ReadResult:
        reader = find_reader(self.name_part)
        connection = wait_for_card(reader, timeout)
        trace: list[tuple[bytes, bytes]] = []
        raw = transmitter(connection, "the card was removed during the read")

        def transmit(apdu: bytes) -> bytes:
            response = raw(apdu)
            trace.append((apdu, response))
            return response

        acr122 = "acr122" in str(reader).lower()
        ok = False
        try:
            try:
                atr = bytes(connection.getATR())
            except Exception as exc:
                raise TransportError(explain(exc, "cannot read the ATR")) from None
            mode = self.mode
            if mode == "auto":
                mode = "contactless" if is_contactless(atr) else "contact"
            if mode == "contactless" and is_storage_card(atr):
                card = read_uid(transmit)
            else:
                card = self._read_emv(transmit, mode == "contactless")
            ok = True
            self.last = ReadResult(card, atr, mode, trace)
            return self.last
        finally:
            if acr122:
                signal(raw, ok)
            release(connection)

    def _read_emv(self, transmit: Callable[[bytes], bytes], contactless: bool) -> CardData:
        terminal_data = {0x9F02: bytes.fromhex(f"{self.amount:012d}"), 0x9F37: os.urandom(4)}
        reader = EmvReader(contactless=contactless, terminal_data=terminal_data)
        steps: list[Step] = []

        def tracked(apdu: bytes) -> bytes:
            steps.append(reader.step)
            return transmit(apdu)

        try:
            return run_reader(reader, tracked)
        except CardReadError as first:
            # Only "no payment application here" falls back to the UID; a payment card that
            # fails later in the read must fail, not pass as an anonymous UID card.
            if not contactless or (steps and steps[-1] not in NO_APPLICATION_STEPS):
                raise
            try:
                return read_uid(transmit)
            except CardReadError:
                raise first from None

    def close(self) -> None:
        pass


def read_uid(transmit: Callable[[bytes], bytes]) -> CardData:
    """Identify a card by UID through the reader's GET DATA pseudo-APDU (PC/SC part 3)."""
    response = transmit(GET_UID)
    if len(response) == 2 and response[0] == 0x6C:
        response = transmit(GET_UID[:4] + response[1:2])
    data, sw = response[:-2], int.from_bytes(response[-2:], "big") if len(response) >= 2 else 0
    if sw != 0x9000 or len(data) not in (4, 7, 10):
        raise CardReadError(
            f"the card has no payment application and no UID (GET DATA answered {sw:04X})",
            sw=sw or None,
        )
    return CardData.from_uid(data)


def signal(transmit: Callable[[bytes], bytes], ok: bool) -> None:
    """Blink / beep an ACR122U; best effort (the card may be gone, the result stands)."""
    with contextlib.suppress(Exception):
        transmit(ACR122_SIGNALS["success" if ok else "failure"])


class PcscPhoneLink:
    """The terminal's phone link through a PC/SC contactless reader (ACR122U <-> HCE phone)."""

    def __init__(self, url: str, name_part: str) -> None:
        if not name_part:
            raise ConfigError("pcsc: URL needs a reader name part, e.g. pcsc:ACR122")
        self.url = url
        self.name_part = name_part
        self._connection: Any = None
        self._transmit: Callable[[bytes], bytes] | None = None

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> PcscPhoneLink:
        name, _options = url_options(url, ())
        return cls(url, name)

    def connect(self, timeout: float) -> None:
        reader = find_reader(self.name_part)
        self._connection = wait_for_card(reader, timeout, "phone")
        self._transmit = transmitter(self._connection, "the phone left the field")

    def transmit(self, apdu: bytes) -> bytes:
        if self._transmit is None:
            raise TransportError("the phone left the field")
        try:
            return self._transmit(apdu)
        except TransportError as exc:
            self.disconnect()
            raise TransportError(f"the phone left the field: {exc}") from None

    def disconnect(self) -> None:
        connection, self._connection, self._transmit = self._connection, None, None
        if connection is not None:
            release(connection)


def list_devices() -> list[Device]:
    """Every reader pcscd lists, with whether a card is in it (``swipepay readers``)."""
    states = {True: "card present", False: "no card", None: "state unknown"}
    return [Device(f"pcsc:{name}", states[card_present(name)]) for name in list_readers()]
