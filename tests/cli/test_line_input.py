"""LineInput on a pipe: pending input is discarded, a read can be abandoned, EOF is closed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from swipepay.cli.line_input import MAX_LINE, LineInput


@pytest.fixture
def pipe() -> Iterator[tuple[LineInput, int]]:
    read, write = os.pipe()
    try:
        yield LineInput(read), write
    finally:
        os.close(read)



def test_typed_before_the_question_is_discarded(pipe: tuple[LineInput, int]) -> None:
    lines, write = pipe
    os.write(write, b"y\n1234\n")
    lines.discard_pending()
    os.write(write, b"n\n")
    assert lines.read_line(threading.Event()) == "n"
    os.close(write)



def test_a_cancelled_read_returns_none(pipe: tuple[LineInput, int]) -> None:
    lines, write = pipe
    cancel = threading.Event()
    cancel.set()
    assert lines.read_line(cancel) is None
    os.close(write)
    assert lines.read_line(threading.Event()) is None and lines.closed


def test_input_without_newlines_is_held_in_bounded_pieces(pipe: tuple[LineInput, int]) -> None:
    lines, write = pipe
    # Before: everything up to a newline was held, however much of it came.
    writer = threading.Thread(target=os.write, args=(write, b"x" * (3 * MAX_LINE) + b"\ny\n"))
    writer.start()
    pieces = [lines.read_line(threading.Event()) for _ in range(3)]
    assert pieces == ["x" * MAX_LINE] * 3
    assert len(lines._buffer) <= MAX_LINE
    assert lines.read_line(threading.Event()) == ""  # the end of the long line
    assert lines.read_line(threading.Event()) == "y"
    writer.join(5)
    os.close(write)
