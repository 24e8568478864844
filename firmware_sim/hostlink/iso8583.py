"""ISO 8583 for the terminal <-> center link (hardware_notes/design.md §6), as data plus framing.

Everything here is pure: dicts and bytes in, dicts, dataclasses and bytes out.  The center's
TLS server (:mod:`center.server`) and the terminal's client (:mod:`drivers.host_tls`) both use
it, so the two sides can never disagree about a field.  The field map with worked examples is
``hardware_notes/iso8583.md``.

Encoding: pyiso8583's ``default_ascii`` spec with the overrides in :data:`SPEC_OVERRIDES` (binary
fields for the AES PIN block, the AES-DUKPT KSN, the phone's confirmation signature and the
balance the center seals for the phone).  No response carries a balance in clear (no field 54):
the terminal must never learn it (:mod:`firmware_sim.balance_seal`).

Speed: :func:`encode` and :func:`decode` take a direct path (:func:`_encode_plain`,
:func:`_decode_plain`) for the messages this link sends: every field of :data:`SPEC` is ASCII
text or binary with an ASCII length, so a message is a walk over a precomputed table.  Anything
off that path (a malformed body, a value that would not encode, a field outside the table) goes
to pyiso8583 itself, so results and errors are pyiso8583's by construction; the direct path
gives the same dict or bytes (property-tested against pyiso8583).  It takes ~5-7 us a
message where pyiso8583's general walk takes ~40-55 us, twice per request on the center.

Framing: the shared 2-byte length prefix of :mod:`firmware_sim.framing`, with bodies of 1 to
:data:`MAX_FRAME` bytes (:data:`FRAMING`): :func:`frame` and :class:`FrameDecoder` apply it.
"""

from __future__ import annotations

import binascii
import copy
import functools
import re
from dataclasses import dataclass
from typing import Any

import iso8583
import iso8583.specs

from swipepay.firmware_sim import framing
from swipepay.firmware_sim.balance_seal import SEALED_LEN
from swipepay.firmware_sim.errors import DecodeError
from swipepay.firmware_sim.framing import FrameError as FrameError
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.transaction import TXN_TYPES, Transaction, TxnType, is_decimal

#: Largest frame body we accept.  A full 0200 with every field of ours is < 400 bytes.
MAX_FRAME = 2048
#: The link's frames: never empty, never above MAX_FRAME.
FRAMING = framing.FrameLimits(min_length=1, max_length=MAX_FRAME)

#: Field overrides on top of pyiso8583's default_ascii (specs as data).
SPEC_OVERRIDES: dict[str, dict[str, Any]] = {
    "52": {
        "data_enc": "b",
        "len_enc": "ascii",
        "len_type": 0,
        "max_len": 16,
        "desc": "PIN block, ISO 9564-1 format 4 (AES, 16 bytes)",
    },
    "53": {
        "data_enc": "b",
        "len_enc": "ascii",
        "len_type": 0,
        "max_len": 12,
        "desc": "AES-DUKPT KSN (12 bytes)",
    },
    "62": {
        "data_enc": "b",
        "len_enc": "ascii",
        "len_type": 3,
        "max_len": 64,
        "desc": "Phone confirmation signature (ECDSA P-256 raw r||s, 64 bytes)",
    },
    "63": {
        "data_enc": "b",
        "len_enc": "ascii",
        "len_type": 3,
        "max_len": SEALED_LEN,
        "desc": "Balance sealed for the phone (AES-GCM under the KSN's DUKPT data key, 36 bytes)",
    },
}

SPEC: dict[str, dict[str, Any]] = copy.deepcopy(iso8583.specs.default_ascii)
for _field, _override in SPEC_OVERRIDES.items():
    SPEC[_field] = dict(_override)

#: Field 70 network management codes of 0800.
NETWORK_CODES: dict[str, str] = {"001": "sign-on", "002": "sign-off", "301": "echo"}

#: Mandatory fields per request MTI (checked before anything else is looked at).
MANDATORY: dict[str, frozenset[str]] = {
    "0800": frozenset({"7", "11", "41", "70"}),
    "0100": frozenset({"2", "3", "4", "7", "11", "14", "22", "41", "42", "49", "52", "53", "62"}),
    "0200": frozenset({"2", "3", "4", "7", "11", "14", "22", "41", "42", "49", "52", "53", "62"}),
    "0220": frozenset({"2", "3", "4", "7", "11", "41", "42", "49", "90"}),
    "0400": frozenset({"2", "3", "4", "7", "11", "41", "42", "49", "90"}),
}


