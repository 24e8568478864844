"""ISO/IEC 7813 magnetic-stripe tracks 1 and 2, and the EMV track-2 equivalent (tag 57).

A swipe is the least reliable read there is: a card pulled too fast gives half a line, a dirty
head flips a bit, a keyboard-wedge reader may add a newline.  So every parse failure raises
:class:`SwipeError`, whose message says what went wrong *and* asks for another swipe, and never
contains the full PAN (only the masked form).

Character sets and check characters (ISO/IEC 7811-2):

* Track 1 ("alpha"): 6-bit characters, ASCII 0x20-0x5F minus 0x20, plus an odd-parity bit.
* Track 2 ("BCD"): 4-bit characters, ASCII 0x30-0x3F minus 0x30, plus an odd-parity bit.
* The LRC character follows the end sentinel.  Its data bits are the XOR of the data bits of
  every character from the start sentinel to the end sentinel inclusive; its parity bit is the odd
  parity of the LRC character itself.  Readers often strip it, so it is checked only when present.

The parity bits never appear in text; :func:`track1_frame` / :func:`track2_frame` give the
characters as they are written on the stripe, with parity, for encoders and raw-mode readers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from swipepay.firmware_sim.carddata import (
    PAN_MAX_DIGITS,
    PAN_MIN_DIGITS,
    CardData,
    luhn_valid,
    mask_pan,
)
from swipepay.firmware_sim.errors import DecodeError, LocalError


@dataclass(frozen=True)
class TrackCharset:
    """One track's character set, as data: first ASCII code, bits per character, sentinels."""

    number: int
    ascii_base: int
    data_bits: int
    start_sentinel: str
    separator: str
    end_sentinel: str
    max_length: int  # whole track: sentinels and LRC included

    def value(self, char: str) -> int:
        """Data bits of ``char`` (without parity); raises ``ValueError`` outside the set."""
        code = ord(char) - self.ascii_base
        if not 0 <= code < (1 << self.data_bits):
            raise ValueError(char)
        return code

    def contains(self, char: str) -> bool:
        return 0 <= ord(char) - self.ascii_base < (1 << self.data_bits)


TRACK1 = TrackCharset(1, 0x20, 6, "%", "^", "?", 79)
TRACK2 = TrackCharset(2, 0x30, 4, ";", "=", "?", 40)

#: Track 1 name field length limits (ISO/IEC 7813).
NAME_MIN, NAME_MAX = 2, 26
#: EMV tag 57 is at most 19 bytes (EMV Book 3, Annex A).
TAG57_MAX_BYTES = 19

_DIGITS = re.compile(r"[0-9]*")
_YYMM = re.compile(r"[0-9]{2}(0[1-9]|1[0-2])")
_SERVICE_CODE = re.compile(r"[0-9]{3}")


class SwipeError(DecodeError):
    """A swipe could not be decoded.  The message is meant for the person at the terminal.

    ``reason`` is the bare cause (for logs and tests), ``track`` the track number if known.
    """

    def __init__(self, reason: str, track: int | None = None) -> None:
        where = f"track {track}: " if track else ""
        super().__init__(f"Card read failed ({where}{reason}). Please swipe the card again.")
        self.reason = reason
        self.track = track


@dataclass(frozen=True)
class Track1:
    """Decoded track 1 (format code B)."""

    pan: str
    name: str
    expiry: str
    service_code: str
    discretionary: str = ""
    format_code: str = "B"

    def __repr__(self) -> str:
        return f"Track1(pan={mask_pan(self.pan)!r}, expiry={self.expiry!r})"


@dataclass(frozen=True)
class Track2:
    """Decoded track 2, or an EMV track-2 equivalent."""

    pan: str
    expiry: str
    service_code: str
    discretionary: str = ""

    @property
    def content(self) -> str:
        """Track 2 without sentinels or LRC, ``PAN=YYMMsss<discretionary>`` (CardData.track2)."""
        return f"{self.pan}={self.expiry}{self.service_code}{self.discretionary}"

    def __repr__(self) -> str:
        return f"Track2(pan={mask_pan(self.pan)!r}, expiry={self.expiry!r})"


# --------------------------------------------------------------------------- check characters


def _odd_parity_bit(value: int) -> int:
    """The bit that makes the count of ones in ``value`` plus itself odd."""
    return 0 if bin(value).count("1") % 2 else 1


