"""A simulated EMV payment card: command APDU bytes in, response APDU bytes out.

It exists so that the terminal's EMV read sequence (:mod:`firmware_sim.emv_reader`) can be run
against something that behaves like the cards in the field, including their awkward habits:
cards without a PSE (the reader must fall back to its AID list), contactless cards that put
everything in the GPO answer and have no records, T=0 cards that answer ``61xx``/``6Cxx``, and
cards with two applications ranked by priority.  The same object sits behind the mock reader
driver and behind a vpcd virtual card, so the bytes are exactly what a PC/SC reader would see.

Only the commands a read needs are implemented (SELECT, GET PROCESSING OPTIONS, READ RECORD,
GET RESPONSE); there is no cryptography, no ATC and no randomness, so runs are reproducible.
:meth:`EmvCardApplet.process` never raises: every malformed or unexpected command gets a status
word.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from swipepay.firmware_sim.apdu import CommandApdu
from swipepay.firmware_sim.carddata import PAN_MAX_DIGITS, PAN_MIN_DIGITS, check_expiry, luhn_valid
from swipepay.firmware_sim.errors import (
    DecodeError,
    LocalError,
    RemoteProtocolError,
    SwipepayError,
    WrongLength,
)
from swipepay.firmware_sim.statuswords import SW
from swipepay.firmware_sim.tlv import encode_tlv, parse_dol, parse_tlv
from swipepay.firmware_sim.transaction import is_decimal

Interface = Literal["contact", "contactless"]
#: What an instruction handler gives back: response data and status word.
_Reply = tuple[bytes, int]

#: Directory names (EMV Book 1 12.2.2, EMV Contactless Book B 3.3).
PSE: Final = b"1PAY.SYS.DDF01"
PPSE: Final = b"2PAY.SYS.DDF01"
#: The SFI of the PSE directory file and of the application's records.
DIRECTORY_SFI: Final = 1
RECORD_SFI: Final = 1

#: PDOL of a Visa qVSDC-like contactless card: TTQ, amount, unpredictable number, currency,
#: date, transaction type (EMV Contactless Book C-3).
QVSDC_PDOL: Final = bytes.fromhex("9F66049F02069F37045F2A029A039C01")

#: Application Interchange Profile: SDA + cardholder verification + terminal risk management.
AIP: Final = bytes.fromhex("1980")

#: The application's records, as data: (SFI, record number) -> tags in that record.  The AFL
#: the card returns is derived from this table, so the two can never disagree.
RECORD_LAYOUT: Final[dict[tuple[int, int], tuple[int, ...]]] = {
    (RECORD_SFI, 1): (0x57, 0x5F20, 0x9F1F),
    (RECORD_SFI, 2): (0x5A, 0x5F24, 0x5F25, 0x5F30, 0x5F34),
}
#: Tags a qVSDC-like card puts straight into the GPO answer (format 2) instead of records.
GPO_DATA_TAGS: Final = (0x57, 0x5A, 0x5F24, 0x5F20, 0x5F34)

CLA_ISO: Final = 0x00
CLA_PROPRIETARY: Final = 0x80
#: INS -> (CLA the instruction is defined for, handler name).  Anything else is 6D00.
INSTRUCTIONS: Final[dict[int, tuple[int, str]]] = {
    0xA4: (CLA_ISO, "_select"),
    0xA8: (CLA_PROPRIETARY, "_get_processing_options"),
    0xB2: (CLA_ISO, "_read_record"),
    0xC0: (CLA_ISO, "_get_response"),
}


@dataclass(frozen=True)
class EmvCardProfile:
    """One payment application on the simulated card, and the card's behaviour.

    ``extra_aids`` are further applications on the same card (each a full profile, usually with a
    different AID, label and lower priority); of those only the application fields are used,
    the card-wide behaviour (``has_pse``, ``t0_style``) comes from the first profile.
    ``priority`` is tag 87's low nibble (1 = highest); ``None`` leaves tag 87 out.
    ``contact``/``contactless`` say on which interfaces the application is offered.
    """

    pan: str
    expiry: str
    name: str
    service_code: str = "201"
    aid: bytes = bytes.fromhex("A0000000031010")
    label: str = "VISA CREDIT"
    priority: int | None = 1
    contact: bool = True
    contactless: bool = True
    data_in_gpo: bool = False
    pdol: bytes = b""
    extra_aids: tuple[EmvCardProfile, ...] = ()
    t0_style: bool = False
    has_pse: bool = True
    discretionary: str = "10000000"

    def __post_init__(self) -> None:
        if not (PAN_MIN_DIGITS <= len(self.pan) <= PAN_MAX_DIGITS) or not luhn_valid(self.pan):
            raise LocalError("card profile: PAN must be 8-19 digits with a valid Luhn digit")
        try:
            check_expiry(self.expiry)
            parse_dol(self.pdol)
        except DecodeError as exc:
            raise LocalError(f"card profile: {exc}") from None
        if len(self.service_code) != 3 or not is_decimal(self.service_code):
            raise LocalError("card profile: service code must be 3 digits")
        if self.discretionary and not is_decimal(self.discretionary):
            raise LocalError("card profile: discretionary data must be digits")
        if not 5 <= len(self.aid) <= 16:
            raise LocalError("card profile: an AID is 5 to 16 bytes")
        if self.priority is not None and not 0 <= self.priority <= 15:
            raise LocalError("card profile: priority is 0..15")
        if not 2 <= len(self.name) <= 26 or not self.name.isascii():
            raise LocalError("card profile: name is 2-26 ASCII characters")
        if len(self.label) > 16 or not self.label.isascii():
            raise LocalError("card profile: label is at most 16 ASCII characters")

    @property
    def pdol_length(self) -> int:
        """Total length of the values the terminal must send in GPO tag 83."""
        return sum(length for _, length in parse_dol(self.pdol))

    def track2_equivalent(self) -> bytes:
        """Tag 57: PAN ``D`` YYMM service code discretionary, BCD, ``F``-padded to whole bytes."""
        digits = f"{self.pan}D{self.expiry}{self.service_code}{self.discretionary}"
        if len(digits) % 2:
            digits += "F"
        return bytes.fromhex(digits)

    def tag_value(self, tag: int) -> bytes:
        """The value of one of the application's data objects (see :data:`TAG_VALUES`)."""
        return TAG_VALUES[tag](self)


