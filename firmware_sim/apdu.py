"""ISO/IEC 7816-4 command and response APDUs: the only bytes the terminal and phone exchange.

Both ends of every link (PC/SC readers, nfcpy, vpcd, the in-memory mock) hand raw APDUs to
this codec, so it is strict: a command whose length bytes do not match its body is refused
with :class:`~firmware_sim.errors.WrongLength` (status word 6700) instead of being guessed at,
because a lenient parser on the phone would let a hostile terminal smuggle trailing bytes past
the secure channel's associated data.

Command body cases after the 4-byte header (ISO/IEC 7816-3:2006 12.1.3), with ``L`` the body
length, ``B1`` its first byte and ``B2B3`` the next two:

======  ==========================================  ===================================
case    condition                                   layout
======  ==========================================  ===================================
1       L = 0                                       (nothing)
2S      L = 1                                       Le (00 means 256)
3S      L = 1 + B1, B1 != 0                         Lc data
4S      L = 2 + B1, B1 != 0                         Lc data Le
2E      L = 3, B1 = 0                               00 Le Le (0000 means 65536)
3E      L = 3 + B2B3, B1 = 0, B2B3 != 0             00 Lc Lc data
4E      L = 5 + B2B3, B1 = 0, B2B3 != 0             00 Lc Lc data Le Le
======  ==========================================  ===================================

Anything else is inconsistent.  Short and extended fields are never mixed in one command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from swipepay.firmware_sim.errors import DecodeError, LocalError, SwipepayError, WrongLength
from swipepay.firmware_sim.statuswords import SW

HEADER_LEN: Final = 4
SHORT_MAX_NC: Final = 255
SHORT_MAX_NE: Final = 256
EXTENDED_MAX_NC: Final = 65535
EXTENDED_MAX_NE: Final = 65536
#: CLA 'FF' is reserved for PPS (ISO/IEC 7816-3) and invalid as a class byte.
INVALID_CLA: Final = 0xFF
#: INS '6X' and '9X' collide with T=0 procedure bytes and are invalid (ISO/IEC 7816-4 5.4.2).
INVALID_INS_HIGH_NIBBLES: Final = frozenset({0x6, 0x9})
#: SW1 values a card may send: '6X' except '60' (the T=0 NULL byte), and '9X'.
VALID_SW1: Final = frozenset(range(0x61, 0x70)) | frozenset(range(0x90, 0xA0))
#: The DF name in SELECT by name is 1..16 bytes (an AID is 5..16).
DF_NAME_LEN: Final = range(1, 17)


def _check_command(
    cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None,
    error: type[SwipepayError],
) -> None:
    """Raise ``error`` if a command field is out of range.

    Shared by the constructor (``error`` = :class:`LocalError`: we built a bad command) and
    :meth:`CommandApdu.parse` (``error`` = :class:`DecodeError`: the peer sent one), so that
    whatever ``parse`` accepts can be built and re-encoded byte for byte.
    """
    for name, value in (("CLA", cla), ("INS", ins), ("P1", p1), ("P2", p2)):
        if not 0 <= value <= 0xFF:
            raise error(f"{name} must be one byte")
    if cla == INVALID_CLA:
        raise error("CLA 'FF' is invalid", status_word=SW.CLA_NOT_SUPPORTED)
    if ins >> 4 in INVALID_INS_HIGH_NIBBLES:
        raise error(f"INS {ins:02X} is invalid ('6X' and '9X')", status_word=SW.INS_NOT_SUPPORTED)
    if not isinstance(data, bytes):
        raise error("data must be bytes")
    if len(data) > EXTENDED_MAX_NC:
        raise error(f"data field longer than {EXTENDED_MAX_NC} bytes",
                    status_word=SW.WRONG_LENGTH)
    if le is not None and not 1 <= le <= EXTENDED_MAX_NE:
        raise error(f"Le must be absent or 1..{EXTENDED_MAX_NE}", status_word=SW.WRONG_LENGTH)


@dataclass(frozen=True)
class CommandApdu:
    """A command APDU.  ``le`` is Ne, the number of response bytes expected (None = no Le)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        _check_command(self.cla, self.ins, self.p1, self.p2, self.data, self.le, LocalError)

    @property
    def header(self) -> bytes:
        """CLA INS P1 P2 — what the secure channel binds as associated data."""
        return bytes((self.cla, self.ins, self.p1, self.p2))

    @property
    def is_short(self) -> bool:
        """True if the command fits the short form (phones only promise short APDUs)."""
        return len(self.data) <= SHORT_MAX_NC and (self.le is None or self.le <= SHORT_MAX_NE)

    def encode(self) -> bytes:
        """Wire bytes: short form whenever both Nc and Ne fit, extended otherwise."""
        if self.is_short:
            lc = bytes((len(self.data),)) if self.data else b""
            le = b"" if self.le is None else bytes((self.le % 256,))
        else:
            # The extended form starts with a single 00; Lc and Le are then two bytes each,
            # and when both are present the 00 marker is written only once (before Lc).
            lc = b"\x00" + len(self.data).to_bytes(2, "big") if self.data else b""
            if self.le is None:
                le = b""
            else:
                le = (self.le % 65536).to_bytes(2, "big")
                if not self.data:
                    le = b"\x00" + le
        return self.header + lc + self.data + le

    @classmethod
    def parse(cls, raw: bytes, *, short_only: bool = False) -> CommandApdu:
        """Decode a command; raise :class:`WrongLength` / :class:`DecodeError` if malformed.

        The extended form is legal even for a command that would fit the short form, so
        ``parse(raw).encode()`` may be shorter than ``raw``; the decoded command is the same.
        ``short_only=True`` refuses every extended-length command with 6700, as an HCE phone
        that only promises short APDUs does.
        """
        raw = bytes(raw)
        if len(raw) < HEADER_LEN:
            raise WrongLength(f"command APDU needs a 4-byte header, got {len(raw)} bytes")
        cla, ins, p1, p2 = raw[:HEADER_LEN]
        body = raw[HEADER_LEN:]
        n = len(body)
        data = b""
        le: int | None = None
        if n == 0:  # case 1
            pass
        elif n == 1:  # case 2S
            le = body[0] or SHORT_MAX_NE
        elif body[0] != 0:  # case 3S or 4S
            lc = body[0]
            if n == 1 + lc:
                data = body[1:]
            elif n == 2 + lc:
                data = body[1:-1]
                le = body[-1] or SHORT_MAX_NE
            else:
                raise WrongLength(f"short Lc={lc} inconsistent with {n}-byte body")
        elif short_only:
            raise WrongLength("extended-length APDUs are not supported")
        elif n == 3:  # case 2E
            le = int.from_bytes(body[1:3], "big") or EXTENDED_MAX_NE
        elif n < 3:
            raise WrongLength(f"{n}-byte body starting with 00 is neither short nor extended")
        else:  # case 3E or 4E
            lc = int.from_bytes(body[1:3], "big")
            if lc == 0:
                raise WrongLength("extended Lc must not be 0000")
            if n == 3 + lc:
                data = body[3:]
            elif n == 5 + lc:
                data = body[3:-2]
                le = int.from_bytes(body[-2:], "big") or EXTENDED_MAX_NE
            else:
                raise WrongLength(f"extended Lc={lc} inconsistent with {n}-byte body")
        _check_command(cla, ins, p1, p2, data, le, DecodeError)
        return cls(cla, ins, p1, p2, data, le)


