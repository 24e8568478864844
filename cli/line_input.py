"""Line input that can be abandoned and never reads ahead of the question.

The phone's line mode asks "confirm this payment?" on a thread while the link thread serves the
terminal; when the payment ends (timeout, terminal gone) the question must go away, and input
typed before it was asked must not answer it.  :class:`LineInput` therefore reads its file
descriptor with ``select`` in short slices (a read can be cancelled), discards everything
pending before a question (``tcflush`` on a terminal, a drain elsewhere) and turns echo off on a
terminal while a secret is typed.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from typing import Final

try:
    import termios
except ImportError:  # not a POSIX system: no terminal control, pipes still work
    termios = None  # type: ignore[assignment]

#: How often a waiting read looks at its cancel flag (seconds).
SLICE: Final = 0.1
#: The longest line held: input without a newline (a pipe of noise) is returned in pieces of
#: this size instead of growing in memory; each piece is a wrong answer, and what is left is
#: discarded before the next question.
MAX_LINE: Final = 4096


class LineInput:
    """Lines from file descriptor ``fd`` (standard input by default)."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.tty = os.isatty(fd) and termios is not None
        self._buffer = b""
        self._saved = termios.tcgetattr(fd) if self.tty else None
        self.closed = False

    def discard_pending(self) -> None:
        """Forget everything typed so far (before the question was on screen)."""
        self._buffer = b""
        if self.tty:
            termios.tcflush(self.fd, termios.TCIFLUSH)
            return
        while not self.closed and select.select([self.fd], [], [], 0)[0]:
            if not os.read(self.fd, 4096):
                self.closed = True

    def read_line(
        self, cancel: threading.Event, *, prompt: str = "", secret: bool = False
    ) -> str | None:
        """Show ``prompt`` and return the next line, without its newline; None when ``cancel``
        was set first or the input is closed.  With ``secret`` a terminal does not echo what is
        typed — echo is off before the prompt appears, so nothing typed after it shows."""
        if secret and self.tty:
            attrs = termios.tcgetattr(self.fd)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        if prompt:
            sys.stdout.write(prompt)
            sys.stdout.flush()
        try:
            while b"\n" not in self._buffer and len(self._buffer) < MAX_LINE:
                if cancel.is_set() or self.closed:
                    return None
                if select.select([self.fd], [], [], SLICE)[0]:
                    data = os.read(self.fd, 1024)
                    if not data:
                        self.closed = True
                    self._buffer += data
            end = self._buffer.find(b"\n", 0, MAX_LINE)
            if end < 0:  # no newline in the first MAX_LINE bytes: a piece, not a line
                line, self._buffer = self._buffer[:MAX_LINE], self._buffer[MAX_LINE:]
            else:
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            return line.decode("utf-8", "replace").rstrip("\r")
        finally:
            if secret and self.tty:
                self.restore()

    def restore(self) -> None:
        """Put the terminal back as it was when this object was made (echo on)."""
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