def _bcd_pan(profile: EmvCardProfile) -> bytes:
    digits = profile.pan + ("F" if len(profile.pan) % 2 else "")
    return bytes.fromhex(digits)


def _expiry_date(profile: EmvCardProfile) -> bytes:
    """5F24 is YYMMDD: the last day of the expiry month."""
    year, month = 2000 + int(profile.expiry[:2]), int(profile.expiry[2:])
    last_day = calendar.monthrange(year, month)[1]
    return bytes.fromhex(f"{profile.expiry}{last_day:02d}")


#: How each data object the card can return is made from the profile (specs as data).
TAG_VALUES: Final[dict[int, Callable[[EmvCardProfile], bytes]]] = {
    0x57: EmvCardProfile.track2_equivalent,
    0x5A: _bcd_pan,
    0x5F20: lambda p: p.name.encode("ascii"),
    0x5F24: _expiry_date,
    0x5F25: lambda p: bytes.fromhex("200101"),
    0x5F30: lambda p: bytes.fromhex("0" + p.service_code),
    0x5F34: lambda p: b"\x01",
    0x9F1F: lambda p: b"0000000000",
}


def _tlvs(profile: EmvCardProfile, tags: tuple[int, ...]) -> bytes:
    return b"".join(encode_tlv(tag, profile.tag_value(tag)) for tag in tags)


def _afl() -> bytes:
    """AFL entries (SFI<<3, first, last, records for offline authentication) per SFI."""
    out = b""
    for sfi in sorted({sfi for sfi, _ in RECORD_LAYOUT}):
        numbers = [rec for s, rec in RECORD_LAYOUT if s == sfi]
        out += bytes((sfi << 3, min(numbers), max(numbers), 0))
    return out


