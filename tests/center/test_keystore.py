"""Center keys: 0600 files, refusal of exposed secrets, no secrets in reprs or errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from swipepay.center.keystore import KEY_FILES, CenterKeys
from swipepay.firmware_sim.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_load_round_trip_with_mode_0600(tmp_path: Path) -> None:
    keys = CenterKeys.generate()
    old_umask = os.umask(0)  # even a permissive umask must not widen the files
    try:
        keys.save(tmp_path / "lab")
    finally:
        os.umask(old_umask)
    for kf in KEY_FILES:
        assert mode(tmp_path / "lab" / kf.filename) == 0o600
    assert mode(tmp_path / "lab") == 0o700
    assert CenterKeys.load(tmp_path / "lab") == keys


def test_save_tightens_an_existing_readable_file(tmp_path: Path) -> None:
    CenterKeys.generate().save(tmp_path)
    bdk_file = tmp_path / "center-bdk.hex"
    bdk_file.chmod(0o644)
    keys = CenterKeys.generate()
    keys.save(tmp_path)
    assert mode(bdk_file) == 0o600
    assert CenterKeys.load(tmp_path) == keys


@pytest.mark.parametrize("filename", ["center-bdk.hex", "center-pvk.hex"])
@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o620, 0o610])
def test_load_refuses_exposed_secret_files(tmp_path: Path, filename: str, bad_mode: int) -> None:
    keys = CenterKeys.generate()
    keys.save(tmp_path)
    (tmp_path / filename).chmod(bad_mode)
    with pytest.raises(ConfigError) as info:
        CenterKeys.load(tmp_path)
    assert filename in str(info.value)
    assert keys.bdk.hex() not in str(info.value) and keys.pvk.hex() not in str(info.value)


def test_bdk_id_is_not_secret(tmp_path: Path) -> None:
    keys = CenterKeys.generate()
    keys.save(tmp_path)
    (tmp_path / "center-bdk-id.hex").chmod(0o644)
    assert CenterKeys.load(tmp_path) == keys


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        CenterKeys.load(tmp_path)
    CenterKeys.generate().save(tmp_path)
    (tmp_path / "center-pvk.hex").write_text("zz\n")
    with pytest.raises(ConfigError, match="not hex"):
        CenterKeys.load(tmp_path)
    (tmp_path / "center-pvk.hex").write_text("00ff\n")
    with pytest.raises(ConfigError, match="32 bytes"):
        CenterKeys.load(tmp_path)


def test_repr_shows_only_the_bdk_id() -> None:
    keys = CenterKeys.generate(bdk_id=bytes.fromhex("0a0b0c0d"))
    text = repr(keys)
    assert "bdk_id=b'\\n\\x0b\\x0c\\r'" in text
    assert keys.bdk.hex() not in text and repr(keys.bdk) not in text
    assert keys.pvk.hex() not in text and repr(keys.pvk) not in text


def test_lengths_are_checked() -> None:
    with pytest.raises(ConfigError):
        CenterKeys(bdk=bytes(8), bdk_id=bytes(4), pvk=bytes(32))
    with pytest.raises(ConfigError):
        CenterKeys(bdk=bytes(16), bdk_id=bytes(8), pvk=bytes(32))
