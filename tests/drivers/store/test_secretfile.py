"""Secret files: written owner-only and atomically, read only when nobody else could have read
them, and only when they are what a secret file is (a small regular file)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from swipepay.drivers.store.secretfile import read_private, write_private
from swipepay.firmware_sim.errors import ConfigError

SECRET = b"0123456789abcdef"


def test_written_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.hex"
    write_private(path, SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_private(path) == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o610, 0o601, 0o602])
def test_a_file_others_could_read_is_refused_without_its_content(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.hex"
    write_private(path, SECRET)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="others may have read it") as info:
        read_private(path)
    assert SECRET.decode() not in str(info.value)


def test_what_is_not_a_small_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        read_private(tmp_path / "nothing")
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_private(directory)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException | bytes] = []
    # In a thread, so a regression (an open or read waiting for a writer) fails, not hangs.
    reader = threading.Thread(target=lambda: _catch(outcome, fifo), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO waited for a writer"
    assert isinstance(outcome[0], ConfigError) and "not a regular file" in str(outcome[0])
    big = tmp_path / "big"
    write_private(big, b"x" * 101)
    assert read_private(big, limit=101) == b"x" * 101
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        read_private(big, limit=100)


def test_a_path_that_cannot_be_opened_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "k.hex"
    write_private(path, SECRET)
    # A file where a directory should be (ENOTDIR): an OSError other than "missing", which
    # escaped as it was before; it happens as root too, unlike a mode-000 file.
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_private(path / "inside")


def _catch(outcome: list[BaseException | bytes], path: Path) -> None:
    try:
        outcome.append(read_private(path))
    except BaseException as exc:  # handed to the test thread
        outcome.append(exc)
