"""A file a user names is read only if it is a regular file of bounded size; anything else is
a ConfigError at once (never a wait on a FIFO, never a whole huge file in memory)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from swipepay.drivers.store.userfile import read_regular
from swipepay.firmware_sim.errors import ConfigError


def test_a_regular_file_is_read_up_to_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    assert read_regular(path, "file", limit=101) == b"x" * 101
    with pytest.raises(ConfigError, match=r"file .* is larger than 100 bytes"):
        read_regular(path, "file", limit=100)


def test_missing_directory_and_unopenable_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"settings file .* is missing"):
        read_regular(tmp_path / "nothing", "settings file")
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_regular(tmp_path, "settings file")
    (tmp_path / "f").write_text("")
    # A file where a directory should be (ENOTDIR): an OSError other than "missing".
    with pytest.raises(ConfigError, match="cannot read trace"):
        read_regular(tmp_path / "f" / "inside", "trace")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_regular(fifo, "trace"))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    # In a thread, so a regression (an open or read waiting for a writer) fails, not hangs.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO waited for a writer"
    assert isinstance(outcome[0], ConfigError) and "not a regular file" in str(outcome[0])


def test_the_check_sees_the_opened_file_before_anything_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    seen: list[int] = []

    def refuse(info: os.stat_result) -> None:
        seen.append(info.st_size)
        raise ConfigError("refused")

    with pytest.raises(ConfigError, match="refused"):
        read_regular(path, "file", check=refuse)
    assert seen == [4]