@functools.lru_cache(maxsize=64)  # a pure function of 4 characters, asked once per message
def response_mti(mti: str) -> str | None:
    """The MTI that answers ``mti`` under ISO 8583:1987, or ``None`` if nothing answers it.

    Version digit 0, message class 1-8, function 0 (request) or 2 (advice), origin 0-5: the
    answer is the function + 1 (MTI + 10) from the first transmission's origin (a repeat,
    origin 1, 3 or 5, is answered like origin 0, 2 or 4: 0221 -> 0230).  Anything else (another
    version, class 0 or 9, a response, a notification, a reserved digit) gets no answer.
    """
    if len(mti) != 4 or not mti.isascii() or not mti.isdigit():
        return None
    version, cls, function, origin = mti[0], mti[1], mti[2], mti[3]
    if version != "0" or cls in "09" or function not in "02" or origin not in "012345":
        return None
    return f"0{cls}{int(function) + 1}{int(origin) & ~1}"


#: (MTI, first two digits of the processing code) -> transaction type.
TYPE_OF: dict[tuple[str, str], TxnType] = {
    (spec.mti, spec.processing_code[:2]): t for t, spec in TXN_TYPES.items()
}

#: Fields a response echoes from its request.
ECHOED = ("2", "3", "4", "7", "11", "41", "42", "49", "90")


class FrameDecoder(framing.FrameDecoder):
    """The link's sans-IO decoder: ``feed(data)`` returns complete bodies of 1..MAX_FRAME bytes."""

    def __init__(self) -> None:
        super().__init__(FRAMING)


def frame(body: bytes) -> bytes:
    """``body`` with its length prefix; FrameError for an empty or oversize body."""
    return framing.encode(body, FRAMING)


#: Field number -> (key, length digits (0: fixed length), maximum/fixed length, binary?) for
#: every field of :data:`SPEC` the direct paths handle (2..128 but 65, and ASCII lengths).
_PLAIN: dict[int, tuple[str, int, int, bool]] = {
    n: (str(n), spec["len_type"], spec["max_len"], spec["data_enc"] == "b")
    for n in range(2, 129)
    if n != 65
    and (spec := SPEC[str(n)]).get("len_count", "bytes") == "bytes"
    and spec["data_enc"] in ("ascii", "b")
    and (
        spec["len_type"] == 0
        or (spec["len_enc"] == "ascii" and spec["max_len"] < 10 ** spec["len_type"])
    )
}
_PLAIN_KEYS: dict[str, int] = {key: n for n, (key, *_) in _PLAIN.items()}
#: pyiso8583 ignores keys that are not numeric (``str.isnumeric``) besides these.
_SPECIAL_KEYS = frozenset({"t", "p", "1", "65", "h"})
_HEX16 = re.compile(rb"[0-9A-Fa-f]{16}")
_DIRECT = (
    SPEC["h"]["max_len"] <= 0
    and all(SPEC[k]["data_enc"] == "ascii" and SPEC[k]["max_len"] == 16 for k in ("p", "1"))
    and SPEC["t"]["data_enc"] == "ascii"
)


#: A field's place in a message: (key, length digits (0: fixed), maximum/fixed length, binary?).
_Slot = tuple[str, int, int, bool]
#: Layouts worked out once per set of keys (encoding) or per bitmap (decoding): messages of one
#: kind share them.  Bounded: emptied when full (a peer sending random bitmaps gains nothing).
_LAYOUTS_MAX = 512
_ENCODE_LAYOUTS: dict[tuple[str, ...], tuple[bytes, tuple[_Slot, ...]] | None] = {}
_DECODE_LAYOUTS: dict[bytes, tuple[int, str, str | None, tuple[_Slot, ...]] | None] = {}


def _encode_layout(keys: tuple[str, ...]) -> tuple[bytes, tuple[_Slot, ...]] | None:
    """The bitmap(s) and the fields in order for a message with ``keys``; ``None`` if a key is
    not a plain field (pyiso8583 then encodes, or names the error)."""
    numbers: list[int] = []
    for key in keys:
        n = _PLAIN_KEYS.get(key) if type(key) is str else None
        if n is not None:
            numbers.append(n)
        elif type(key) is not str or (key not in _SPECIAL_KEYS and key.isnumeric()):
            return None
    numbers.sort()
    bitmap = 0
    for n in numbers:
        bitmap |= 1 << (128 - n)
    if bitmap & ((1 << 64) - 1):
        bitmap |= 1 << 127  # field 1: the secondary bitmap follows
        head = b"%032X" % bitmap
    else:
        head = b"%016X" % (bitmap >> 64)
    return head, tuple(_PLAIN[n] for n in numbers)


