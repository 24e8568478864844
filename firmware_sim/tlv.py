"""BER-TLV as EMV uses it (EMV Book 3 Annex B, ISO/IEC 7816-4 5.2): FCI, GPO, records, PDOL.

Cards and phones are outside parties, so every byte here is hostile until parsed: lengths are
checked against what is really there, nesting is bounded by :data:`MAX_DEPTH` (a card cannot
make the terminal recurse without limit), and every failure is a
:class:`~firmware_sim.errors.DecodeError` that says at which offset and why.

Conventions:

* A tag is an ``int`` of its encoded bytes, big-endian: ``0x9F38``, ``0xBF0C``.
* Lengths: short form (``00``-``7F``) and long form with 1 to 3 length bytes (``81``-``83``).
  The indefinite form ``80`` is not BER-TLV in EMV and is refused.  Non-minimal long forms
  (``81 05``) are accepted on input because cards send them; output is always minimal.
* ``00`` and ``FF`` bytes before, between and after objects are padding (EMV Book 3 Annex B1,
  ISO/IEC 7816-4 5.2) and are skipped.  Therefore no tag may start with ``00`` or ``FF``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from swipepay.firmware_sim.errors import DecodeError, LocalError

#: How deep constructed objects may nest before we stop (EMV needs 3-4 levels).
MAX_DEPTH: Final = 16
#: Longest tag we accept, in bytes (EMV uses 1-2; BER allows more, nobody needs more than 4).
MAX_TAG_BYTES: Final = 4
#: Long-form length prefix (81, 82, 83) -> number of length bytes that follow.
LONG_LENGTH_BYTES: Final[dict[int, int]] = {0x81: 1, 0x82: 2, 0x83: 3}
MAX_LENGTH: Final = 0xFFFFFF
#: Bytes that are padding when found where a tag should start.
PADDING: Final = frozenset({0x00, 0xFF})
CONSTRUCTED_BIT: Final = 0x20
MORE_TAG_BYTES: Final = 0x1F
NEXT_TAG_BYTE_FOLLOWS: Final = 0x80

#: Common EMV tags (EMV Book 3 Annex A, EMV Contactless Book A/C).
EMV_TAG_NAMES: Final[dict[int, str]] = {
    0x42: "Issuer Identification Number",
    0x4F: "Application Identifier (AID)",
    0x50: "Application Label",
    0x57: "Track 2 Equivalent Data",
    0x5A: "Application Primary Account Number (PAN)",
    0x5F20: "Cardholder Name",
    0x5F24: "Application Expiration Date",
    0x5F25: "Application Effective Date",
    0x5F28: "Issuer Country Code",
    0x5F2A: "Transaction Currency Code",
    0x5F2D: "Language Preference",
    0x5F30: "Service Code",
    0x5F34: "PAN Sequence Number",
    0x61: "Application Template",
    0x6F: "File Control Information (FCI) Template",
    0x70: "READ RECORD Response Message Template",
    0x77: "Response Message Template Format 2",
    0x80: "Response Message Template Format 1",
    0x82: "Application Interchange Profile",
    0x83: "Command Template",
    0x84: "Dedicated File (DF) Name",
    0x87: "Application Priority Indicator",
    0x88: "Short File Identifier (SFI)",
    0x8C: "Card Risk Management Data Object List 1 (CDOL1)",
    0x8D: "Card Risk Management Data Object List 2 (CDOL2)",
    0x8E: "Cardholder Verification Method (CVM) List",
    0x8F: "Certification Authority Public Key Index",
    0x90: "Issuer Public Key Certificate",
    0x94: "Application File Locator (AFL)",
    0x95: "Terminal Verification Results",
    0x9A: "Transaction Date",
    0x9C: "Transaction Type",
    0x9F02: "Amount, Authorised (Numeric)",
    0x9F03: "Amount, Other (Numeric)",
    0x9F07: "Application Usage Control",
    0x9F08: "Application Version Number",
    0x9F10: "Issuer Application Data",
    0x9F11: "Issuer Code Table Index",
    0x9F12: "Application Preferred Name",
    0x9F1A: "Terminal Country Code",
    0x9F26: "Application Cryptogram",
    0x9F27: "Cryptogram Information Data",
    0x9F32: "Issuer Public Key Exponent",
    0x9F33: "Terminal Capabilities",
    0x9F34: "Cardholder Verification Method (CVM) Results",
    0x9F35: "Terminal Type",
    0x9F36: "Application Transaction Counter (ATC)",
    0x9F37: "Unpredictable Number",
    0x9F38: "Processing Options Data Object List (PDOL)",
    0x9F4D: "Log Entry",
    0x9F66: "Terminal Transaction Qualifiers (TTQ)",
    0x9F6C: "Card Transaction Qualifiers (CTQ)",
    0xA5: "File Control Information (FCI) Proprietary Template",
    0xBF0C: "File Control Information (FCI) Issuer Discretionary Data",
}


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    """Return ``(tag, next position)`` for the tag starting at ``pos``."""
    start = pos
    first = data[pos]
    pos += 1
    if first & MORE_TAG_BYTES == MORE_TAG_BYTES:
        while True:
            if pos >= len(data):
                raise DecodeError(f"TLV: tag at offset {start} is truncated")
            more = data[pos] & NEXT_TAG_BYTE_FOLLOWS
            pos += 1
            if pos - start > MAX_TAG_BYTES:
                raise DecodeError(
                    f"TLV: tag at offset {start} is longer than {MAX_TAG_BYTES} bytes"
                )
            if not more:
                break
    return int.from_bytes(data[start:pos], "big"), pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    """Return ``(length, next position)`` for the BER length starting at ``pos``."""
    if pos >= len(data):
        raise DecodeError(f"TLV: length missing at offset {pos}")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = LONG_LENGTH_BYTES.get(first)
    if count is None:
        raise DecodeError(f"TLV: unsupported length byte {first:02X} at offset {pos}")
    end = pos + 1 + count
    if end > len(data):
        raise DecodeError(f"TLV: length at offset {pos} is truncated")
    return int.from_bytes(data[pos + 1 : end], "big"), end


def _iter_tlv(data: bytes) -> Iterator[Tlv]:
    """Yield the top-level objects of ``data``, skipping 00/FF padding."""
    pos = 0
    while pos < len(data):
        if data[pos] in PADDING:
            pos += 1
            continue
        start = pos
        tag, pos = _read_tag(data, pos)
        length, pos = _read_length(data, pos)
        end = pos + length
        if end > len(data):
            raise DecodeError(
                f"TLV: tag {tag:X} at offset {start} needs {length} value bytes, "
                f"{len(data) - pos} left"
            )
        yield Tlv(tag, data[pos:end])
        pos = end


def _tag_bytes(tag: int) -> bytes:
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode_tag(tag: int) -> bytes:
    """Encoded bytes of ``tag``; :class:`LocalError` if it is not a well-formed BER tag.

    Well formed: 1 to :data:`MAX_TAG_BYTES` bytes, not starting with a padding byte, and the
    "more bytes" bits set exactly where BER says (the first byte ends in 11111 iff more follow;
    each subsequent byte has bit 8 set iff yet another follows).
    """
    if tag <= 0:
        raise LocalError("TLV tag must be a positive integer")
    raw = _tag_bytes(tag)
    if len(raw) > MAX_TAG_BYTES or raw[0] in PADDING:
        raise LocalError(f"{tag:X} is not a valid BER-TLV tag")
    try:
        parsed, end = _read_tag(raw, 0)
    except DecodeError:
        raise LocalError(f"{tag:X} is not a valid BER-TLV tag") from None
    if end != len(raw) or parsed != tag:
        raise LocalError(f"{tag:X} is not a valid BER-TLV tag")
    return raw


def encode_length(length: int) -> bytes:
    """Minimal BER length: one byte below 128, else ``81``/``82``/``83`` and 1-3 bytes."""
    if not 0 <= length <= MAX_LENGTH:
        raise LocalError(f"TLV length must be 0..{MAX_LENGTH}")
    if length < 0x80:
        return bytes((length,))
    for prefix, count in LONG_LENGTH_BYTES.items():
        if length < 1 << (8 * count):
            return bytes((prefix,)) + length.to_bytes(count, "big")
    raise AssertionError("unreachable: MAX_LENGTH fits 3 bytes")  # pragma: no cover


def is_constructed(tag: int) -> bool:
    """Bit 6 of the tag's first byte: the value is itself a series of TLV objects."""
    return bool(_tag_bytes(tag)[0] & CONSTRUCTED_BIT)


