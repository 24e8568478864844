"""ISO/IEC 7813 tracks: known swipes, every bad-swipe class, LRC/parity, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.carddata import luhn_check_digit
from swipepay.firmware_sim.errors import DecodeError, LocalError
from swipepay.firmware_sim.tracks import (
    SwipeError,
    Track1,
    Track2,
    build_track1,
    build_track2,
    card_from_tracks,
    parse_track1,
    parse_track2,
    parse_track2_equivalent,
    track1_frame,
    track1_lrc,
    track2_frame,
    track2_lrc,
)

PAN = "4111111111111111"
T1 = "%B4111111111111111^DOE/JOHN^2812201000000000000?"
T2 = ";4111111111111111=28122011234567?"


def test_parse_known_track1() -> None:
    assert parse_track1(T1) == Track1(PAN, "DOE/JOHN", "2812", "201", "000000000000")


def test_parse_known_track2() -> None:
    t2 = parse_track2(T2)
    assert t2 == Track2(PAN, "2812", "201", "1234567")
    assert t2.content == "4111111111111111=28122011234567"


def test_keyboard_wedge_newline_is_tolerated() -> None:
    assert parse_track2(T2 + "\r\n").pan == PAN


def test_track2_lrc_hand_computed() -> None:
    # ; = 0xB, 1 = 0x1, = = 0xD, ? = 0xF: B^1^D^F = 8
    assert track2_lrc(";1=?") == "8"


def test_track1_lrc_hand_computed() -> None:
    # % = 0x05, B = 0x22, ? = 0x1F: 05^22^1F = 0x38 -> chr(0x58) "X"
    assert track1_lrc("%B?") == "X"


@pytest.mark.parametrize("track", [T1])
def test_lrc_makes_xor_zero(track: str) -> None:
    lrc_char = track1_lrc(track)
    total = 0
    for char in track + lrc_char:
        total ^= ord(char) - 0x20
    assert total == 0


def test_parity_frames() -> None:
    # Track 2: ";" = 1011 (three ones) -> parity 0; "0" = 0000 -> parity 1.
    assert track2_frame(";0") == [0b01011, 0b10000]
    # Track 1: "%" = 000101 (two ones) -> parity 1; "?" = 011111 (five ones) -> parity 0.
    assert track1_frame("%?") == [0b1000101, 0b0011111]
    for value in track1_frame(T1):
        assert bin(value).count("1") % 2 == 1
    for value in track2_frame(T2):
        assert bin(value).count("1") % 2 == 1


def test_lrc_is_checked_when_present() -> None:
    good = T2 + track2_lrc(T2)
    assert parse_track2(good).pan == PAN
    bad_char = "0" if good[-1] != "0" else "1"
    with pytest.raises(SwipeError, match="LRC"):
        parse_track2(good[:-1] + bad_char)
    good1 = T1 + track1_lrc(T1)
    assert parse_track1(good1).name == "DOE/JOHN"
    with pytest.raises(SwipeError, match="LRC"):
        parse_track1(good1[:-1] + ("A" if good1[-1] != "A" else "B"))


def test_build_roundtrip_with_lrc() -> None:
    t1 = build_track1(PAN, "DOE/JOHN", "2812", "201", "123", with_lrc=True)
    t2 = build_track2(PAN, "2812", "201", "123", with_lrc=True)
    assert t1[-1] == track1_lrc(t1[:-1])
    assert parse_track1(t1) == Track1(PAN, "DOE/JOHN", "2812", "201", "123")
    assert parse_track2(t2) == Track2(PAN, "2812", "201", "123")
    assert build_track2(PAN, "2812") == ";4111111111111111=2812201?"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((PAN[:-1] + "2", "2812"), "check digit"),
        ((PAN, "2813"), "expiry"),
        ((PAN, "2812", "2"), "service code"),
        ((PAN, "2812", "201", "AB"), "unreadable"),
        ((PAN, "2812", "201", "1" * 30), "too long"),
    ],
)
def test_build_track2_refuses_invalid(args: tuple[str, ...], reason: str) -> None:
    with pytest.raises(LocalError, match=reason):
        build_track2(*args)


def test_build_track1_refuses_bad_name() -> None:
    with pytest.raises(LocalError, match="name"):
        build_track1(PAN, "X", "2812")
    with pytest.raises(LocalError):
        build_track1(PAN, "lower case", "2812")  # track 1 has no lowercase


BAD_SWIPES_T2 = [
    ("4111111111111111=28122011234?", "start"),  # missing start sentinel
    (";4111111111111111=2812201", "end"),  # partial line
    (";4111111111111112=28122011234?", "check digit"),  # bad Luhn
    (";41111111=2812201?", "check digit"),
    (";4111111111111111=2813201?", "expiry"),
    (";411111111111111128122011234?", "separator"),
    (";4111111111111111=2812?", "service code"),
    (";4111111111111111=2812201" + "1" * 20 + "?", "too long"),
    (";4111%$#@!=2812201?", "unreadable"),  # garbage
    ("", "no data"),
    ("\r\n", "no data"),
    (";4111111111111111=2812201?12", "after the end"),
    (";=2812201?", "missing"),
    (";41111111111111111111113=2812201?", "digits"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_SWIPES_T2)
def test_bad_track2_swipes(raw: str, reason: str) -> None:
    with pytest.raises(SwipeError, match=reason) as info:
        parse_track2(raw)
    message = str(info.value)
    assert "swipe the card again" in message
    assert "4111111111111111" not in message
    assert info.value.track == 2


BAD_SWIPES_T1 = [
    ("B4111111111111111^DOE/JOHN^2812201?", "start"),
    ("%B4111111111111111^DOE/JOHN^2812", "end"),
    ("%B4111111111111112^DOE/JOHN^2812201?", "check digit"),
    ("%B4111111111111111^DOE/JOHN2812201?", "separator"),
    ("%A4111111111111111^DOE/JOHN^2812201?", "format code"),
    ("%B4111111111111111^D^2812201?", "name"),
    ("%B4111111111111111^" + "A" * 27 + "^2812201?", "name"),
    ("%B4111111111111111^DOE/JOHN^2812201" + "0" * 50 + "?", "too long"),
    ("%B4111111111111111^doe/john^2812201?", "unreadable"),
    ("%B4111111111111111^DOE^JOHN^2812201?", "separators"),
    ("%?", "no data"),
    ("%B4111111111111111^DOE/JOHN^2812201?;4111111111111111=2812201?", "after the end"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_SWIPES_T1)
def test_bad_track1_swipes(raw: str, reason: str) -> None:
    with pytest.raises(SwipeError, match=reason) as info:
        parse_track1(raw)
    assert "4111111111111111" not in str(info.value)
    assert "swipe the card again" in str(info.value)


def test_card_from_both_tracks() -> None:
    card = card_from_tracks(T1, T2)
    assert card.pan == PAN
    assert card.name == "DOE/JOHN"
    assert card.track2 == "4111111111111111=28122011234567"
    assert card.entry_mode == "90"
    assert card.source == "magstripe"
    assert card.service_code == "201"


def test_card_from_one_track() -> None:
    only2 = card_from_tracks(None, T2)
    assert only2.name == "" and only2.track2.endswith("1234567")
    only1 = card_from_tracks(T1, "")
    assert only1.name == "DOE/JOHN"
    assert only1.track2 == "4111111111111111=2812201"


def test_card_from_tracks_needs_consistent_tracks() -> None:
    other = build_track2("5555555555554444", "2812")
    with pytest.raises(SwipeError, match="differs"):
        card_from_tracks(T1, other)
    with pytest.raises(SwipeError, match="expiry date differs"):
        card_from_tracks(T1, build_track2(PAN, "2901"))
    with pytest.raises(SwipeError, match="no track"):
        card_from_tracks(None, None)


def test_track2_equivalent() -> None:
    t2 = parse_track2_equivalent(bytes.fromhex("4111111111111111D28122011234567F"))
    assert t2 == Track2(PAN, "2812", "201", "1234567")
    even = parse_track2_equivalent(bytes.fromhex("4111111111111111D2812201123456"))
    assert even.discretionary == "123456"


@pytest.mark.parametrize(
    "hexdata",
    [
        "",
        "4111111111111111281220112345",  # no separator
        "4111111111111112D2812201",  # Luhn
        "4111111111111111D2813201",  # month 13
        "4111111111111111D281220111FF",  # two pad nibbles
        "4111111111111111D28122A1",  # non-BCD
        "4111111111111111D2812201" + "00" * 12,  # longer than 19 bytes
    ],
)
def test_bad_track2_equivalent(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        parse_track2_equivalent(bytes.fromhex(hexdata))


# ----------------------------------------------------------------------------- fuzzing

TRACK2_ALPHABET = "0123456789:;<=>?\r\n"
TRACK1_ALPHABET = "".join(chr(c) for c in range(0x20, 0x60)) + "\r\nab"


@pytest.mark.soak("track2")
@given(st.one_of(st.text(max_size=90), st.text(alphabet=TRACK2_ALPHABET, max_size=45)))
def test_fuzz_track2(raw: str) -> None:
    try:
        t2 = parse_track2(raw)
    except SwipeError as exc:
        assert "swipe" in str(exc)
        return
    assert parse_track2(build_track2(t2.pan, t2.expiry, t2.service_code, t2.discretionary)) == t2


@pytest.mark.soak("track1")
@given(st.one_of(st.text(max_size=90), st.text(alphabet=TRACK1_ALPHABET, max_size=85)))
def test_fuzz_track1(raw: str) -> None:
    try:
        t1 = parse_track1(raw)
    except SwipeError:
        return
    rebuilt = build_track1(t1.pan, t1.name, t1.expiry, t1.service_code, t1.discretionary)
    assert parse_track1(rebuilt) == t1


@pytest.mark.soak("track2-equivalent")
@given(st.binary(max_size=24))
def test_fuzz_track2_equivalent(raw: bytes) -> None:
    try:
        t2 = parse_track2_equivalent(raw)
    except DecodeError:
        return
    assert t2.pan.isdigit()


@given(
    st.text(alphabet="0123456789", min_size=11, max_size=18),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ /.", min_size=2, max_size=26),
    st.integers(0, 99),
    st.integers(1, 12),
    st.text(alphabet="0123456789", max_size=8),
    st.booleans(),
)
def test_build_parse_roundtrip(
    partial: str, name: str, year: int, month: int, disc: str, with_lrc: bool
) -> None:
    pan = partial + luhn_check_digit(partial)
    expiry = f"{year:02d}{month:02d}"
    t1 = build_track1(pan, name, expiry, "101", disc, with_lrc=with_lrc)
    t2 = build_track2(pan, expiry, "101", disc, with_lrc=with_lrc)
    card = card_from_tracks(t1, t2)
    assert (card.pan, card.expiry, card.name) == (pan, expiry, name.strip())
    assert card.track2 == f"{pan}={expiry}101{disc}"
