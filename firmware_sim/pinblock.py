"""ISO 9564-1 PIN blocks: format 4 (AES, what the phone sends) and format 0 (legacy, clear).

Format 4 (16 bytes, AES-128) is the only format the phone link uses: the phone builds it under
its DUKPT PIN working key, the terminal relays it, the center decodes it.  Format 0 is kept for
the clear 8-byte block that legacy TDES hosts and test tools speak.

Field layouts as nibble strings (``P`` PIN digit, ``A``/``F`` fill, ``R`` random, ``M`` the
number of PAN digits beyond 12, ``a`` PAN digit, ``0`` zero pad):

=======================  ============================================================
format 4, PIN field      ``4 N P..P A..A`` (16 nibbles) then 8 random bytes
format 4, PAN field      ``M a..a 0..0`` (32 nibbles; PAN < 12 digits: left-padded, M=0)
format 4, block          ``AES_K( AES_K(PIN field) XOR PAN field )``
format 0, PIN field      ``0 N P..P F..F`` (16 nibbles)
format 0, PAN field      ``0000`` + rightmost 12 PAN digits excluding the check digit
format 0, block          ``PIN field XOR PAN field`` (clear; encipherment is not ours)
=======================  ============================================================

Nothing here ever puts PIN digits into an exception message or a repr: a block that does not
decode raises :class:`PinBlockError` saying only which structural rule failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from swipepay.firmware_sim.errors import DecodeError, LocalError

KEY_LEN: Final = 16
FORMAT4_LEN: Final = 16
FORMAT0_LEN: Final = 8
PAD_LEN: Final = 8
PIN_DIGITS: Final = range(4, 13)
PAN_DIGITS: Final = range(1, 20)
DECIMAL: Final = frozenset("0123456789")
#: PAN digits that go into the PAN fields.
PAN_FIELD_DIGITS: Final = 12


@dataclass(frozen=True)
class _PinFieldFormat:
    """What distinguishes the PIN fields of the formats we handle: control nibble and fill."""

    control: int
    fill: int


FORMATS: Final[dict[int, _PinFieldFormat]] = {
    0: _PinFieldFormat(control=0x0, fill=0xF),
    4: _PinFieldFormat(control=0x4, fill=0xA),
}


class PinBlockError(DecodeError):
    """A PIN block did not decode to a well-formed PIN field.

    Answers ISO 8583 ``55`` (incorrect PIN), the same as a wrong PIN: a host that answered a
    malformed block differently would be an oracle telling an attacker which guessed blocks
    are well formed.
    """

    response_code = "55"


def _nibbles_to_bytes(nibbles: list[int]) -> bytes:
    return bytes((hi << 4) | lo for hi, lo in zip(nibbles[::2], nibbles[1::2], strict=True))


def pin_well_formed(pin: str) -> bool:
    """Whether ``pin`` can be a PIN at all: 4 to 12 ASCII decimal digits (ISO 9564-1).

    The one rule for every place a PIN enters (the phone's keypad and screen, ``--pin-env`` and
    ``--pin-file``, the PIN block encoders): ``isdigit`` alone also takes "²" or "٣", which no
    PIN field can hold."""
    return isinstance(pin, str) and len(pin) in PIN_DIGITS and pin.isascii() and pin.isdigit()


def _check_pin(pin: str) -> None:
    if not pin_well_formed(pin):
        raise LocalError("PIN must be 4 to 12 decimal digits")


def _check_pan(pan: str, error: type[LocalError] | type[DecodeError]) -> None:
    if not isinstance(pan, str) or len(pan) not in PAN_DIGITS or not set(pan) <= DECIMAL:
        raise error("PAN must be 1 to 19 decimal digits")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_LEN:
        raise LocalError(f"PIN block key must be an AES-128 key ({KEY_LEN} bytes)")


def _pin_nibbles(pin: str, fmt: _PinFieldFormat) -> list[int]:
    """The 16 nibbles ``C N P..P fill..fill``."""
    nibbles = [fmt.control, len(pin), *(int(d) for d in pin)]
    return nibbles + [fmt.fill] * (16 - len(nibbles))


def _parse_pin_field(field: bytes, fmt: _PinFieldFormat) -> str:
    """The PIN in the 8-byte PIN field ``C N P..P fill..fill`` (16 nibbles);
    :class:`PinBlockError` names the rule, never a digit.

    Read off the field's hex text, where each nibble is one character and a decimal nibble is
    its own digit: the center decodes a PIN block for every request, and string tests cost a
    fraction of a list of nibbles.
    """
    text = field.hex()
    if int(text[0], 16) != fmt.control:
        raise PinBlockError("PIN block: wrong control field")
    length = int(text[1], 16)
    if length not in PIN_DIGITS:
        raise PinBlockError("PIN block: PIN length out of range 4..12")
    digits = text[2 : 2 + length]
    if not (digits.isascii() and digits.isdigit()):
        raise PinBlockError("PIN block: PIN field holds a non-decimal digit")
    if text[2 + length : 16] != _FILL_TEXT[fmt.fill] * (14 - length):
        raise PinBlockError("PIN block: wrong fill")
    return digits


#: A fill nibble as it appears in ``bytes.hex()`` text.
_FILL_TEXT: Final[dict[int, str]] = {fill: f"{fill:x}" for fill in range(16)}


def _format4_pan_field(pan: str) -> bytes:
    # ``pan`` is checked ASCII-decimal, so its digits are already the nibbles' hex spelling
    # (one fromhex instead of a nibble list: this runs for every PIN the center decodes).
    extra = max(0, len(pan) - PAN_FIELD_DIGITS)
    return bytes.fromhex(f"{extra:X}{pan.rjust(PAN_FIELD_DIGITS, '0')}".ljust(32, "0"))


def _format0_pan_field(pan: str) -> bytes:
    account = pan[:-1][-PAN_FIELD_DIGITS:].rjust(PAN_FIELD_DIGITS, "0")
    return _nibbles_to_bytes([0, 0, 0, 0, *(int(d) for d in account)])


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("XOR of blocks of different lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


#: ECB keeps no state between blocks, so one mode object serves every cipher.
_ECB: Final = modes.ECB()  # noqa: S305 -- the single-block permutation ISO 9564-1 specifies


def _aes_ecb(key: bytes, *, decrypt: bool) -> CipherContext:
    """An AES-ECB context under ``key`` for whole 16-byte blocks, one ``update`` per block.

    Both format 4 steps use the same key, so one context serves both (creating the context,
    which schedules the key, is most of an AES call's cost).  ECB carries nothing from one
    block to the next, so ``update(a)`` then ``update(b)`` is exactly two single-block
    operations; ``finalize()`` is skipped because for ECB it only checks that no partial block
    is buffered, and every caller feeds exactly one block per ``update``.
    """
    cipher = Cipher(algorithms.AES(bytes(key)), _ECB)
    return cipher.decryptor() if decrypt else cipher.encryptor()


def encode_format4(pin: str, pan: str, key: bytes, pad: bytes | None = None) -> bytes:
    """Encipher ``pin`` for ``pan`` as a 16-byte ISO 9564-1 format 4 block.

    ``key`` is the DUKPT PIN *working* key.  ``pad`` (8 bytes) is taken from ``os.urandom``
    unless given; pass it only to reproduce published examples.
    """
    _check_pin(pin)
    _check_pan(pan, LocalError)
    _check_key(key)
    if pad is None:
        pad = os.urandom(PAD_LEN)
    elif not isinstance(pad, bytes | bytearray) or len(pad) != PAD_LEN:
        raise LocalError(f"format 4 random pad must be {PAD_LEN} bytes")
    pin_field = _nibbles_to_bytes(_pin_nibbles(pin, FORMATS[4])) + bytes(pad)
    aes = _aes_ecb(key, decrypt=False)
    intermediate = aes.update(pin_field)
    return aes.update(_xor(intermediate, _format4_pan_field(pan)))


def decode_format4(block: bytes, pan: str, key: bytes) -> str:
    """Recover the PIN from a format 4 block; :class:`PinBlockError` if it is not well formed.

    A wrong key or a wrong PAN almost always yields a malformed PIN field and so the same
    :class:`PinBlockError` as a tampered block.
    """
    _check_key(key)
    _check_pan(pan, DecodeError)
    if not isinstance(block, bytes | bytearray) or len(block) != FORMAT4_LEN:
        raise PinBlockError(f"format 4 PIN block must be {FORMAT4_LEN} bytes")
    aes = _aes_ecb(key, decrypt=True)
    intermediate = _xor(aes.update(bytes(block)), _format4_pan_field(pan))
    pin_field = aes.update(intermediate)
    return _parse_pin_field(pin_field[:8], FORMATS[4])


def encode_format0(pin: str, pan: str) -> bytes:
    """The clear 8-byte ISO 9564-1 format 0 block (to be enciphered by whoever needs it)."""
    _check_pin(pin)
    _check_pan(pan, LocalError)
    pin_field = _nibbles_to_bytes(_pin_nibbles(pin, FORMATS[0]))
    return _xor(pin_field, _format0_pan_field(pan))


def decode_format0(block: bytes, pan: str) -> str:
    """Recover the PIN from a clear format 0 block; :class:`PinBlockError` if malformed."""
    _check_pan(pan, DecodeError)
    if not isinstance(block, bytes | bytearray) or len(block) != FORMAT0_LEN:
        raise PinBlockError(f"format 0 PIN block must be {FORMAT0_LEN} bytes")
    pin_field = _xor(bytes(block), _format0_pan_field(pan))
    return _parse_pin_field(pin_field, FORMATS[0])
