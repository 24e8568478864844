"""Full-screen front-ends (Textual): the phone as a phone, the terminal as a POS/ATM console.

They only render the applications' events and relay what the user pressed: the rules live in
:mod:`cli.app` (:class:`~cli.app.phone_app.AttendedUser`, :class:`~cli.app.terminal_app.
TerminalApp`).  :func:`wanted` says when ``phone run`` and ``terminal run`` use them.
"""

from __future__ import annotations

import sys
from typing import TextIO


def wanted(*line_modes: bool, stdout: TextIO | None = None) -> bool:
    """True when the full screen should be used: stdout (and stdin) is a terminal and none of
    the options that ask for the line mode (``--json``, ``--auto-confirm``, ``--line``...) is
    given."""
    out = stdout if stdout is not None else sys.stdout
    return not any(line_modes) and out.isatty() and sys.stdin.isatty()
