"""The compact terminal certificate (hardware_notes/design.md §4): which merchant a phone pays.

Before the user types a PIN, the phone must know that the terminal really belongs to the merchant
it is about to show.  The acquirer CA signs a small certificate binding a terminal ID, a merchant
ID and display name, and the terminal's P-256 key; the phone checks it against the CA key it got at
enrollment and then shows the merchant name *from the certificate*, never from the request.

X.509 does not fit: the terminal-authentication command must carry the certificate, a 64-byte
signature and TLV overhead in one short APDU (≤ 255 data bytes).  So the layout is fixed binary,
at most 155 bytes (with a 24-byte merchant name):

======  =================  ======  ========================================================
offset  field              length  content
======  =================  ======  ========================================================
0       version            1       ``0x01``
1       terminal_id        8       printable ASCII (0x20..0x7E), ISO 8583 field 41
9       merchant_id        15      printable ASCII (0x20..0x7E), ISO 8583 field 42
24      merchant_name_len  1       *n*, 1..24
25      merchant_name      *n*     UTF-8, no control/format characters, no edge whitespace
25+n    public_key         33      terminal's P-256 key, SEC1 compressed point
58+n    not_before         4       unix seconds, unsigned big-endian, inclusive
62+n    not_after          4       unix seconds, unsigned big-endian, inclusive
66+n    ca_key_index       1       which acquirer CA key signed (0..255)
67+n    signature          64      raw ``r || s`` ECDSA P-256 over the digest below
======  =================  ======  ========================================================

Total length is exactly ``131 + n``.  The signature covers
``SHA-256(b"swipepay/cert/v1" || bytes[0 : 67+n])``; the domain prefix keeps a certificate
signature from ever being valid as any other swipepay signature made with a CA key.

The merchant name is what the user trusts before typing a PIN, so it is refused (never repaired)
if it holds control, format (e.g. bidi overrides such as U+202E), private-use or line-separator
characters, or leading/trailing whitespace: what the phone shows must be exactly what the CA
approved.  Every :class:`TerminalCertificate` instance satisfies these rules, so ``encode()`` of
any instance parses back to an equal instance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.firmware_sim.ecc import (
    POINT_LEN,
    SIGNATURE_LEN,
    decode_point,
    sign_prehashed,
    verify_prehashed,
)
from swipepay.firmware_sim.errors import DecodeError, LocalError, SecurityError, SwipepayError

VERSION = 0x01
#: Domain-separation prefix of the signed digest.
SIGNATURE_DOMAIN = b"swipepay/cert/v1"

TERMINAL_ID_LEN = 8
MERCHANT_ID_LEN = 15
MERCHANT_NAME_MAX = 24
TIME_LEN = 4
MAX_TIME = 2**32 - 1

#: The layout as data: (field name, length); ``None`` means "length given by the byte before".
LAYOUT: tuple[tuple[str, int | None], ...] = (
    ("version", 1),
    ("terminal_id", TERMINAL_ID_LEN),
    ("merchant_id", MERCHANT_ID_LEN),
    ("merchant_name_len", 1),
    ("merchant_name", None),
    ("public_key", POINT_LEN),
    ("not_before", TIME_LEN),
    ("not_after", TIME_LEN),
    ("ca_key_index", 1),
    ("signature", SIGNATURE_LEN),
)

#: Bytes of everything except the merchant name (131).
FIXED_LEN = sum(length for _, length in LAYOUT if length is not None)
MIN_LEN = FIXED_LEN + 1
MAX_LEN = FIXED_LEN + MERCHANT_NAME_MAX

#: Unicode categories refused in a merchant name: control, format (bidi overrides, zero-width
#: characters), surrogate, private use, line and paragraph separators.
_FORBIDDEN_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


class CertificateError(SecurityError):
    """A terminal certificate is well formed but must not be trusted (status 6982)."""


def _check_ascii(name: str, value: str, length: int, error: type[SwipepayError]) -> None:
    if not isinstance(value, str) or len(value) != length:
        raise error(f"certificate: {name} must be {length} characters")
    if not all(0x20 <= ord(ch) <= 0x7E for ch in value):
        raise error(f"certificate: {name} must be printable ASCII")


def _check_name(value: str, error: type[SwipepayError]) -> bytes:
    """Validate a merchant name and return its UTF-8 bytes."""
    if not isinstance(value, str):
        raise error("certificate: merchant_name must be a string")
    for ch in value:
        if unicodedata.category(ch) in _FORBIDDEN_NAME_CATEGORIES:
            raise error(f"certificate: merchant_name contains forbidden character U+{ord(ch):04X}")
    if value != value.strip():
        raise error("certificate: merchant_name has leading or trailing whitespace")
    raw = value.encode("utf-8")
    if not 1 <= len(raw) <= MERCHANT_NAME_MAX:
        raise error(
            f"certificate: merchant_name must be 1..{MERCHANT_NAME_MAX} UTF-8 bytes, got {len(raw)}"
        )
    return raw


def _check_fields(
    *,
    terminal_id: str,
    merchant_id: str,
    merchant_name: str,
    public_key: bytes,
    not_before: int,
    not_after: int,
    ca_key_index: int,
    error: type[SwipepayError],
) -> None:
    """The rules every certificate obeys; ``error`` says whose fault a violation is."""
    _check_ascii("terminal_id", terminal_id, TERMINAL_ID_LEN, error)
    _check_ascii("merchant_id", merchant_id, MERCHANT_ID_LEN, error)
    _check_name(merchant_name, error)
    try:
        decode_point(public_key)
    except DecodeError as exc:
        raise error(f"certificate: {exc}") from None
    for name, value in (("not_before", not_before), ("not_after", not_after)):
        if not isinstance(value, int) or not 0 <= value <= MAX_TIME:
            raise error(f"certificate: {name} must be an integer in 0..{MAX_TIME}")
    if not_before > not_after:
        raise error("certificate: not_before is after not_after")
    if not isinstance(ca_key_index, int) or not 0 <= ca_key_index <= 0xFF:
        raise error("certificate: ca_key_index must be in 0..255")


@dataclass(frozen=True)
class TerminalCertificate:
    """One terminal's certificate; construct it with :func:`issue_certificate` or
    :func:`parse_certificate`.  Building an invalid one directly raises :class:`LocalError`."""

    terminal_id: str
    merchant_id: str
    merchant_name: str
    public_key: bytes
    not_before: int
    not_after: int
    ca_key_index: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_fields(
            terminal_id=self.terminal_id,
            merchant_id=self.merchant_id,
            merchant_name=self.merchant_name,
            public_key=self.public_key,
            not_before=self.not_before,
            not_after=self.not_after,
            ca_key_index=self.ca_key_index,
            error=LocalError,
        )
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LEN:
            raise LocalError(f"certificate: signature must be {SIGNATURE_LEN} bytes")

    def tbs_bytes(self) -> bytes:
        """Everything before the signature, exactly as encoded (the signed part)."""
        name = self.merchant_name.encode("utf-8")
        return b"".join(
            (
                bytes([VERSION]),
                self.terminal_id.encode("ascii"),
                self.merchant_id.encode("ascii"),
                bytes([len(name)]),
                name,
                self.public_key,
                self.not_before.to_bytes(TIME_LEN, "big"),
                self.not_after.to_bytes(TIME_LEN, "big"),
                bytes([self.ca_key_index]),
            )
        )

    def tbs_digest(self) -> bytes:
        """The SHA-256 digest the CA signs: domain prefix, then :meth:`tbs_bytes`."""
        return hashlib.sha256(SIGNATURE_DOMAIN + self.tbs_bytes()).digest()

    def encode(self) -> bytes:
        """The wire form (see the module docstring), at most :data:`MAX_LEN` bytes."""
        return self.tbs_bytes() + self.signature

    def terminal_key(self) -> ec.EllipticCurvePublicKey:
        """The terminal's public key, for checking its transcript signature."""
        return decode_point(self.public_key)


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_key_index: int,
    *,
    terminal_id: str,
    merchant_id: str,
    merchant_name: str,
    public_key: bytes,
    not_before: int,
    not_after: int,
) -> TerminalCertificate:
    """Sign a certificate with the acquirer CA key (lab set-up and tests; the CA's side).

    Bad input raises :class:`LocalError`; a too-long merchant name is refused, not truncated,
    because a silently shortened name is a name the merchant never asked for.
    """
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or not isinstance(
        ca_key.curve, ec.SECP256R1
    ):
        raise LocalError("certificate: CA key must be a P-256 private key")
    _check_fields(
        terminal_id=terminal_id,
        merchant_id=merchant_id,
        merchant_name=merchant_name,
        public_key=public_key,
        not_before=not_before,
        not_after=not_after,
        ca_key_index=ca_key_index,
        error=LocalError,
    )
    unsigned = TerminalCertificate(
        terminal_id=terminal_id,
        merchant_id=merchant_id,
        merchant_name=merchant_name,
        public_key=bytes(public_key),
        not_before=not_before,
        not_after=not_after,
        ca_key_index=ca_key_index,
        signature=bytes(SIGNATURE_LEN),
    )
    return dataclasses.replace(unsigned, signature=sign_prehashed(ca_key, unsigned.tbs_digest()))


