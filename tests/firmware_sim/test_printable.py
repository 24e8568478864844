"""One line of text, whatever it quotes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.printable import one_line


def test_controls_are_escaped_and_the_rest_kept() -> None:
    assert one_line("plain, é ☕\tand a tab") == "plain, é ☕\tand a tab"
    assert one_line("a\nb\r\x1b[2J\x00\x7f") == "a\\nb\\r\\x1b[2J\\x00\\x7f"
    assert one_line("\x9b31m\x85\u2028") == "\\x9b31m\\x85\\u2028"


@given(st.text())
def test_the_result_is_one_line_without_escape_sequences(text: str) -> None:
    shown = one_line(text)
    assert len(shown.splitlines()) <= 1
    assert not any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) < 0xA0 for c in shown)
