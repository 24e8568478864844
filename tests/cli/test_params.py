"""The shared click types: a number of seconds is finite and in its range (click's FloatRange
alone lets NaN through)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from swipepay.cli.main import main
from swipepay.cli.params import MAX_WAIT_S, Seconds


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "0", "-1", str(MAX_WAIT_S + 1)])
def test_what_is_no_wait_is_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        Seconds().convert(text, None, None)


def test_waits_in_range_are_taken() -> None:
    assert Seconds().convert("0.25", None, None) == 0.25
    assert Seconds().convert(str(MAX_WAIT_S), None, None) == MAX_WAIT_S
    assert Seconds(0, 600, low_open=False).convert("0", None, None) == 0.0
    with pytest.raises(click.BadParameter):
        Seconds(0, 600, low_open=False).convert("nan", None, None)


@pytest.mark.parametrize(
    "args",
    [
        # Before: a ValueError traceback from socket.settimeout (nan), an OverflowError (inf).
        ["conformance", "--link", "tcp:127.0.0.1:9", "--connect-timeout", "nan"],
        ["conformance", "--link", "tcp:127.0.0.1:9", "--connect-timeout", "inf"],
        # Before: FloatRange(0.1, 3600) took nan, then math.ceil failed with a traceback.
        ["bench", "center", "--seconds", "nan"],
        # Before: taken, and the server or phone ran with a wait of nan, -1 or for ever.
        ["center", "serve", "--idle-timeout", "-1"],
        ["phone", "run", "--profile", "p.json", "--link", "tcp:127.0.0.1:0", "--timeout", "nan"],
    ],
)
def test_commands_refuse_such_waits_before_doing_anything(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output and "Traceback" not in result.output