def lrc(charset: TrackCharset, framed: str) -> str:
    """The LRC character for ``framed`` (start sentinel through end sentinel, inclusive).

    Raises ``ValueError`` if ``framed`` has a character outside the track's set.
    """
    acc = 0
    for char in framed:
        acc ^= charset.value(char)
    return chr(acc + charset.ascii_base)


def track1_lrc(framed: str) -> str:
    """Track 1 LRC character of ``%...?``."""
    return lrc(TRACK1, framed)


def track2_lrc(framed: str) -> str:
    """Track 2 LRC character of ``;...?``."""
    return lrc(TRACK2, framed)


def _frame(charset: TrackCharset, text: str) -> list[int]:
    out = []
    for char in text:
        value = charset.value(char)
        out.append(value | (_odd_parity_bit(value) << charset.data_bits))
    return out


def track1_frame(text: str) -> list[int]:
    """Track 1 characters as written on the stripe: 6 data bits (LSB first) + odd parity bit 6."""
    return _frame(TRACK1, text)


def track2_frame(text: str) -> list[int]:
    """Track 2 characters as written on the stripe: 4 data bits + odd parity bit 4."""
    return _frame(TRACK2, text)


# --------------------------------------------------------------------------- parsing


def _unframe(charset: TrackCharset, raw: str) -> str:
    """Check sentinels, character set, length and LRC; return the text between the sentinels."""
    n = charset.number
    text = raw.strip("\r\n")  # keyboard-wedge readers end each track with Enter
    if not text:
        raise SwipeError("no data was read", n)
    if len(text) > charset.max_length:
        raise SwipeError(f"too long ({len(text)} characters, at most {charset.max_length})", n)
    if text[0] != charset.start_sentinel:
        raise SwipeError("start of the track missing (partial read)", n)
    end = text.find(charset.end_sentinel, 1)
    if end < 0:
        raise SwipeError("end of the track missing (partial read)", n)
    framed, trailer = text[: end + 1], text[end + 1 :]
    for char in text:
        if not charset.contains(char):
            raise SwipeError("unreadable characters (noise or a different track)", n)
    if len(trailer) > 1:
        raise SwipeError("unexpected data after the end of the track", n)
    if trailer and trailer != lrc(charset, framed):
        raise SwipeError("check character (LRC) mismatch, the read was corrupted", n)
    body = framed[1:-1]
    if charset.start_sentinel in body:
        raise SwipeError("two tracks run together", n)
    return body


def _check_pan(pan: str, track: int | None) -> None:
    if not pan or not _DIGITS.fullmatch(pan):
        raise SwipeError("card number missing or not numeric", track)
    if not PAN_MIN_DIGITS <= len(pan) <= PAN_MAX_DIGITS:
        raise SwipeError(
            f"card number has {len(pan)} digits "
            f"({PAN_MIN_DIGITS}-{PAN_MAX_DIGITS} expected)",
            track,
        )
    if not luhn_valid(pan):
        raise SwipeError(f"card number {mask_pan(pan)} fails its check digit", track)


def _split_dates(rest: str, track: int) -> tuple[str, str, str]:
    """``YYMM`` + service code + discretionary data, each checked."""
    expiry, service_code, discretionary = rest[:4], rest[4:7], rest[7:]
    if not _YYMM.fullmatch(expiry):
        raise SwipeError("expiry date missing or invalid", track)
    if not _SERVICE_CODE.fullmatch(service_code):
        raise SwipeError("service code missing or invalid", track)
    return expiry, service_code, discretionary


def parse_track1(s: str) -> Track1:
    """Decode ``%B<PAN>^<NAME>^<YYMM><service code><discretionary>?[LRC]``."""
    body = _unframe(TRACK1, s)
    if not body:
        raise SwipeError("no data between the sentinels", 1)
    format_code, body = body[0], body[1:]
    if format_code != "B":
        raise SwipeError(f"unsupported format code {format_code!r} (B expected)", 1)
    fields = body.split(TRACK1.separator, 2)
    if len(fields) != 3:
        raise SwipeError("field separator missing (partial read)", 1)
    pan, name, rest = fields
    _check_pan(pan, 1)
    if not NAME_MIN <= len(name) <= NAME_MAX:
        raise SwipeError(f"name must be {NAME_MIN}-{NAME_MAX} characters", 1)
    if TRACK1.separator in rest:
        raise SwipeError("too many field separators", 1)
    expiry, service_code, discretionary = _split_dates(rest, 1)
    return Track1(pan, name, expiry, service_code, discretionary, format_code)


