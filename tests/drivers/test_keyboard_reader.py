"""``keyboard:`` driver with a pipe as stdin (what a relaying program or a test harness gives)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import IO, Any

import pytest

from swipepay.drivers.base import DriverContext
from swipepay.drivers.keyboard_reader import KeyboardCardReader
from swipepay.drivers.registry import open_card_reader
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError
from swipepay.firmware_sim.tracks import SwipeError

PAN = "4111111111111111"
T1 = "%B4111111111111111^DOE/JOHN^2812201000000000000?"
T2 = ";4111111111111111=28122011234567?"


@pytest.fixture
def pipe() -> Iterator[tuple[IO[bytes], int]]:
    """(read end as a file object to use as stdin, write end fd)."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=0)
    try:
        yield reader, write_fd
    finally:
        reader.close()
        with contextlib.suppress(OSError):
            os.close(write_fd)


def open_reader(stdin: IO[Any]) -> Any:
    return open_card_reader("keyboard:", DriverContext(stdin=stdin))


def test_good_swipe_both_tracks(pipe: tuple[IO[bytes], int]) -> None:
    stdin, write_fd = pipe
    os.write(write_fd, f"{T1}\n{T2}\n".encode())
    card = open_reader(stdin).read_card(5.0)
    assert card.pan == PAN and card.name == "DOE/JOHN" and card.source == "magstripe"


def test_track2_only_then_eof(pipe: tuple[IO[bytes], int]) -> None:
    stdin, write_fd = pipe
    os.write(write_fd, f"{T2}\n".encode())
    reader = open_reader(stdin)
    assert reader.read_card(5.0).pan == PAN  # ends after the idle gap
    os.close(write_fd)
    with pytest.raises(TransportError, match="stdin closed"):
        reader.read_card(5.0)


@pytest.mark.parametrize(
    ("typed", "text"),
    [
        (";4111111111111112=28122011234567?\n", "check digit"),
        ("4111111111111111=28122011234567?\n", "start of the track missing"),
        ("hello world\n", "start of the track missing"),
        (";41111111", "end of the track missing"),  # partial, then the gap
    ],
)
def test_bad_swipe_asks_again(pipe: tuple[IO[bytes], int], typed: str, text: str) -> None:
    stdin, write_fd = pipe
    os.write(write_fd, typed.encode())
    with pytest.raises(SwipeError, match="swipe the card again") as info:
        open_reader(stdin).read_card(5.0)
    assert text in str(info.value)


def test_partial_line_at_eof(pipe: tuple[IO[bytes], int]) -> None:
    stdin, write_fd = pipe
    os.write(write_fd, b"%B41111111")
    os.close(write_fd)
    with pytest.raises(SwipeError, match="end of the track missing"):
        open_reader(stdin).read_card(5.0)


def test_timeout(pipe: tuple[IO[bytes], int]) -> None:
    stdin, _ = pipe
    with pytest.raises(LinkTimeout, match="no card swiped"):
        open_reader(stdin).read_card(0.2)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="terminal or a pipe"):
        KeyboardCardReader.from_url("keyboard:", DriverContext(stdin=io.StringIO("")))
    with pytest.raises(ConfigError, match="no parameters"):
        open_card_reader("keyboard:foo")


def test_terminal_stdin_echo_off_and_restored() -> None:
    """A pty stands in for the keyboard's terminal: the swipe is read, echo is put back after."""
    termios = pytest.importorskip("termios")
    master, slave = os.openpty()
    stdin = os.fdopen(slave, "rb", buffering=0)
    try:
        before = termios.tcgetattr(slave)[3] & termios.ECHO
        reader = open_reader(stdin)
        os.write(master, f"{T1}\n{T2}\n".encode())
        assert reader.read_card(5.0).pan == PAN
        assert termios.tcgetattr(slave)[3] & termios.ECHO == before
    finally:
        stdin.close()
        os.close(master)