def _encode_plain(fields: dict[str, Any]) -> bytes | None:
    """:func:`encode` for a message of plain fields, or ``None`` to let pyiso8583 do it."""
    mti = fields.get("t")
    if not _DIRECT or type(mti) is not str or len(mti) != 4 or not mti.isascii():
        return None
    keys = tuple(fields)
    try:
        layout = _ENCODE_LAYOUTS[keys]
    except KeyError:
        if len(_ENCODE_LAYOUTS) >= _LAYOUTS_MAX:
            _ENCODE_LAYOUTS.clear()
        layout = _ENCODE_LAYOUTS[keys] = _encode_layout(keys)
    if layout is None:
        return None
    head, slots = layout
    parts = [mti.encode("ascii") + head]
    for key, len_type, max_len, binary in slots:
        value = fields[key]
        if type(value) is not str:
            return None
        try:
            data = binascii.a2b_hex(value) if binary else value.encode("ascii")
        except (ValueError, UnicodeError):  # binascii.Error is a ValueError
            return None
        if len_type == 0:
            if len(data) != max_len:
                return None
        elif len(data) > max_len:
            return None
        else:
            parts.append(b"%0*d" % (len_type, len(data)))
        parts.append(data)
    return b"".join(parts)


def _decode_layout(raw: bytes) -> tuple[int, str, str | None, tuple[_Slot, ...]] | None:
    """Where the fields of ``raw`` start, its bitmap text(s) and its fields in order; ``None``
    if the bitmaps are not hex, announce a tertiary bitmap (field 65) or a field that is not
    plain."""
    if not _HEX16.fullmatch(raw, 4, 20):
        return None
    primary = raw[4:20].decode("ascii")
    bitmap = int(primary, 16) << 64
    secondary = None
    start = 20
    if bitmap >> 127:
        if not _HEX16.fullmatch(raw, 20, 36):
            return None
        secondary = raw[20:36].decode("ascii")
        bitmap |= int(secondary, 16)
        start = 36
        if bitmap & (1 << 63):  # field 65: a tertiary bitmap
            return None
    slots: list[_Slot] = []
    bits = bitmap & ~(1 << 127)
    while bits:  # the set bits, highest first: fields in ascending order
        top = bits.bit_length() - 1
        bits ^= 1 << top
        plain = _PLAIN.get(128 - top)
        if plain is None:
            return None
        slots.append(plain)
    return start, primary, secondary, tuple(slots)


_HIGH_NIBBLE = frozenset(b"89ABCDEFabcdef")


def _decode_plain(raw: bytes) -> dict[str, Any] | None:
    """:func:`decode` for a well-formed message of plain fields, or ``None`` to let pyiso8583
    decode it (and name what is wrong)."""
    if not _DIRECT or len(raw) < 20:
        return None
    bitmaps = raw[4:36] if raw[4] in _HIGH_NIBBLE else raw[4:20]
    try:
        layout = _DECODE_LAYOUTS[bitmaps]
    except KeyError:
        layout = _decode_layout(raw)
        if len(bitmaps) in (16, 32):  # a whole bitmap text: the next message may share it
            if len(_DECODE_LAYOUTS) >= _LAYOUTS_MAX:
                _DECODE_LAYOUTS.clear()
            _DECODE_LAYOUTS[bitmaps] = layout
    if layout is None:
        return None
    idx, primary, secondary, slots = layout
    try:
        out: dict[str, Any] = {"t": raw[:4].decode("ascii"), "p": primary}
    except UnicodeDecodeError:
        return None
    if secondary is not None:
        out["1"] = secondary
    end = len(raw)
    for key, len_type, max_len, binary in slots:
        if len_type:
            prefix = raw[idx : idx + len_type]
            if len(prefix) != len_type or not prefix.isdigit():
                return None
            length = int(prefix)
            if length > max_len:
                return None
            idx += len_type
        else:
            length = max_len
        if idx + length > end:
            return None
        data = raw[idx : idx + length]
        idx += length
        if binary:
            out[key] = data.hex().upper()
        else:
            try:
                out[key] = data.decode("ascii")
            except UnicodeDecodeError:
                return None
    return out if idx == end else None