def parse_track2(s: str) -> Track2:
    """Decode ``;<PAN>=<YYMM><service code><discretionary>?[LRC]``."""
    body = _unframe(TRACK2, s)
    pan, sep, rest = body.partition(TRACK2.separator)
    if not sep:
        raise SwipeError("field separator missing (partial read)", 2)
    _check_pan(pan, 2)
    expiry, service_code, discretionary = _split_dates(rest, 2)
    return Track2(pan, expiry, service_code, discretionary)


def parse_track2_equivalent(tag57: bytes) -> Track2:
    """Decode EMV tag 57: track 2 in BCD, ``D`` as the separator, one ``F`` pad nibble at most.

    Raises :class:`DecodeError` (not :class:`SwipeError`: the card was not swiped).
    """
    if not tag57:
        raise DecodeError("track 2 equivalent (tag 57) is empty")
    if len(tag57) > TAG57_MAX_BYTES:
        raise DecodeError(f"track 2 equivalent longer than {TAG57_MAX_BYTES} bytes")
    nibbles = tag57.hex().upper()
    if nibbles.endswith("F"):
        nibbles = nibbles[:-1]
    pan, sep, rest = nibbles.partition("D")
    if not sep:
        raise DecodeError("track 2 equivalent (tag 57) has no D separator")
    if not _DIGITS.fullmatch(pan) or not _DIGITS.fullmatch(rest):
        raise DecodeError("track 2 equivalent (tag 57) has non-BCD digits")
    try:
        _check_pan(pan, None)
        expiry, service_code, discretionary = _split_dates(rest, 2)
    except SwipeError as exc:
        raise DecodeError(f"track 2 equivalent (tag 57): {exc.reason}") from None
    return Track2(pan, expiry, service_code, discretionary)


# --------------------------------------------------------------------------- building


def _build(
    charset: TrackCharset, body: str, with_lrc: bool, parse: Callable[[str], object]
) -> str:
    framed = f"{charset.start_sentinel}{body}{charset.end_sentinel}"
    try:
        text = framed + (lrc(charset, framed) if with_lrc else "")
        parse(text)  # the builder and the parser share one definition of "valid"
    except (ValueError, SwipeError) as exc:
        reason = exc.reason if isinstance(exc, SwipeError) else "character outside the track set"
        raise LocalError(f"cannot build track {charset.number}: {reason}") from None
    return text


def build_track1(
    pan: str,
    name: str,
    expiry: str,
    service_code: str = "201",
    discretionary: str = "",
    *,
    with_lrc: bool = False,
) -> str:
    """Encode track 1 text (simulated cards, MSR605 writes); raises ``LocalError`` if invalid."""
    return _build(
        TRACK1, f"B{pan}^{name}^{expiry}{service_code}{discretionary}", with_lrc, parse_track1
    )


def build_track2(
    pan: str,
    expiry: str,
    service_code: str = "201",
    discretionary: str = "",
    *,
    with_lrc: bool = False,
) -> str:
    """Encode track 2 text; raises ``LocalError`` if the fields do not make a valid track."""
    return _build(TRACK2, f"{pan}={expiry}{service_code}{discretionary}", with_lrc, parse_track2)


def card_from_tracks(track1: str | None, track2: str | None) -> CardData:
    """Turn the tracks of one swipe into :class:`CardData` (entry mode 90, full track read).

    Either track may be missing (readers often give only track 2, or fail on one track); when both
    are present their PAN and expiry must agree, otherwise the head read two different swipes or a
    corrupted one.  Without track 2, its content is rebuilt from track 1's PAN, expiry and service
    code (the discretionary data differs between the tracks and cannot be recovered).
    """
    t1 = parse_track1(track1) if track1 is not None and track1.strip("\r\n") else None
    t2 = parse_track2(track2) if track2 is not None and track2.strip("\r\n") else None
    if t1 is None and t2 is None:
        raise SwipeError("no track could be read")
    if t1 is not None and t2 is not None:
        if t1.pan != t2.pan:
            raise SwipeError("card number differs between track 1 and track 2")
        if t1.expiry != t2.expiry:
            raise SwipeError("expiry date differs between track 1 and track 2")
    if t2 is not None:
        pan, expiry, service_code, track2_content = t2.pan, t2.expiry, t2.service_code, t2.content
    else:
        assert t1 is not None
        pan, expiry, service_code = t1.pan, t1.expiry, t1.service_code
        track2_content = Track2(pan, expiry, service_code).content
    return CardData(
        pan=pan,
        expiry=expiry,
        name=t1.name.strip() if t1 is not None else "",
        service_code=service_code,
        track2=track2_content,
        entry_mode="90",
        source="magstripe",
    )
