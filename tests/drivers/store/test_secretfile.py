"""Secret files: written owner-only and atomically, read only when nobody else could have read
them, and only when they are what a secret file is (a small regular file)."""

from __future__ import annotations

import os
import stat
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


def test_a_secret_file_is_read_as_a_user_file(tmp_path: Path) -> None:
    # The rules of drivers.store.userfile (tests/drivers/store/test_userfile.py) apply too.
    with pytest.raises(ConfigError, match=r"secret file .* is missing"):
        read_private(tmp_path / "nothing")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # before: a phone profile or --pin-file FIFO blocked at start
    with pytest.raises(ConfigError, match=r"secret file .* is not a regular file"):
        read_private(fifo)
    big = tmp_path / "big"
    write_private(big, b"x" * 101)
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        read_private(big, limit=100)
