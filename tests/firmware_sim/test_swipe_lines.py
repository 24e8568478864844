"""Raw-line / keyboard-wedge swipe splitter: orders, one line, LRC ambiguity, bad swipes, fuzz."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import DecodeError
from swipepay.firmware_sim.swipe_lines import MAX_LINE, Swipe, SwipeSplitter, split_line
from swipepay.firmware_sim.tracks import (
    SwipeError,
    build_track1,
    build_track2,
    track1_lrc,
    track2_lrc,
)

PAN = "4111111111111111"
T1 = "%B4111111111111111^DOE/JOHN^2812201000000000000?"
T2 = ";4111111111111111=28122011234567?"
BAD_LRC = "5" if track2_lrc(T2) != "5" else "6"


def swipes_of(*chunks: bytes | str, end: bool = True) -> list[Swipe]:
    splitter = SwipeSplitter()
    out = [s for chunk in chunks for s in splitter.feed(chunk)]
    if end:
        out += splitter.end_of_swipe()
    return out


@pytest.mark.parametrize(
    "data",
    [
        f"{T1}\r\n{T2}\r\n",
        f"{T2}\n{T1}\n",
        f"{T1}{T2}\r",
        f"{T1}{track1_lrc(T1)}\r\n{T2}{track2_lrc(T2)}\r\n",
    ],
)
def test_both_tracks_complete_without_end_event(data: str) -> None:
    (swipe,) = swipes_of(data.encode(), end=False)
    card = swipe.card()
    assert card.pan == PAN and card.name == "DOE/JOHN" and card.expiry == "2812"


def test_one_track_needs_end_of_swipe() -> None:
    splitter = SwipeSplitter()
    assert splitter.feed(T2 + "\n") == []
    assert splitter.pending
    (swipe,) = splitter.end_of_swipe()
    assert swipe.card().pan == PAN and swipe.track1 is None
    assert not splitter.pending and splitter.end_of_swipe() == []


def test_byte_at_a_time_and_repeat_starts_new_swipe() -> None:
    data = f"{T2}\n{T2}\n".encode()
    splitter = SwipeSplitter()
    out = [s for i in range(len(data)) for s in splitter.feed(data[i : i + 1])]
    out += splitter.end_of_swipe()
    assert len(out) == 2 and all(s.card().pan == PAN for s in out)


def _t1_with_lrc(char: str) -> str:
    """A track 1 whose LRC is ``char`` (search the discretionary data)."""
    alphabet = [chr(c) for c in range(0x30, 0x5B) if chr(c) not in "?^"]
    for disc in (a + b for a in alphabet for b in alphabet):
        t1 = build_track1(PAN, "DOE/JOHN", "2812", "201", disc)
        if track1_lrc(t1) == char:
            return t1
    raise AssertionError(char)


@pytest.mark.parametrize("lrc", [";", "%"])
def test_lrc_that_looks_like_a_start_sentinel(lrc: str) -> None:
    t1 = _t1_with_lrc(lrc)
    # LRC then track 2 on one line: the sentinel after the LRC decides.
    assert split_line(t1 + lrc + T2) == [(1, t1 + lrc), (2, T2)]
    # LRC at the end of the line: cannot be a track of its own.
    assert split_line(t1 + lrc) == [(1, t1 + lrc)]
    (swipe,) = swipes_of(f"{t1}{lrc}{T2}\n", end=False)
    assert swipe.card().pan == PAN


def test_start_sentinel_after_end_sentinel_starts_next_track() -> None:
    assert split_line(T1 + T2) == [(1, T1), (2, T2)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("4111111111111111=28122011234567?\n", "start of the track missing"),  # no sentinel
        (f"{T1}\n{T2}{BAD_LRC}\n", "check character"),  # bad LRC
        (";4111111111111112=28122011234567?\n", "check digit"),  # bad Luhn
        ("\x00\xffgarbage\x13\n", "start of the track missing"),  # garbage
        (";41111111111", "end of the track missing"),  # partial line, no terminator
        (f"{T1}\nnoise\n{T2}\n", "start of the track missing"),  # junk spoils the swipe
        (f"{T2}trailing\n", "unexpected data"),
        ("%" + "A" * (MAX_LINE + 5) + "\n", "longer than"),
    ],
)
def test_bad_swipes_ask_for_another(data: str, reason: str) -> None:
    swipes = swipes_of(data.encode("latin-1"))
    assert len(swipes) == 1
    with pytest.raises(SwipeError, match="swipe the card again") as info:
        swipes[0].card()
    assert reason in str(info.value)


def test_repr_hides_track_data() -> None:
    (swipe,) = swipes_of(T2 + "\n")
    assert PAN[6:12] not in repr(swipe)


def test_str_input_like_a_keyboard() -> None:
    t2 = build_track2(PAN, "2812")
    (swipe,) = swipes_of(t2 + "\n")
    assert swipe.card().track2 == f"{PAN}=2812201"


@given(st.lists(st.binary(max_size=400), max_size=8))
def test_fuzz_bytes(chunks: list[bytes]) -> None:
    splitter = SwipeSplitter()
    swipes: list[Swipe] = []
    for chunk in chunks:
        swipes += splitter.feed(chunk)
        assert splitter.buffered <= MAX_LINE
    swipes += splitter.end_of_swipe()
    assert not splitter.pending
    for swipe in swipes:
        with contextlib.suppress(DecodeError):
            swipe.card()


@given(st.lists(st.sampled_from([T1, T2, "%", ";", "?", "=", "^", "\n", "\r", "x", "1", " "])))
def test_fuzz_track_shaped_text(pieces: list[str]) -> None:
    swipes = swipes_of("".join(pieces))
    for swipe in swipes:
        with contextlib.suppress(SwipeError):
            swipe.card()
