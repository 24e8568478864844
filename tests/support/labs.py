"""Labs for tests: one is created per session (keys take time) and each test gets its own copy,
so no test sees another's ledger, STANs or phone counters."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from swipepay.center.lab import Lab, create_lab
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PhoneApplet


@pytest.fixture(scope="session")
def lab_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly created lab, never written to: copy it with :func:`copy_lab`."""
    return create_lab(tmp_path_factory.mktemp("template") / "lab").root


def copy_lab(template: Path, into: Path) -> Lab:
    """A copy of the lab at ``template`` in ``into``/lab."""
    root = into / "lab"
    shutil.copytree(template, root)
    return Lab(root)


@pytest.fixture
def lab(lab_template: Path, tmp_path: Path) -> Lab:
    """This test's own lab."""
    return copy_lab(lab_template, tmp_path)


def lab_phone(lab: Lab, name: str, choice: Choice = Choice.CONFIRM, pin: str | None = None,
              delay_polls: int = 0) -> Phone:
    """The lab phone ``name`` (its profile as saved) with a user who answers ``choice`` and
    types ``pin`` (default: the card's real PIN)."""
    profile = lab.phone_profile(name)
    typed = pin if pin is not None else lab.pins()[profile.card]
    return Phone(
        PhoneApplet(profile.identity(), profile.dukpt()),
        ScriptedUser(choice, lambda: typed, delay_polls),
        time.time,
    )