def encode(fields: dict[str, Any]) -> bytes:
    """Encode a pyiso8583 dict with :data:`SPEC`; a wrong field is a DecodeError naming it."""
    plain = _encode_plain(fields)
    if plain is not None:
        return plain
    try:
        raw, _ = iso8583.encode(dict(fields), SPEC)
    except iso8583.EncodeError as exc:
        raise DecodeError(f"ISO 8583 encode: {exc}") from None
    return bytes(raw)


def decode(raw: bytes) -> dict[str, Any]:
    """Decode one message body; anything pyiso8583 refuses is a DecodeError (format error)."""
    if type(raw) is bytes:
        fields = _decode_plain(raw)
        if fields is not None:
            return fields
    try:
        fields, _ = iso8583.decode(raw, SPEC)
    except iso8583.DecodeError as exc:
        raise DecodeError(f"ISO 8583 decode: {exc}") from None
    except (ValueError, IndexError, KeyError) as exc:  # defensive: never a traceback
        raise DecodeError(f"ISO 8583 decode: {type(exc).__name__}") from None
    return dict(fields)


# -- typed requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkRequest:
    terminal_id: str
    stan: str
    transmitted_at: str
    code: str


@dataclass(frozen=True)
class ReversalRequest:
    """0400: undo (terminal, original STAN, original transmission time); ``amount`` given back."""

    terminal_id: str
    original_stan: str
    original_at: str
    amount: int | None  # None: all of it
    original_amount: int | None = None  # field 4: must be the amount of what it reverses


Request = NetworkRequest | ReversalRequest | AuthRequest


def _text(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key, "")
    return value if isinstance(value, str) else ""


def _number(fields: dict[str, Any], key: str) -> int:
    value = _text(fields, key)
    if not is_decimal(value):
        raise DecodeError(f"field {key} must be digits")
    return int(value)


def _original(fields: dict[str, Any]) -> tuple[str, str]:
    """Field 90: original MTI (4) + STAN (6) + transmission date/time (10) + zeros."""
    f90 = _text(fields, "90")
    if len(f90) != 42 or not is_decimal(f90):
        raise DecodeError("field 90 must be 42 digits")
    return f90[4:10], f90[10:20]


def original_data(mti: str, stan: str, transmitted_at: str) -> str:
    return f"{mti}{stan}{transmitted_at}".ljust(42, "0")


def parse_request(fields: dict[str, Any]) -> Request:
    """Turn a decoded request into a typed one; DecodeError (-> field 39 = 30) if it is not."""
    mti = _text(fields, "t")
    need = MANDATORY.get(mti)
    if need is None:
        raise DecodeError(f"unknown request MTI {mti!r}")
    if not need <= fields.keys():
        missing = sorted((k for k in need if k not in fields), key=int)
        raise DecodeError(f"MTI {mti} misses field(s) {', '.join(missing)}")
    tid = _text(fields, "41")
    if mti == "0800":
        if _text(fields, "70") not in NETWORK_CODES:
            raise DecodeError("unknown network management code")
        return NetworkRequest(tid, _text(fields, "11"), _text(fields, "7"), _text(fields, "70"))
    if mti == "0400":
        stan, at = _original(fields)
        amount = _number(fields, "4")
        give_back: int | None = None
        if "95" in fields:
            f95 = _text(fields, "95")
            if len(f95) != 42 or not is_decimal(f95):
                raise DecodeError("field 95 must be 42 digits")
            remaining = int(f95[:12])
            if remaining >= amount:
                raise DecodeError("field 95 actual amount must be below field 4")
            give_back = amount - remaining
        return ReversalRequest(tid, stan, at, give_back, amount)
    txn_type = TYPE_OF.get((mti, _text(fields, "3")[:2]))
    if txn_type is None:
        raise DecodeError(f"processing code {_text(fields, '3')!r} not valid with MTI {mti}")
    original_stan = original_at = None
    if mti == "0220":
        original_stan, original_at = _original(fields)
    try:
        txn = Transaction(
            type=txn_type,
            amount=_number(fields, "4"),
            pan=_text(fields, "2"),
            expiry=_text(fields, "14"),
            terminal_id=tid,
            merchant_id=_text(fields, "42").rstrip(),
            stan=_text(fields, "11"),
            transmitted_at=_text(fields, "7"),
            currency=_text(fields, "49"),
            entry_mode=_text(fields, "22")[:2] or "05",
            original_stan=original_stan,
            original_at=original_at,
            auth_code=_text(fields, "38") or None,
        )
    except TypeError as exc:
        raise DecodeError(f"bad transaction fields: {type(exc).__name__}") from None
    return AuthRequest(txn, _binary(fields, "52"), _binary(fields, "53"), _binary(fields, "62"))


