"""The transaction a terminal builds (method step 2), as plain data shared by all three parts.

Amounts are integers in minor units (cents), never floats.  The field formats follow the ISO 8583
fields that carry them, so the same values travel unchanged from terminal to phone to center.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from swipepay.firmware_sim.errors import DecodeError


class TxnType(StrEnum):
    """Transaction types of the invention (claims 6-10) plus pre-auth completion and balance
    inquiry (whose balance is then shown on the phone, not on the terminal's screen)."""

    PURCHASE = "purchase"
    PREAUTH = "preauth"
    COMPLETION = "completion"
    WITHDRAWAL = "withdrawal"
    DEPOSIT = "deposit"
    BALANCE = "balance"


@dataclass(frozen=True)
class TxnTypeSpec:
    """How one transaction type travels: ISO 8583 MTI and processing code, one-byte phone code."""

    mti: str
    processing_code: str
    phone_code: int
    needs_phone: bool
    label: str
    #: False for a balance inquiry, whose amount field must be zero.
    has_amount: bool = True


#: Specs as data: one row per transaction type.
TXN_TYPES: dict[TxnType, TxnTypeSpec] = {
    TxnType.PURCHASE: TxnTypeSpec("0200", "000000", 0x00, True, "Purchase"),
    TxnType.PREAUTH: TxnTypeSpec("0100", "000000", 0x30, True, "Pre-authorization"),
    TxnType.COMPLETION: TxnTypeSpec("0220", "000000", 0x31, False, "Pre-auth completion"),
    TxnType.WITHDRAWAL: TxnTypeSpec("0200", "010000", 0x01, True, "Cash withdrawal"),
    TxnType.DEPOSIT: TxnTypeSpec("0200", "210000", 0x21, True, "Deposit"),
    TxnType.BALANCE: TxnTypeSpec("0200", "310000", 0x40, True, "Balance inquiry", False),
}

PHONE_CODE_TO_TYPE: dict[int, TxnType] = {spec.phone_code: t for t, spec in TXN_TYPES.items()}

#: Largest amount field 4 can carry (12 digits).
MAX_AMOUNT = 999_999_999_999


def is_decimal(value: str) -> bool:
    """Only ASCII digits 0-9, at least one: what a numeric ISO 8583 field or a PAN holds
    (``isdigit`` alone also takes "²" or "٣"; the two string tests cost a fraction of a regular
    expression, on every request the center parses)."""
    return value.isdigit() and value.isascii()


def _check_digits(name: str, value: str, length: int) -> None:
    if len(value) != length or not is_decimal(value):
        raise DecodeError(f"{name} must be {length} digits")


@dataclass(frozen=True)
class Transaction:
    """What the terminal asks the phone to confirm and the center to authorize.

    ``stan`` (field 11) and ``transmitted_at`` (field 7, MMDDhhmmss) together with the terminal ID
    identify the message for retransmission handling.  ``original_stan`` / ``original_at`` refer a
    pre-auth completion to its pre-authorization.
    """

    type: TxnType
    amount: int
    pan: str
    expiry: str
    terminal_id: str
    merchant_id: str
    stan: str
    transmitted_at: str
    currency: str = "978"
    entry_mode: str = "05"
    original_stan: str | None = None
    original_at: str | None = None
    auth_code: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise DecodeError("amount must be an integer in minor units")
        if not 0 <= self.amount <= MAX_AMOUNT:
            raise DecodeError("amount out of range")
        _check_digits("STAN", self.stan, 6)
        _check_digits("transmission date/time", self.transmitted_at, 10)
        _check_digits("currency", self.currency, 3)
        if not (12 <= len(self.pan) <= 19 and is_decimal(self.pan)):
            raise DecodeError("PAN must be 12-19 digits")
        if len(self.terminal_id) != 8 or not self.terminal_id.isascii():
            raise DecodeError("terminal ID must be 8 ASCII characters")

    @property
    def spec(self) -> TxnTypeSpec:
        return TXN_TYPES[self.type]

    def __repr__(self) -> str:
        # The PAN is masked 6+4 so a logged transaction never carries the whole card number.
        masked = self.pan[:6] + "*" * (len(self.pan) - 10) + self.pan[-4:]
        return (
            f"Transaction(type={self.type.value}, amount={self.amount}, pan={masked}, "
            f"terminal_id={self.terminal_id}, stan={self.stan}, at={self.transmitted_at})"
        )


def format_amount(amount: int, currency: str = "978") -> str:
    """Show minor units as a decimal amount with the currency's code (2 decimals assumed)."""
    symbol = CURRENCY_CODES.get(currency, currency)
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d} {symbol}"


#: The largest amount a terminal accepts, as the operator types it.
MAX_AMOUNT_TEXT = f"{MAX_AMOUNT // 100}.{MAX_AMOUNT % 100:02d}"


def parse_amount(text: str, *, minimum: int = 1) -> int:
    """Parse ``"12.34"`` or ``"12"`` into minor units without going through float.

    Each way an operator gets an amount wrong has its own message: nothing, a comma, a sign,
    more than two decimals, not a number, below ``minimum`` (zero is no payment), too large.
    """
    text = text.strip()
    if not text:
        raise DecodeError("no amount given (use e.g. 12.34)")
    if "," in text:
        raise DecodeError(f"use a point for the decimals: {text.replace(',', '.')!s}, not {text}")
    if text.startswith("-"):
        raise DecodeError(f"the amount must be positive, not {text}")
    m = re.fullmatch(r"\+?([0-9]+)(?:\.([0-9]*))?", text)
    if not m:
        raise DecodeError(f"not an amount: {text!r} (use e.g. 12.34)")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > 2:
        raise DecodeError(f"at most two decimals (cents): {text}")
    amount = int(whole) * 100 + int(frac.ljust(2, "0"))
    if amount > MAX_AMOUNT:
        raise DecodeError(f"amount too large: {text} (at most {MAX_AMOUNT_TEXT})")
    if amount < minimum:
        raise DecodeError(f"the amount must be more than 0, not {text}")
    return amount


CURRENCY_CODES: dict[str, str] = {"978": "EUR", "840": "USD", "826": "GBP", "156": "CNY"}
