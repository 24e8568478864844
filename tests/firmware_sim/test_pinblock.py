"""ISO 9564-1 PIN blocks: published examples, round trips, and hostile blocks.

Vector sources:

* [NOTES] hardware_notes/standards.md — ANSI X9.24-3-2017 supplement format 4 example:
  PIN 1234, PAN 4111111111111111, pad 2F69ADDE2E9E7ACE, PIN field / PAN field / block.
* [OPENEMV] openemv/dukpt, test/dukpt_aes128_test.c — the same PIN/PAN/pad enciphered under
  the DUKPT PIN keys of counters 1-8 ("ANSI X9.24-3:2017 Supplement ... encrypted PIN blocks;
  page 31"), with the PIN keys from the same supplement.
* [IDTECH] https://atlassian.idtechproducts.com/confluence/plugins/viewsource/viewpagesrc.action?pageId=50529496
  — format 0: PAN 43219876543210987, PIN 1234, clear block 0412AC89ABCDEF67.
* [DEVIND] https://devindtools.com/Calculator/PinblockCalc — format 0: PIN 123456,
  PAN 4451234567890129, clear block 06122662A9876FED.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import DecodeError, LocalError
from swipepay.firmware_sim.pinblock import (
    PinBlockError,
    decode_format0,
    decode_format4,
    encode_format0,
    encode_format4,
    pin_well_formed,
)

PIN = "1234"
PAN = "4111111111111111"
PAD = bytes.fromhex("2F69ADDE2E9E7ACE")
KEY1 = bytes.fromhex("AF8CB133A78F8DC2D1359F18527593FB")

# [OPENEMV]: counter -> (PIN working key, format 4 block for PIN/PAN/PAD above).
FORMAT4_BLOCKS = [
    ("AF8CB133A78F8DC2D1359F18527593FB", "A912150391AB65A67E52883D81CE2D15"),
    ("D30BDC73EC9714B000BEC66BDB7B6D09", "52A00503BD34BA1383F6A7EE9FE2547F"),
    ("7D69F01F3B45449F62C7816ECE723268", "A5A27E82B43A9A866A93D7ABE89CEF93"),
    ("91A0588318EC2673214271F70137896E", "71B3D0528669498777555A8BE6698E44"),
    ("35A43BC9EFEB09C756204B57E3FB7D4D", "881A7F77A2E04E5BEA985E342FD0B628"),
    ("02DCC6CD1201A3A2CA7099559C862123", "BDC1C3871AFB0B340AA5B5CEFD08695E"),
    ("6ECF912F3B18CA11A7A27BB60705FD09", "4A8E6B8C7DBEE6CBA6DC774F0CB83396"),
    ("4D9DF3FBEE3448FC3E676D04320A90F5", "8308BB857C17F390369F761F8EB358FA"),
]

FORMAT0_EXAMPLES = [
    ("1234", "43219876543210987", "0412AC89ABCDEF67"),  # [IDTECH]
    ("123456", "4451234567890129", "06122662A9876FED"),  # [DEVIND]
]

pins = st.text(alphabet="0123456789", min_size=4, max_size=12)
pans = st.text(alphabet="0123456789", min_size=1, max_size=19)
keys = st.binary(min_size=16, max_size=16)
pads = st.binary(min_size=8, max_size=8)


def _aes_decrypt(key: bytes, block: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return dec.update(block) + dec.finalize()


def test_format4_supplement_example() -> None:
    """[NOTES]: the published block, and the published fields recovered from it."""
    block = encode_format4(PIN, PAN, KEY1, PAD)
    assert block == bytes.fromhex("A912150391AB65A67E52883D81CE2D15")
    pan_field = bytes.fromhex("44111111111111111000000000000000")
    intermediate = bytes(a ^ b for a, b in zip(_aes_decrypt(KEY1, block), pan_field, strict=True))
    assert _aes_decrypt(KEY1, intermediate) == bytes.fromhex("441234AAAAAAAAAA2F69ADDE2E9E7ACE")
    assert decode_format4(block, PAN, KEY1) == PIN


@pytest.mark.parametrize(("key_hex", "block_hex"), FORMAT4_BLOCKS)
def test_format4_under_each_dukpt_pin_key(key_hex: str, block_hex: str) -> None:
    key = bytes.fromhex(key_hex)
    assert encode_format4(PIN, PAN, key, PAD) == bytes.fromhex(block_hex)
    assert decode_format4(bytes.fromhex(block_hex), PAN, key) == PIN


@pytest.mark.parametrize(("pin", "pan", "block_hex"), FORMAT0_EXAMPLES)
def test_format0_published_examples(pin: str, pan: str, block_hex: str) -> None:
    assert encode_format0(pin, pan) == bytes.fromhex(block_hex)
    assert decode_format0(bytes.fromhex(block_hex), pan) == pin


def test_format4_random_pad_differs_each_time() -> None:
    blocks = {encode_format4(PIN, PAN, KEY1) for _ in range(4)}
    assert len(blocks) == 4
    assert all(decode_format4(b, PAN, KEY1) == PIN for b in blocks)


@settings(max_examples=300)
@given(pins, pans, keys, pads)
def test_format4_round_trip(pin: str, pan: str, key: bytes, pad: bytes) -> None:
    block = encode_format4(pin, pan, key, pad)
    assert len(block) == 16
    assert decode_format4(block, pan, key) == pin


@settings(max_examples=300)
@given(pins, pans)
def test_format0_round_trip(pin: str, pan: str) -> None:
    block = encode_format0(pin, pan)
    assert len(block) == 8
    assert decode_format0(block, pan) == pin


@settings(max_examples=300)
@given(st.binary(max_size=24), pans, keys)
def test_format4_garbage_gives_pin_or_pin_block_error(block: bytes, pan: str, key: bytes) -> None:
    try:
        pin = decode_format4(block, pan, key)
    except PinBlockError as exc:
        assert exc.response_code == "55"
        return
    assert len(block) == 16
    assert 4 <= len(pin) <= 12
    assert pin.isdigit()


@settings(max_examples=300)
@given(st.binary(max_size=12), pans)
def test_format0_garbage_gives_pin_or_pin_block_error(block: bytes, pan: str) -> None:
    try:
        pin = decode_format0(block, pan)
    except PinBlockError:
        return
    assert encode_format0(pin, pan) == block


def _format0_field_block(nibbles: str, pan: str) -> bytes:
    """A clear format 0 block whose PIN field is ``nibbles`` (for building bad blocks)."""
    good = encode_format0("0000", pan)
    template = bytes.fromhex("040000FFFFFFFFFF")
    pan_field = bytes(a ^ b for a, b in zip(good, template, strict=True))
    return bytes(a ^ b for a, b in zip(bytes.fromhex(nibbles), pan_field, strict=True))


@pytest.mark.parametrize(
    ("field", "rule"),
    [
        ("1698765FFFFFFFFF", "control"),
        ("0398765FFFFFFFFF", "length"),
        ("0D98765FFFFFFFFF", "length"),
        ("05987A5FFFFFFFFF", "non-decimal"),
        ("0598765AFFFFFFFF", "fill"),
        ("05987654FFFFFFFF", "fill"),
    ],
)
def test_format0_malformed_field_names_rule_not_digits(field: str, rule: str) -> None:
    with pytest.raises(PinBlockError) as info:
        decode_format0(_format0_field_block(field, PAN), PAN)
    message = str(info.value)
    assert rule in message
    assert "98765" not in message
    assert "987" not in repr(info.value)


def _format4_pan_field(pan: str) -> bytes:
    """The PAN field as [NOTES] spells it, written out independently of the module."""
    digits = f"{max(0, len(pan) - 12)}{pan.rjust(12, '0')}"
    return bytes.fromhex(digits.ljust(32, "0"))


def _aes_encrypt(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _format4_from_field(pin_field: bytes, pan: str, key: bytes) -> bytes:
    inner = _aes_encrypt(key, pin_field)
    mixed = bytes(a ^ b for a, b in zip(inner, _format4_pan_field(pan), strict=True))
    return _aes_encrypt(key, mixed)


@settings(max_examples=300)
@given(pins, pans, keys, pads)
def test_format4_independent_construction_matches(
    pin: str, pan: str, key: bytes, pad: bytes
) -> None:
    field = bytes.fromhex(f"4{len(pin):X}{pin}".ljust(16, "A")) + pad
    assert encode_format4(pin, pan, key, pad) == _format4_from_field(field, pan, key)


@settings(max_examples=200)
@given(pins, pans, keys, pads, st.sampled_from(["control", "fill", "length"]))
def test_format4_malformed_field_never_leaks_pin(
    pin: str, pan: str, key: bytes, pad: bytes, fault: str
) -> None:
    control, length, fill = "4", f"{len(pin):X}", "A"
    if fault == "control":
        control = "0"
    elif fault == "fill":
        fill = "F"
    else:
        length = "3"
    assume(len(pin) < 12 or fault != "fill")  # a 12-digit PIN has no fill nibble
    field = bytes.fromhex(f"{control}{length}{pin}".ljust(16, fill)[:16]) + pad
    with pytest.raises(PinBlockError) as info:
        decode_format4(_format4_from_field(field, pan, key), pan, key)
    assert pin not in str(info.value)
    assert pin not in repr(info.value)


def test_format4_wrong_pan_or_key_is_pin_block_error() -> None:
    block = encode_format4(PIN, PAN, KEY1, PAD)
    with pytest.raises(PinBlockError):
        decode_format4(block, "4111111111111112", KEY1)
    with pytest.raises(PinBlockError):
        decode_format4(block, PAN, bytes(16))


def test_format4_short_pan_is_left_padded_with_length_nibble_zero() -> None:
    """[NOTES]: a PAN under 12 digits is left-padded with 0 and has M = 0, so it is the same
    PAN field as the zero-padded 12-digit PAN."""
    short = encode_format4(PIN, "12345678", KEY1, PAD)
    padded = encode_format4(PIN, "000012345678", KEY1, PAD)
    assert short == padded
    assert encode_format4(PIN, "0000123456789", KEY1, PAD) != padded


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "", "１２３４", " 1234"])
def test_bad_pin_is_local_error_without_the_pin(pin: str) -> None:
    encoders: list[Callable[[], bytes]] = [
        lambda: encode_format4(pin, PAN, KEY1),
        lambda: encode_format0(pin, PAN),
    ]
    for encode in encoders:
        with pytest.raises(LocalError) as info:
            encode()
        if pin:
            assert pin not in str(info.value)


@pytest.mark.parametrize(
    ("pin", "ok"),
    [("1234", True), ("123456789012", True), ("123", False), ("1234567890123", False),
     ("١٢٣٤", False), ("²²²²", False), ("１２３４", False), ("12a4", False), ("1234\n", False)],
)  # fmt: skip
def test_pin_well_formed_takes_only_4_to_12_ascii_digits(pin: str, ok: bool) -> None:
    assert pin_well_formed(pin) is ok
    if not ok:  # the encoders apply the same rule
        with pytest.raises(LocalError):
            encode_format0(pin, PAN)


@pytest.mark.parametrize("pan", ["", "12345678901234567890", "41111111x1111111"])
def test_bad_pan(pan: str) -> None:
    with pytest.raises(LocalError):
        encode_format4(PIN, pan, KEY1)
    with pytest.raises(LocalError):
        encode_format0(PIN, pan)
    with pytest.raises(DecodeError):
        decode_format4(bytes(16), pan, KEY1)
    with pytest.raises(DecodeError):
        decode_format0(bytes(8), pan)


def test_bad_key_or_pad_is_local_error() -> None:
    for key in (b"", KEY1[:15], KEY1 + KEY1):
        with pytest.raises(LocalError):
            encode_format4(PIN, PAN, key)
        with pytest.raises(LocalError):
            decode_format4(bytes(16), PAN, key)
    for pad in (b"", PAD[:7], PAD + b"\x00"):
        with pytest.raises(LocalError):
            encode_format4(PIN, PAN, KEY1, pad)