@dataclass(frozen=True)
class ResponseApdu:
    """A response APDU: optional data then SW1 SW2."""

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        _check_response(self.data, self.sw, LocalError)

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        """Only 9000 is success; 61xx still needs GET RESPONSE before the data is complete."""
        return self.sw == SW.OK

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        """Decode a response; raise :class:`WrongLength` / :class:`DecodeError` if malformed."""
        raw = bytes(raw)
        if len(raw) < 2:
            raise WrongLength(f"response APDU needs SW1 SW2, got {len(raw)} bytes")
        data, sw = raw[:-2], int.from_bytes(raw[-2:], "big")
        _check_response(data, sw, DecodeError)
        return cls(data, sw)


def _check_response(data: bytes, sw: int, error: type[SwipepayError]) -> None:
    """Raise ``error`` unless ``data``/``sw`` form a response a card may send."""
    if not isinstance(data, bytes):
        raise error("data must be bytes")
    if len(data) > EXTENDED_MAX_NE:
        raise error(f"response data longer than {EXTENDED_MAX_NE} bytes",
                    status_word=SW.WRONG_LENGTH)
    if not 0 <= sw <= 0xFFFF or sw >> 8 not in VALID_SW1:
        raise error("SW1 must be '61'..'6F' or '90'..'9F'")


def select_by_name(aid: bytes, le: int | None = 256) -> CommandApdu:
    """SELECT by DF name (``00 A4 04 00 Lc AID [Le]``), first or only occurrence.

    With the default Le of 256 this is the ``00 A4 04 00 07 <AID> 00`` the phone link uses
    for the phone link.
    """
    if len(aid) not in DF_NAME_LEN:
        raise LocalError("a DF name / AID is 1 to 16 bytes")
    return CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes(aid), le)
