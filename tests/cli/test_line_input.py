"""LineInput on a pipe: pending input is discarded, a read can be abandoned, EOF is closed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from swipepay.cli.line_input import LineInput


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
