"""Two pseudo-terminals joined by socat: a serial line without hardware."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.ci import unavailable


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
