"""The phone's store: the DUKPT counter is on disk before its key is derived, exactly once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import swipepay.firmware_sim.dukpt as dukpt
from swipepay.center.lab import create_lab
from swipepay.drivers.store.phone_store import PhoneProfile, PhoneStore


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = create_lab(tmp_path_factory.mktemp("phones") / "lab").root
    return root / "phones" / "alice-phone.json"


@pytest.fixture
def profile_path(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "alice-phone.json"
    shutil.copy2(template, path)
    return path


def test_each_counter_is_saved_before_its_key_is_derived(
    profile_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    derive = dukpt.derive_working_key
    seen: list[tuple[int, int]] = []

    def checking(initial_key: bytes, ksn: bytes, usage: str) -> bytes:
        seen.append((dukpt.split_ksn(ksn)[1], PhoneProfile.load(profile_path).counter))
        return derive(initial_key, ksn, usage)

    monkeypatch.setattr(dukpt, "derive_working_key", checking)
    device = PhoneStore(profile_path).dukpt()
    for _ in range(3):
        device.next_pin_key()
    assert seen == [(1, 1), (2, 2), (3, 3)]  # (counter of the key, counter on disk) at derivation


def test_a_restarted_phone_never_reuses_a_counter(profile_path: Path) -> None:
    _, first = PhoneStore(profile_path).dukpt().next_pin_key()
    _, second = PhoneStore(profile_path).dukpt().next_pin_key()  # a new process
    assert dukpt.split_ksn(second)[1] > dukpt.split_ksn(first)[1]


def test_no_key_when_the_counter_cannot_be_saved(
    profile_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PhoneStore(profile_path)
    device = store.dukpt()

    def disk_full(counter: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save_counter", disk_full)
    with pytest.raises(OSError):
        device.next_pin_key()
    assert device.counter == 0 and PhoneProfile.load(profile_path).counter == 0