class _Status(SwipepayError):
    """A refusal with a given status word (the applet's only way to say no)."""


class EmvCardApplet:
    """The applet.  ``interface`` decides which directory (PSE or PPSE) and apps are offered."""

    def __init__(self, profile: EmvCardProfile, interface: Interface = "contact") -> None:
        self.profile = profile
        self.interface: Interface = interface
        on_contact = interface == "contact"
        self.applications: tuple[EmvCardProfile, ...] = tuple(
            app
            for app in (profile, *profile.extra_aids)
            if (app.contact if on_contact else app.contactless)
        )
        if not self.applications:
            raise LocalError(f"this card has no application on the {interface} interface")
        self.directory: bytes | None = (
            PPSE if not on_contact else PSE if profile.has_pse else None
        )
        self.t0_style = profile.t0_style
        self.reset()

    def reset(self) -> None:
        """Power-on state: nothing selected (a new tap or insertion)."""
        self._selected: EmvCardProfile | None = None
        self._directory_selected = False
        self._gpo_done = False
        self._pending = b""

    # ------------------------------------------------------------------ entry point

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU.  Never raises; errors become status words."""
        try:
            command = CommandApdu.parse(apdu)
        except SwipepayError as exc:
            self._pending = b""
            return exc.status_word.to_bytes(2, "big")
        if command.ins != 0xC0:
            self._pending = b""  # T=0: any other command discards unread response bytes
        try:
            data, sw = self._dispatch(command)
        except SwipepayError as exc:
            return exc.status_word.to_bytes(2, "big")
        if self.t0_style and sw == SW.OK:
            data, sw = self._t0_wrap(command, data)
        return data + sw.to_bytes(2, "big")

    def _dispatch(self, command: CommandApdu) -> _Reply:
        entry = INSTRUCTIONS.get(command.ins)
        if command.cla not in (CLA_ISO, CLA_PROPRIETARY):
            raise _Status("class not supported", status_word=SW.CLA_NOT_SUPPORTED)
        if entry is None:
            raise _Status("instruction not supported", status_word=SW.INS_NOT_SUPPORTED)
        cla, handler_name = entry
        if command.cla != cla:
            raise _Status("wrong class for this instruction", status_word=SW.CLA_NOT_SUPPORTED)
        handler: Callable[[CommandApdu], _Reply] = getattr(self, handler_name)
        return handler(command)

    def _t0_wrap(self, command: CommandApdu, data: bytes) -> _Reply:
        """How a T=0 card returns ``data``: 61xx after a command with a body, 6Cxx on a wrong Le.

        T=0 cannot send data in answer to a command that carried data (case 4), so the card
        keeps it for GET RESPONSE; for case 2 it needs the exact Le, else it says which.
        """
        if command.ins == 0xC0 or not data:
            return data, SW.OK
        if command.data:
            self._pending = data
            return b"", 0x6100 | (len(data) & 0xFF)
        if command.le != len(data):
            return b"", 0x6C00 | (len(data) & 0xFF)
        return data, SW.OK

    # ------------------------------------------------------------------ instructions

    def _select(self, command: CommandApdu) -> _Reply:
        if command.p1 != 0x04 or command.p2 != 0x00:
            raise _Status("only SELECT by name, first occurrence", status_word=SW.INCORRECT_P1P2)
        name = command.data
        # A failed SELECT leaves nothing selected: a reader never reads on from a stale state.
        self._selected = None
        self._directory_selected = False
        self._gpo_done = False
        if not name:
            raise _Status("no DF name", status_word=SW.FILE_NOT_FOUND)
        if name == self.directory:
            self._directory_selected = True
            return self._directory_fci(name), SW.OK
        for app in self.applications:
            if app.aid.startswith(name):  # partial name selection (EMV Book 1 12.3.3)
                self._selected = app
                return self._application_fci(app), SW.OK
        raise _Status("no such application", status_word=SW.FILE_NOT_FOUND)

    def _directory_entry(self, app: EmvCardProfile) -> bytes:
        body = encode_tlv(0x4F, app.aid) + encode_tlv(0x50, app.label.encode("ascii"))
        if app.priority is not None:
            body += encode_tlv(0x87, bytes((app.priority,)))
        return encode_tlv(0x61, body)

    def _directory_fci(self, name: bytes) -> bytes:
        """PPSE: the entries are in the FCI (BF0C).  PSE: only the SFI of the directory file."""
        if self.interface == "contactless":
            entries = b"".join(self._directory_entry(app) for app in self.applications)
            proprietary = encode_tlv(0xBF0C, entries)
        else:
            proprietary = encode_tlv(0x88, bytes((DIRECTORY_SFI,)))
        return encode_tlv(0x6F, encode_tlv(0x84, name) + encode_tlv(0xA5, proprietary))

    def _application_fci(self, app: EmvCardProfile) -> bytes:
        proprietary = encode_tlv(0x50, app.label.encode("ascii"))
        if app.priority is not None:
            proprietary += encode_tlv(0x87, bytes((app.priority,)))
        if app.pdol:
            proprietary += encode_tlv(0x9F38, app.pdol)
        return encode_tlv(0x6F, encode_tlv(0x84, app.aid) + encode_tlv(0xA5, proprietary))

    def _get_processing_options(self, command: CommandApdu) -> _Reply:
        app = self._selected
        if app is None or self._gpo_done:
            raise _Status("GPO needs a freshly selected application",
                          status_word=SW.CONDITIONS_NOT_SATISFIED)
        if command.p1 != 0x00 or command.p2 != 0x00:
            raise _Status("GPO takes P1 P2 = 00 00", status_word=SW.INCORRECT_P1P2)
        objects = parse_tlv(command.data)  # DecodeError -> 6A80
        if len(objects) != 1 or objects[0].tag != 0x83:
            raise DecodeError("GPO data must be one command template (83)")
        if len(objects[0].value) != app.pdol_length:
            raise WrongLength(
                f"PDOL data is {len(objects[0].value)} bytes, the PDOL asks for {app.pdol_length}"
            )
        self._gpo_done = True
        body = encode_tlv(0x82, AIP)
        if app.data_in_gpo:
            body += _tlvs(app, GPO_DATA_TAGS)
        else:
            body += encode_tlv(0x94, _afl())
        return encode_tlv(0x77, body), SW.OK

    def _read_record(self, command: CommandApdu) -> _Reply:
        if command.p2 & 0x07 != 0x04:
            raise _Status("READ RECORD P2 must say 'record number in P1'",
                          status_word=SW.INCORRECT_P1P2)
        key = (command.p2 >> 3, command.p1)
        if self._directory_selected and self.interface == "contact":
            if key[0] != DIRECTORY_SFI or not 1 <= key[1] <= len(self.applications):
                raise _Status("no such directory record", status_word=SW.RECORD_NOT_FOUND)
            entry = self._directory_entry(self.applications[key[1] - 1])
            return encode_tlv(0x70, entry), SW.OK
        app = self._selected
        if app is None or not self._gpo_done:
            raise RemoteProtocolError("READ RECORD before GPO")  # 6985
        tags = RECORD_LAYOUT.get(key)
        if tags is None or app.data_in_gpo:
            raise _Status("no such record", status_word=SW.RECORD_NOT_FOUND)
        return encode_tlv(0x70, _tlvs(app, tags)), SW.OK

    def _get_response(self, command: CommandApdu) -> _Reply:
        if not self._pending:
            raise RemoteProtocolError("no response data waiting")  # 6985
        if command.p1 != 0x00 or command.p2 != 0x00:
            raise _Status("GET RESPONSE takes P1 P2 = 00 00", status_word=SW.INCORRECT_P1P2)
        wanted = command.le or 256
        if wanted > len(self._pending):
            raise _Status("wrong Le", status_word=0x6C00 | (len(self._pending) & 0xFF))
        chunk, self._pending = self._pending[:wanted], self._pending[wanted:]
        if self._pending:
            # More is waiting: the chunk goes out with 61xx instead of 9000.
            return chunk, 0x6100 | (len(self._pending) & 0xFF)
        return chunk, SW.OK
