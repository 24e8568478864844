"""MSR605/MSR206 reply parser: known replies, every status, chunking, noise, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import RemoteProtocolError
from swipepay.firmware_sim.msr605 import (
    COMMANDS,
    MAX_REPLY,
    STATUS,
    BadReply,
    CommTestOk,
    Msr605Parser,
    ReaderCommandError,
    ReaderSwipeError,
    ReadReply,
    StatusReply,
    command,
    status_error,
)
from swipepay.firmware_sim.tracks import SwipeError, card_from_tracks, track1_lrc

T1 = "%B4111111111111111^DOE/JOHN^2812201000000000000?"
T2 = ";4111111111111111=28122011234567?"


def reply(tracks: dict[int, str], status: int = 0x30, markers: bytes = b"\x01\x02\x03") -> bytes:
    body = b"".join(
        b"\x1b" + markers[n - 1 : n] + text.encode("latin-1") for n, text in sorted(tracks.items())
    )
    return b"\x1bs" + body + b"?\x1c\x1b" + bytes([status])


def test_commands_are_esc_prefixed() -> None:
    assert command("read_iso") == b"\x1br"
    assert command("reset") == b"\x1ba"
    assert command("comm_test") == b"\x1be"
    assert all(cmd[0] == 0x1B for cmd in COMMANDS.values())


def test_good_read_reply() -> None:
    events = Msr605Parser().feed(reply({1: T1, 2: T2}))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, ReadReply)
    assert event.error is None
    assert event.track(1) == T1 and event.track(2) == T2 and event.track(3) is None
    card = card_from_tracks(event.track(1), event.track(2))
    assert card.pan == "4111111111111111" and card.name == "DOE/JOHN"
    assert "41111111111" not in repr(event)


def test_lrc_passed_through_and_ascii_markers() -> None:
    t1 = T1 + track1_lrc(T1)
    (event,) = Msr605Parser().feed(reply({1: t1, 3: ";0123?"}, markers=b"123"))
    assert isinstance(event, ReadReply)
    assert event.tracks == {1: t1, 3: ";0123?"}


def test_one_byte_at_a_time_with_echo_and_noise() -> None:
    parser = Msr605Parser()
    data = b"\x1ba\x1br" + b"\xff\x00" + reply({2: T2})
    events = [e for byte in data for e in parser.feed(bytes([byte]))]
    assert len(events) == 1 and isinstance(events[0], ReadReply)
    assert events[0].tracks == {2: T2}
    assert parser.buffered == 0 and parser.noise == 0


def test_comm_test_and_bare_status() -> None:
    events = Msr605Parser().feed(b"\x1by\x1b4")
    assert events[0] == CommTestOk()
    assert events[1] == StatusReply(0x34)
    assert isinstance(events[1].error, ReaderCommandError)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(0x31, ReaderSwipeError), (0x39, ReaderSwipeError), (0x32, ReaderCommandError),
     (0x34, ReaderCommandError), (0x37, ReaderCommandError)],
)
def test_status_bytes_map_to_typed_errors(status: int, kind: type[Exception]) -> None:
    (event,) = Msr605Parser().feed(reply({}, status))
    assert isinstance(event, ReadReply) and event.tracks == {}
    assert isinstance(event.error, kind)
    assert f"0x{status:02X}" in str(event.error)


def test_error_classes() -> None:
    swipe = status_error(0x31)
    assert isinstance(swipe, SwipeError) and "swipe the card again" in str(swipe)
    assert isinstance(status_error(0x32), RemoteProtocolError)
    assert status_error(0x30) is None
    assert set(STATUS) >= {0x30, 0x31, 0x32, 0x34}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x1bs\x1b\x01%B\x1c\x1b0", "no '?'"),
        (b"\x1bsXX\x1b\x01%B??\x1c\x1b0", "data before"),
        (b"\x1bs\x1b\x09abc??\x1c\x1b0", "bad track marker"),
        (b"\x1bs\x1b\x01a\x1b\x01b??\x1c\x1b0", "bad track marker"),
    ],
)
def test_malformed_replies(data: bytes, reason: str) -> None:
    (event,) = Msr605Parser().feed(data)
    assert isinstance(event, BadReply) and reason in str(event.error)
    assert isinstance(event.error, SwipeError)


def test_cut_short_and_noise_reported_at_end() -> None:
    parser = Msr605Parser()
    assert parser.feed(b"\x1bs\x1b\x01%B41111") == []
    (event,) = parser.end()
    assert isinstance(event, BadReply) and "cut short" in str(event.error)
    assert parser.feed(b"garbage\xff") == []
    (event,) = parser.end()
    assert isinstance(event, BadReply) and "unreadable" in str(event.error)
    assert parser.end() == []


def test_overlong_reply_is_dropped_and_parser_recovers() -> None:
    parser = Msr605Parser()
    events = parser.feed(b"\x1bs" + b"A" * (MAX_REPLY + 10))
    assert len(events) == 1 and isinstance(events[0], BadReply)
    assert parser.buffered <= MAX_REPLY
    (event,) = parser.feed(reply({2: T2}))
    assert isinstance(event, ReadReply)


def test_overlong_terminated_reply() -> None:
    noise = b"\x1bs" + b"A" * (MAX_REPLY + 10) + b"?\x1c\x1b0"
    events = Msr605Parser().feed(noise + reply({2: T2}))
    assert isinstance(events[0], BadReply) and isinstance(events[-1], ReadReply)


@pytest.mark.soak("msr605-stream")
@given(st.lists(st.binary(max_size=700), max_size=8))
def test_fuzz_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    parser = Msr605Parser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
        assert parser.buffered <= MAX_REPLY
    events += parser.end()
    for event in events:
        if isinstance(event, ReadReply):
            with contextlib.suppress(SwipeError):
                card_from_tracks(event.track(1), event.track(2))


@pytest.mark.soak("msr605-reply")
@given(st.binary(max_size=300), st.sampled_from([0x30, 0x31, 0x32, 0x34]))
def test_fuzz_reply_body(body: bytes, status: int) -> None:
    events = Msr605Parser().feed(b"\x1bs" + body + b"?\x1c\x1b" + bytes([status]))
    assert events, "a terminated reply always gives an event"
    for event in events:
        assert isinstance(event, ReadReply | BadReply | CommTestOk | StatusReply)
