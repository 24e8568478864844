"""Text that is shown one line at a time (a log record, a row of a trace): its control
characters escaped, so what it quotes cannot forge a line or drive the reader's terminal."""

from __future__ import annotations

from typing import Final

#: Control characters (C0 but tab, DEL, C1, whose 0x9B is a CSI to some terminals) and the
#: Unicode line and paragraph separators, as the escapes a line shows instead.
_CONTROLS: Final[dict[int, str]] = (
    {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
    | {0x2028: "\\u2028", 0x2029: "\\u2029"}
    | {0x0A: "\\n", 0x0D: "\\r"}
)


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\r``, ``\\x1b``, ...)."""
    if text.isprintable():  # the usual case, one C-level scan
        return text
    return text.translate(_CONTROLS)
