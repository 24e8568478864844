"""Byte layout of the phone link, as data (documented in hardware_notes/phone-link.md).

Commands after SELECT use the proprietary class ``80``.  Every body is BER-TLV with private tags;
after terminal authentication every command and response body is one secure-channel frame
(``counter(4) || AES-GCM ciphertext || tag(16)``) whose plaintext is again TLV.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

from swipepay.firmware_sim.balance_seal import SEALED_LEN
from swipepay.firmware_sim.errors import ConfigError, DecodeError
from swipepay.firmware_sim.tlv import encode_tlv, parse_tlv
from swipepay.firmware_sim.transaction import is_decimal

#: "F0" + "SWPAY" + 01 (hardware_notes/design.md §4): the default AID; a bench may choose
#: another (``--aid``, the lab's ``aid``), e.g. one a relay app on Android already registers.
AID = bytes.fromhex("F0535750415901")
#: ISO/IEC 7816-4: an application identifier is 5 to 16 bytes.
AID_LENGTHS = range(5, 17)
PROTOCOL_VERSION = 1
CLA_ISO = 0x00
CLA_PROPRIETARY = 0x80

#: Short APDU limits every command and response must stay within.
MAX_COMMAND_DATA = 255
MAX_RESPONSE_DATA = 256

TOKEN_LEN = 16
NONCE_LEN = 16
UID_TOKEN_DOMAIN = b"swipepay/uid"


def parse_aid(text: str) -> bytes:
    """An AID given as hex (``F04E66E75C02D8``, spaces allowed); ConfigError if it is not one."""
    try:
        aid = bytes.fromhex(text.replace(" ", ""))
    except ValueError:
        raise ConfigError(f"AID {text!r} is not hex") from None
    if len(aid) not in AID_LENGTHS:
        raise ConfigError(f"an AID is 5 to 16 bytes, not {len(aid)}")
    return aid


class Ins(IntEnum):
    """Instruction bytes of the phone link."""

    SELECT = 0xA4
    CONNECT = 0x10
    AUTHENTICATE = 0x12
    PAYMENT_REQUEST = 0x20
    GET_CONFIRMATION = 0x30
    RESULT = 0x40


#: Tags (private class, single byte) used in phone-link bodies.
class Tag(IntEnum):
    FCI = 0x6F
    DF_NAME = 0x84
    FCI_PROPRIETARY = 0xA5
    VERSION = 0xC0
    USER_TOKEN = 0xC1
    TERMINAL_NONCE = 0xC2
    TERMINAL_KEY = 0xC3
    PHONE_NONCE = 0xC4
    PHONE_KEY = 0xC5
    CERTIFICATE = 0xC6
    TERMINAL_SIGNATURE = 0xC7
    KEY_CONFIRMATION = 0xC8
    TXN_TYPE = 0xD1
    AMOUNT = 0xD2
    CURRENCY = 0xD3
    STAN = 0xD4
    TRANSMITTED_AT = 0xD5
    STATUS = 0xE1
    PIN_BLOCK = 0xE2
    KSN = 0xE3
    SIGNATURE = 0xE4
    RESPONSE_CODE = 0xE5
    AUTH_CODE = 0xE6
    SEALED_BALANCE = 0xE7


class ConfirmationStatus(IntEnum):
    """What GET CONFIRMATION reports: the phone answers PENDING at once while the user acts."""

    PENDING = 0x00
    APPROVED = 0x01
    DECLINED = 0x02
    TIMED_OUT = 0x03


def user_token(terminal_nonce: bytes, card_id: bytes) -> bytes:
    """First 16 bytes of SHA-256("swipepay/uid" ‖ terminal nonce ‖ card identifier).

    The clear PAN never goes on the air; a fresh nonce per transaction makes tokens unlinkable.
    """
    return hashlib.sha256(UID_TOKEN_DOMAIN + terminal_nonce + card_id).digest()[:TOKEN_LEN]


#: Exact lengths of fixed-size fields, checked on every decode.
FIXED_LENGTHS: dict[int, int] = {
    Tag.USER_TOKEN: TOKEN_LEN,
    Tag.TERMINAL_NONCE: NONCE_LEN,
    Tag.TERMINAL_KEY: 33,
    Tag.PHONE_NONCE: NONCE_LEN,
    Tag.PHONE_KEY: 33,
    Tag.TERMINAL_SIGNATURE: 64,
    Tag.KEY_CONFIRMATION: 16,
    Tag.TXN_TYPE: 1,
    Tag.AMOUNT: 6,
    Tag.CURRENCY: 2,
    Tag.STAN: 3,
    Tag.TRANSMITTED_AT: 5,
    Tag.STATUS: 1,
    Tag.PIN_BLOCK: 16,
    Tag.KSN: 12,
    Tag.SIGNATURE: 64,
    Tag.RESPONSE_CODE: 2,
    Tag.AUTH_CODE: 6,
    Tag.SEALED_BALANCE: SEALED_LEN,
    Tag.VERSION: 1,
}


def encode_fields(fields: list[tuple[int, bytes]]) -> bytes:
    return b"".join(encode_tlv(tag, value) for tag, value in fields)


def decode_fields(
    data: bytes, required: tuple[int, ...], optional: tuple[int, ...] = ()
) -> dict[int, bytes]:
    """Parse a flat TLV body: every required tag once, no unknown or repeated tag, exact sizes."""
    allowed = set(required) | set(optional)
    out: dict[int, bytes] = {}
    for item in parse_tlv(data):
        if item.tag not in allowed:
            raise DecodeError(f"unexpected tag {item.tag:02X}")
        if item.tag in out:
            raise DecodeError(f"tag {item.tag:02X} repeated")
        size = FIXED_LENGTHS.get(item.tag)
        if size is not None and len(item.value) != size:
            raise DecodeError(f"tag {item.tag:02X} must be {size} bytes")
        out[item.tag] = item.value
    missing = [t for t in required if t not in out]
    if missing:
        raise DecodeError("missing tag " + ", ".join(f"{t:02X}" for t in missing))
    return out


def bcd(value: str, length: int) -> bytes:
    """Right-aligned packed BCD of a digit string, ``length`` bytes."""
    digits = value.rjust(length * 2, "0")
    if len(digits) != length * 2 or not is_decimal(digits):
        raise DecodeError("value does not fit its BCD field")
    return bytes.fromhex(digits)


def unbcd(data: bytes) -> str:
    text = data.hex()
    if not text.isdigit():
        raise DecodeError("BCD field holds a non-digit nibble")
    return text


def _currency(data: bytes) -> str:
    """D3: ISO 4217 numeric code as 4 BCD digits, the first one 0 (``0978`` -> ``"978"``)."""
    digits = unbcd(data)
    if digits[0] != "0":
        raise DecodeError("currency code has more than 3 digits")
    return digits[1:]


@dataclass(frozen=True)
class PaymentRequestBody:
    """Plaintext of PAYMENT REQUEST: what the phone shows next to the certified merchant name."""

    txn_code: int
    amount: int
    currency: str
    stan: str
    transmitted_at: str

    def encode(self) -> bytes:
        return encode_fields(
            [
                (Tag.TXN_TYPE, bytes([self.txn_code])),
                (Tag.AMOUNT, bcd(str(self.amount), 6)),
                (Tag.CURRENCY, bcd(self.currency, 2)),
                (Tag.STAN, bcd(self.stan, 3)),
                (Tag.TRANSMITTED_AT, bcd(self.transmitted_at, 5)),
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> PaymentRequestBody:
        f = decode_fields(
            data, (Tag.TXN_TYPE, Tag.AMOUNT, Tag.CURRENCY, Tag.STAN, Tag.TRANSMITTED_AT)
        )
        return cls(
            txn_code=f[Tag.TXN_TYPE][0],
            amount=int(unbcd(f[Tag.AMOUNT])),
            currency=_currency(f[Tag.CURRENCY]),
            stan=unbcd(f[Tag.STAN]),
            transmitted_at=unbcd(f[Tag.TRANSMITTED_AT]),
        )


@dataclass(frozen=True)
class ConfirmationBody:
    """Plaintext of the GET CONFIRMATION answer."""

    status: ConfirmationStatus
    pin_block: bytes | None = None
    ksn: bytes | None = None
    signature: bytes | None = None

    def encode(self) -> bytes:
        fields: list[tuple[int, bytes]] = [(Tag.STATUS, bytes([self.status]))]
        if self.status is ConfirmationStatus.APPROVED:
            assert self.pin_block and self.ksn and self.signature
            fields += [
                (Tag.PIN_BLOCK, self.pin_block),
                (Tag.KSN, self.ksn),
                (Tag.SIGNATURE, self.signature),
            ]
        return encode_fields(fields)

    @classmethod
    def decode(cls, data: bytes) -> ConfirmationBody:
        f = decode_fields(data, (Tag.STATUS,), (Tag.PIN_BLOCK, Tag.KSN, Tag.SIGNATURE))
        try:
            status = ConfirmationStatus(f[Tag.STATUS][0])
        except ValueError as exc:
            raise DecodeError("unknown confirmation status") from exc
        if status is ConfirmationStatus.APPROVED:
            if not all(t in f for t in (Tag.PIN_BLOCK, Tag.KSN, Tag.SIGNATURE)):
                raise DecodeError("approval without PIN block, KSN and signature")
            return cls(status, f[Tag.PIN_BLOCK], f[Tag.KSN], f[Tag.SIGNATURE])
        if len(f) != 1:
            raise DecodeError("PIN block or signature without an approval")
        return cls(status)


@dataclass(frozen=True)
class ResultBody:
    """Plaintext of RESULT: the center's answer forwarded to the phone (method step 8)."""

    response_code: str
    auth_code: str | None = None
    #: An approved balance inquiry's balance as the center sealed it for the phone
    #: (:mod:`firmware_sim.balance_seal`): the terminal relays these bytes and cannot read them.
    sealed_balance: bytes | None = None

    def encode(self) -> bytes:
        fields = [(int(Tag.RESPONSE_CODE), self.response_code.encode("ascii"))]
        if self.auth_code:
            fields.append((Tag.AUTH_CODE, self.auth_code.encode("ascii")))
        if self.sealed_balance is not None:
            fields.append((Tag.SEALED_BALANCE, self.sealed_balance))
        return encode_fields(fields)

    @classmethod
    def decode(cls, data: bytes) -> ResultBody:
        f = decode_fields(data, (Tag.RESPONSE_CODE,), (Tag.AUTH_CODE, Tag.SEALED_BALANCE))
        sealed = f.get(Tag.SEALED_BALANCE)
        try:
            code = f[Tag.RESPONSE_CODE].decode("ascii")
            auth = f[Tag.AUTH_CODE].decode("ascii") if Tag.AUTH_CODE in f else None
        except UnicodeDecodeError as exc:
            raise DecodeError("response code is not ASCII") from exc
        if not code.isalnum() or (auth is not None and not auth.isalnum()):
            raise DecodeError("response or authorization code is not alphanumeric")
        return cls(code, auth, sealed)