@dataclass(frozen=True)
class Tlv:
    """One data object: its tag (as an int) and its raw value."""

    tag: int
    value: bytes

    def __post_init__(self) -> None:
        encode_tag(self.tag)
        if len(self.value) > MAX_LENGTH:
            raise LocalError(f"TLV value longer than {MAX_LENGTH} bytes")

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    @property
    def name(self) -> str | None:
        """The EMV name of the tag, if it is in :data:`EMV_TAG_NAMES`."""
        return EMV_TAG_NAMES.get(self.tag)

    def children(self) -> list[Tlv]:
        """The objects inside a constructed value; a primitive object has none."""
        return parse_tlv(self.value) if self.constructed else []

    def encode(self) -> bytes:
        return encode_tlv(self.tag, self.value)


def parse_tlv(data: bytes) -> list[Tlv]:
    """Top-level objects of ``data``; constructed values stay closed (see :meth:`Tlv.children`)."""
    return list(_iter_tlv(bytes(data)))


def encode_tlv(tag: int, value: bytes) -> bytes:
    return encode_tag(tag) + encode_length(len(value)) + bytes(value)


def _walk(data: bytes, depth: int) -> Iterator[Tlv]:
    """Depth-first, pre-order: each object, then (if constructed) what is inside it."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"TLV: constructed objects nested deeper than {MAX_DEPTH}")
    for tlv in _iter_tlv(data):
        yield tlv
        if tlv.constructed:
            yield from _walk(tlv.value, depth + 1)


def find_all(data: bytes, tag: int) -> list[bytes]:
    """Values of every object with ``tag``, at any depth, in document order.

    The whole structure is walked, so malformed data anywhere raises :class:`DecodeError`
    even if a match came earlier: half-parsed card data is not trusted.
    """
    return [tlv.value for tlv in _walk(bytes(data), 1) if tlv.tag == tag]


def find_tag(data: bytes, tag: int) -> bytes | None:
    """Value of the first object with ``tag`` (depth-first), or ``None``."""
    found = find_all(data, tag)
    return found[0] if found else None


def parse_dol(data: bytes) -> list[tuple[int, int]]:
    """A data object list (PDOL 9F38, CDOL1 8C, ...): ``(tag, length)`` pairs, no values.

    Tags and lengths use the same BER rules as full objects.  Padding is not allowed inside a
    DOL (a ``00`` there would be a malformed tag, not filler).
    """
    data = bytes(data)
    entries: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        if data[pos] in PADDING:
            raise DecodeError(f"DOL: byte {data[pos]:02X} at offset {pos} is not a tag")
        tag, pos = _read_tag(data, pos)
        length, pos = _read_length(data, pos)
        entries.append((tag, length))
    return entries


def encode_dol(entries: list[tuple[int, int]]) -> bytes:
    """Inverse of :func:`parse_dol` (for simulated cards that publish a PDOL)."""
    return b"".join(encode_tag(tag) + encode_length(length) for tag, length in entries)
