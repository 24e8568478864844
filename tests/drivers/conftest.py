"""Fixtures for the PC/SC tests: a private pcscd with the vpcd readers, and its two slots.

They skip only when pcscd / vsmartcard-vpcd / pyscard are really missing and CI is not set;
in CI a missing stack fails the tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.drivers.pcscd import Pcscd, PcscdUnavailable, Slot


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PC/SC stack unavailable in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pcscd() -> Iterator[Pcscd]:
    """pcscd for one test module: the slot lock is held only while PC/SC tests run, so several
    sessions on one machine (other engineers, CI shards) take turns instead of failing."""
    try:
        import smartcard  # noqa: F401
    except ImportError:
        _unavailable("pyscard is not installed (pip install swipepay[pcsc])")
    if shutil.which("pcscd") is None and not os.path.exists("/usr/sbin/pcscd"):
        _unavailable("pcscd is not installed (scripts/dev test installs it)")
    if not os.path.exists("/usr/lib/pcsc/drivers/serial/libifdvpcd.so"):
        _unavailable("vsmartcard-vpcd is not installed (scripts/dev test installs it)")
    try:
        daemon = Pcscd.start()
    except PcscdUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def slot0(pcscd: Pcscd) -> Iterator[Slot]:
    """``Virtual PCD 00 00`` (vpcd port 35963), empty at the start and at the end."""
    slot = pcscd.slot("Virtual PCD 00 00")
    slot.remove()
    yield slot
    slot.remove()


@pytest.fixture
def slot1(pcscd: Pcscd) -> Iterator[Slot]:
    """``Virtual PCD 00 01`` (vpcd port 35964), empty at the start and at the end."""
    slot = pcscd.slot("Virtual PCD 00 01")
    slot.remove()
    yield slot
    slot.remove()
