"""Pseudo-terminals: a program run as a person runs it in a terminal window, and two
pseudo-terminals joined by socat (a serial line without hardware)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pexpect
import pytest

from swipepay.cli.harness.processes import child_env, swipepay_argv
from tests.support.ci import unavailable


def _as_from_a_shell() -> None:
    """Ctrl-C and Ctrl-\\ back to their defaults in the child, as an interactive shell starts a
    program.  A test run started in the background (``cmd &`` without job control) inherits
    them ignored, and CPython then installs no KeyboardInterrupt handler: every Ctrl-C test
    would fail for a reason no user meets."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def spawn_swipepay(
    *args: str, timeout: float, dimensions: tuple[int, int] = (24, 80)
) -> pexpect.spawn:
    """``swipepay ARGS`` on a pseudo-terminal of ``dimensions`` (rows, columns), as a person
    starts it from a shell; ``timeout`` bounds each ``expect``."""
    argv = swipepay_argv(*args)
    return pexpect.spawn(argv[0], argv[1:], env=child_env(), encoding="utf-8", timeout=timeout,
                         dimensions=dimensions, preexec_fn=_as_from_a_shell)  # fmt: skip


@pytest.fixture
def pty_pair() -> Iterator[tuple[str, str]]:
    """(driver end, device end): what is written on one end is read on the other.

    Ready when socat logs "starting data transfer loop", after it has opened both ends.
    """
    if shutil.which("socat") is None:
        unavailable("socat is not installed (scripts/dev test installs it)")
    proc = subprocess.Popen(
        ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        text = b""
        deadline = time.monotonic() + 10
        while b"starting data transfer loop" not in text:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stderr], [], [], max(remaining, 0))
            if not ready:
                pytest.fail(f"socat did not start: {text.decode(errors='replace')}")
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                pytest.fail(f"socat exited: {text.decode(errors='replace')}")
            text += chunk
        paths = re.findall(r"PTY is (\S+)", text.decode())
        assert len(paths) == 2, text
        yield paths[0], paths[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stderr.close()