def _binary(fields: dict[str, Any], key: str) -> bytes | None:
    """pyiso8583 gives binary fields as hex text; we want bytes."""
    value = fields.get(key)
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError(f"field {key} is not binary data") from None


# -- building messages -------------------------------------------------------------------------


def request_fields(req: AuthRequest) -> dict[str, Any]:
    """The pyiso8583 dict of a 0100/0200/0220 for ``req``."""
    txn = req.txn
    spec = TXN_TYPES[txn.type]
    fields: dict[str, Any] = {
        "t": spec.mti,
        "2": txn.pan,
        "3": spec.processing_code,
        "4": f"{txn.amount:012d}",
        "7": txn.transmitted_at,
        "11": txn.stan,
        "22": (txn.entry_mode + "1")[:3],
        "41": txn.terminal_id,
        "42": txn.merchant_id.ljust(15),
        "49": txn.currency,
    }
    if txn.expiry:
        fields["14"] = txn.expiry
    if txn.auth_code:
        fields["38"] = txn.auth_code
    if txn.original_stan and txn.original_at:
        fields["90"] = original_data(
            TXN_TYPES[TxnType.PREAUTH].mti, txn.original_stan, txn.original_at
        )
    for key, value in (("52", req.pin_block), ("53", req.ksn), ("62", req.confirmation)):
        if value is not None:
            fields[key] = bytes(value).hex().upper()  # pyiso8583 carries binary as hex text
    return fields


def reversal_fields(txn: Transaction, amount: int | None = None) -> dict[str, Any]:
    """0400 reversing ``txn``; ``amount`` given back (None: all of it; else field 95)."""
    spec = TXN_TYPES[txn.type]
    fields: dict[str, Any] = {
        "t": "0400",
        "2": txn.pan,
        "3": spec.processing_code,
        "4": f"{txn.amount:012d}",
        "7": txn.transmitted_at,
        "11": txn.stan,
        "41": txn.terminal_id,
        "42": txn.merchant_id.ljust(15),
        "49": txn.currency,
        "90": original_data(spec.mti, txn.stan, txn.transmitted_at),
    }
    if amount is not None:
        fields["95"] = f"{txn.amount - amount:012d}".ljust(42, "0")
    return fields


def network_fields(terminal_id: str, stan: str, transmitted_at: str, code: str) -> dict[str, Any]:
    return {"t": "0800", "7": transmitted_at, "11": stan, "41": terminal_id, "70": code}


def response_fields(request: dict[str, Any], response: AuthResponse) -> dict[str, Any]:
    """The response to a decoded request: its MTI +10, echoed fields, 38, 39, 44 and 63."""
    mti = _text(request, "t")
    answer = response_mti(mti)
    if answer is None:
        raise DecodeError(f"MTI {mti!r} is never answered")
    out: dict[str, Any] = {"t": answer}
    for key in ECHOED:
        value = request.get(key)
        if isinstance(value, str):
            out[key] = value
    if mti == "0800" and isinstance(request.get("70"), str):
        out["70"] = request["70"]
    out["39"] = response.response_code
    if response.auth_code:
        out["38"] = response.auth_code
    if response.sealed_balance is not None:
        out["63"] = bytes(response.sealed_balance).hex().upper()
    if response.message:
        out["44"] = response.message.encode("ascii", "replace").decode("ascii")[:25]
    return out


def format_error_fields(raw: bytes, reason: str) -> dict[str, Any] | None:
    """A field-39 = 30 answer (MTI + 10) to a body we could not use, or None when its MTI has no
    answer (:func:`response_mti`; then the only safe answer is to close the connection)."""
    try:
        fields = decode(raw)
    except DecodeError:
        fields = {"t": raw[:4].decode("ascii", "replace")}
    if response_mti(_text(fields, "t")) is None:
        return None
    return response_fields(fields, AuthResponse("30", message=reason[:25]))


def parse_response(fields: dict[str, Any]) -> AuthResponse:
    """Read an answer's 39, 38, 44 and 63 into an :class:`AuthResponse` (63 stays opaque)."""
    code = _text(fields, "39")
    if len(code) != 2:
        raise DecodeError("response has no field 39")
    return AuthResponse(
        code,
        auth_code=_text(fields, "38") or None,
        message=_text(fields, "44"),
        sealed_balance=_binary(fields, "63"),
    )
