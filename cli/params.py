"""Click parameter types the commands share."""

from __future__ import annotations

import math
from typing import Any

import click

#: The longest wait any command takes (a day): a longer one is a mistake, not a setting.
MAX_WAIT_S = 86_400.0


class Seconds(click.FloatRange):
    """A number of seconds in a range, and finite.

    ``click.FloatRange`` lets NaN through (no comparison is true of it), and NaN or infinity
    then fails deep inside (``socket.settimeout``, a conversion to milliseconds) or waits for
    ever.  By default above 0 (``low_open``) and at most :data:`MAX_WAIT_S`.
    """

    name = "seconds"

    def __init__(
        self, low: float = 0.0, high: float = MAX_WAIT_S, *, low_open: bool = True
    ) -> None:
        super().__init__(low, high, min_open=low_open)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds
