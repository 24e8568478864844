"""The shared 2-byte length framer: round trips under any chunking, limits, hostile streams."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.framing import (
    ANY_LENGTH,
    MAX_LENGTH,
    FrameDecoder,
    FrameError,
    FrameLimits,
    encode,
)


def test_encode_prefixes_the_length_big_endian() -> None:
    assert encode(b"\x04") == b"\x00\x01\x04"
    assert encode(b"") == b"\x00\x00"
    assert encode(bytes(300))[:2] == b"\x01\x2c"


def test_encode_refuses_what_the_link_does_not_allow() -> None:
    with pytest.raises(FrameError):
        encode(bytes(MAX_LENGTH + 1))
    with pytest.raises(FrameError):
        encode(b"", FrameLimits(min_length=1))
    with pytest.raises(FrameError):
        encode(bytes(11), FrameLimits(max_length=10))


def test_decoder_splits_and_buffers() -> None:
    d = FrameDecoder()
    assert d.feed(b"\x00\x03ab") == []
    assert d.pending == 4
    assert d.feed(b"c\x00\x00\x00\x01z\x00") == [b"abc", b"", b"z"]
    assert d.pending == 1


@pytest.mark.parametrize("prefix", [b"\x00\x00", b"\x00\x0b", b"\xff\xff"])
def test_decoder_refuses_a_length_outside_the_limits_at_once(prefix: bytes) -> None:
    with pytest.raises(FrameError, match=r"outside 1\.\.10"):
        FrameDecoder(FrameLimits(1, 10)).feed(prefix)


def test_impossible_limits_are_a_bug() -> None:
    with pytest.raises(ValueError):
        FrameLimits(5, 4)
    with pytest.raises(ValueError):
        FrameLimits(0, MAX_LENGTH + 1)


@given(
    st.lists(st.binary(max_size=300), max_size=6),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_any_chunking_gives_back_the_messages(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode(b) for b in bodies)
    d = FrameDecoder()
    out: list[bytes] = []
    at, i = 0, 0
    while at < len(stream):
        step = cuts[i % len(cuts)]
        out += d.feed(stream[at : at + step])
        at, i = at + step, i + 1
    assert out == bodies and d.pending == 0


@given(st.binary(max_size=300), st.integers(0, 301))
def test_a_cut_stream_keeps_exactly_the_rest(body: bytes, cut: int) -> None:
    framed = encode(body)
    cut = min(cut, len(framed) - 1)
    d = FrameDecoder()
    assert d.feed(framed[:cut]) == []
    assert d.pending == cut
    assert d.feed(framed[cut:]) == [body]


@given(st.binary(max_size=80), st.integers(0, 40), st.integers(0, 40))
def test_hostile_streams_give_frames_within_limits_or_frame_errors(
    data: bytes, low: int, span: int
) -> None:
    limits = FrameLimits(low, low + span)
    d = FrameDecoder(limits)
    with contextlib.suppress(FrameError):
        for message in d.feed(data):
            assert limits.min_length <= len(message) <= limits.max_length
    assert d.limits is limits and ANY_LENGTH.max_length == MAX_LENGTH


@given(st.binary(max_size=2000))
def test_without_limits_garbage_is_frames_plus_a_rest(stream: bytes) -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(stream)
    assert sum(2 + len(f) for f in frames) + decoder.pending == len(stream)


def test_the_decoder_knows_when_the_incomplete_frame_began() -> None:
    d = FrameDecoder()
    assert d.began is None and not d.overdue(100.0, 1.0)
    d.feed(b"\x00", now=10.0)
    d.feed(b"\x02a", now=11.0)  # the same frame: still began at 10
    assert d.began == 10.0 and d.overdue(12.0, 2.0) and not d.overdue(11.9, 2.0)
    d.feed(b"b\x00\x01", now=13.0)  # that frame done, the next one begun
    assert d.began == 13.0
    d.feed(b"c", now=14.0)
    assert d.began is None


def test_a_link_whose_peer_speaks_first_is_inside_a_frame_from_the_start() -> None:
    d = FrameDecoder(began=5.0)
    assert d.overdue(8.0, 3.0)
    assert d.feed(b"\x00\x00", now=6.0) == [b""] and d.began is None
