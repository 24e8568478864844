"""What the terminal learned from the user's card, whatever the card was (method step 1).

Magstripe swipes, contact and contactless EMV reads and UID-only RF cards all end up as one
:class:`CardData`, so the rest of the terminal (phone link, ISO 8583) never cares how the card was
read.  The only card-specific things it keeps are the ISO 8583 field 22 entry mode and the
identifier the user's phone is bound to (:attr:`CardData.card_id`).

No I/O here: "today" is always passed in, never read from a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from swipepay.firmware_sim.errors import DecodeError

#: ISO 8583 field 22, first two digits (PAN entry mode) -> what it means.
ENTRY_MODES: dict[str, str] = {
    "02": "magnetic stripe, track data may be incomplete",
    "05": "integrated circuit card (contact chip)",
    "07": "contactless chip",
    "90": "magnetic stripe, full track read",
    "91": "contactless magnetic stripe",
}

#: How the card was read -> the entry modes that are consistent with it.
SOURCES: dict[str, frozenset[str]] = {
    "magstripe": frozenset({"02", "90"}),
    "emv-contact": frozenset({"05"}),
    "emv-contactless": frozenset({"07", "91"}),
    "uid": frozenset({"07", "91"}),
}

#: ISO/IEC 7812: a PAN has at most 19 digits.  8 is the 2017 minimum for issuer identifiers.
PAN_MIN_DIGITS = 8
PAN_MAX_DIGITS = 19

_DIGITS = re.compile(r"[0-9]+")
_YYMM = re.compile(r"[0-9]{2}(0[1-9]|1[0-2])")
_SERVICE_CODE = re.compile(r"[0-9]{3}")


def luhn_check_digit(partial: str) -> str:
    """The Luhn (ISO/IEC 7812-1 mod 10) check digit that completes ``partial``.

    Used to build valid test PANs; raises :class:`DecodeError` for anything but digits.
    """
    if not _DIGITS.fullmatch(partial):
        raise DecodeError("Luhn input must be a non-empty string of digits")
    total = 0
    # Counting from the right of the *completed* number, the check digit is position 1, so the
    # rightmost digit of ``partial`` is doubled.
    for index, char in enumerate(reversed(partial)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(pan: str) -> bool:
    """True when ``pan`` is 2+ digits whose last digit is the Luhn check digit of the rest.

    Never raises: a typo, a misread digit or a non-digit simply gives False.
    """
    if len(pan) < 2 or not _DIGITS.fullmatch(pan):
        return False
    return luhn_check_digit(pan[:-1]) == pan[-1]


def check_expiry(expiry: str) -> None:
    """Raise :class:`DecodeError` unless ``expiry`` is YYMM with a real month."""
    if not _YYMM.fullmatch(expiry):
        raise DecodeError("expiry date must be YYMM with month 01-12")


def is_expired(expiry: str, today: date) -> bool:
    """True when a card with ``expiry`` (YYMM) can no longer be used on ``today``.

    A card is valid *through* the last day of its expiry month (ISO/IEC 7813, EMV Book 3), so
    "2812" is still good on 2028-12-31 and expired on 2029-01-01.  Years are 20YY: the century
    window is irrelevant for cards issued this century and keeps the function clock-free.
    """
    check_expiry(expiry)
    year = 2000 + int(expiry[:2])
    month = int(expiry[2:])
    return (today.year, today.month) > (year, month)


def mask_pan(pan: str) -> str:
    """PCI DSS display form: at most the first 6 and last 4 digits, the rest as ``*``.

    Short PANs (10 digits or fewer) only show the last 4, so at least the middle is always hidden.
    """
    if len(pan) > 10:
        return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    return "*" * max(len(pan) - 4, 0) + pan[-4:]


@dataclass(frozen=True)
class CardData:
    """The user identification read from a card, as the terminal hands it on.

    ``track2`` is the ISO 7813 track-2 content without sentinels (``PAN=YYMMsss...``); EMV cards
    give it as tag 57.  ``entry_mode`` is ISO 8583 field 22's first two digits
    (:data:`ENTRY_MODES`), ``source`` says how the card was read (:data:`SOURCES`).  UID-only
    cards have empty PAN, expiry, name, service code and track 2, and a ``uid``.

    Construction checks that the fields agree with each other, so a ``CardData`` that exists is
    always usable; inconsistent values raise :class:`DecodeError` (they came from a card).
    """

    pan: str
    expiry: str
    name: str
    service_code: str
    track2: str
    entry_mode: str
    source: str
    aid: bytes | None = None
    uid: bytes | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise DecodeError(f"unknown card source {self.source!r}")
        if self.entry_mode not in SOURCES[self.source]:
            raise DecodeError(
                f"entry mode {self.entry_mode!r} does not fit a {self.source} read"
            )
        if self.source == "uid":
            if not self.uid:
                raise DecodeError("a UID-only card needs a UID")
            if self.pan:
                raise DecodeError("a UID-only card has no PAN")
            return
        if not (PAN_MIN_DIGITS <= len(self.pan) <= PAN_MAX_DIGITS) or not _DIGITS.fullmatch(
            self.pan
        ):
            raise DecodeError(f"PAN must be {PAN_MIN_DIGITS}-{PAN_MAX_DIGITS} digits")
        if not luhn_valid(self.pan):
            raise DecodeError(f"PAN {self.masked_pan} fails the Luhn check")
        check_expiry(self.expiry)
        if self.service_code and not _SERVICE_CODE.fullmatch(self.service_code):
            raise DecodeError("service code must be 3 digits")

    @classmethod
    def from_uid(cls, uid: bytes, entry_mode: str = "07") -> CardData:
        """A card known only by its RF UID (MIFARE-like, no payment application)."""
        return cls(
            pan="",
            expiry="",
            name="",
            service_code="",
            track2="",
            entry_mode=entry_mode,
            source="uid",
            uid=uid,
        )

    @property
    def card_id(self) -> bytes:
        """The identifier the user's phone is bound to (input of the user-ID token).

        The PAN as ASCII digits; for UID-only cards ``b"uid:"`` + the UID in lowercase hex.
        The prefix keeps a UID from ever colliding with a PAN made of the same digits.
        """
        if self.pan:
            return self.pan.encode("ascii")
        assert self.uid is not None  # guaranteed by __post_init__
        return b"uid:" + self.uid.hex().encode("ascii")

    @property
    def masked_pan(self) -> str:
        """The PAN safe to print or log (:func:`mask_pan`); ``uid:<hex>`` for UID-only cards."""
        if self.pan:
            return mask_pan(self.pan)
        return "uid:" + (self.uid or b"").hex()

    def __repr__(self) -> str:
        # The default dataclass repr would put the full PAN and track 2 into logs and tracebacks.
        return (
            f"CardData(pan={self.masked_pan!r}, expiry={self.expiry!r}, source={self.source!r}, "
            f"entry_mode={self.entry_mode!r}, aid={self.aid.hex() if self.aid else None!r})"
        )