def _split(data: bytes) -> dict[str, bytes]:
    """Cut ``data`` into the fields of :data:`LAYOUT`; check only the lengths."""
    if len(data) < MIN_LEN:
        raise DecodeError(f"certificate: {len(data)} bytes, at least {MIN_LEN} needed")
    fields: dict[str, bytes] = {}
    offset = 0
    for name, length in LAYOUT:
        if length is None:
            length = fields[f"{name}_len"][0]
            if not 1 <= length <= MERCHANT_NAME_MAX:
                raise DecodeError(
                    f"certificate: {name}_len {length} at byte {offset - 1} "
                    f"is outside 1..{MERCHANT_NAME_MAX}"
                )
            if len(data) != FIXED_LEN + length:
                raise DecodeError(
                    f"certificate: {len(data)} bytes, expected {FIXED_LEN + length} "
                    f"for a {length}-byte {name}"
                )
        fields[name] = data[offset : offset + length]
        offset += length
    return fields


def parse_certificate(data: bytes) -> TerminalCertificate:
    """Parse the wire form strictly; anything but a well-formed certificate is a DecodeError.

    Parsing does not check the signature or the validity: call :func:`verify_certificate`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalError("certificate: parse_certificate needs bytes")
    data = bytes(data)
    fields = _split(data)
    if fields["version"][0] != VERSION:
        raise DecodeError(f"certificate: version 0x{fields['version'][0]:02X} at byte 0 unknown")
    texts: dict[str, str] = {}
    for name in ("terminal_id", "merchant_id"):
        try:
            texts[name] = fields[name].decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError(f"certificate: {name} is not ASCII") from None
    try:
        texts["merchant_name"] = fields["merchant_name"].decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("certificate: merchant_name is not valid UTF-8") from None
    not_before = int.from_bytes(fields["not_before"], "big")
    not_after = int.from_bytes(fields["not_after"], "big")
    ca_key_index = fields["ca_key_index"][0]
    _check_fields(
        terminal_id=texts["terminal_id"],
        merchant_id=texts["merchant_id"],
        merchant_name=texts["merchant_name"],
        public_key=fields["public_key"],
        not_before=not_before,
        not_after=not_after,
        ca_key_index=ca_key_index,
        error=DecodeError,
    )
    return TerminalCertificate(
        terminal_id=texts["terminal_id"],
        merchant_id=texts["merchant_id"],
        merchant_name=texts["merchant_name"],
        public_key=fields["public_key"],
        not_before=not_before,
        not_after=not_after,
        ca_key_index=ca_key_index,
        signature=fields["signature"],
    )


def verify_certificate(
    cert: TerminalCertificate,
    ca_keys: Mapping[int, ec.EllipticCurvePublicKey],
    now: int,
    revoked: Collection[str] = (),
) -> None:
    """Raise :class:`CertificateError` unless ``cert`` is trustworthy at ``now`` (unix seconds).

    Checks, in this order, so nothing unauthenticated is looked at before the signature: the CA
    key index is known, the CA signature verifies, ``not_before <= now <= not_after`` (both ends
    inclusive), and the terminal ID is not in ``revoked``.
    """
    ca_key = ca_keys.get(cert.ca_key_index)
    if ca_key is None:
        raise CertificateError(f"certificate: unknown CA key index {cert.ca_key_index}")
    try:
        verify_prehashed(ca_key, cert.tbs_digest(), cert.signature, what="CA signature")
    except SecurityError as exc:
        raise CertificateError(f"certificate: {exc}") from None
    if now < cert.not_before:
        raise CertificateError("certificate: not yet valid")
    if now > cert.not_after:
        raise CertificateError("certificate: expired")
    if cert.terminal_id in revoked:
        raise CertificateError(f"certificate: terminal {cert.terminal_id} is revoked")


__all__ = [
    "FIXED_LEN",
    "LAYOUT",
    "MAX_LEN",
    "MERCHANT_NAME_MAX",
    "MIN_LEN",
    "SIGNATURE_DOMAIN",
    "VERSION",
    "CertificateError",
    "TerminalCertificate",
    "issue_certificate",
    "parse_certificate",
    "verify_certificate",
]
