"""Waiting for a condition another thread, process or coroutine makes true: polled, bounded (a
condition that never holds fails the test instead of hanging it), never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot


def eventually(ready: Callable[[], bool], within: float = 10.0, every: float = 0.01) -> None:
    """Block until ``ready()`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not ready():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(every)


async def until(
    ready: Callable[[], bool],
    within: float = 10.0,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
    every: float = 0.01,
) -> None:
    """Let the event loop run (``pause(every)`` between looks) until ``ready()`` holds; fail
    after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not ready():
        assert time.monotonic() < deadline, "condition not reached"
        await pause(every)


async def until_shown(pilot: Pilot[Any], ready: Callable[[], bool], within: float = 10.0) -> None:
    """A Textual app under the pilot: run it until ``ready()``, then let it lay out what it
    changed, before anything is pressed or clicked."""
    await until(ready, within, pilot.pause, every=0.02)
    await pilot.pause()
