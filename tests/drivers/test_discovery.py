"""Device discovery for ``swipepay readers``: every family listed, a missing stack said once."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from swipepay.cli.main import main
from swipepay.drivers import discovery
from swipepay.drivers.discovery import Device, Family, Lister, discover
from swipepay.firmware_sim.errors import ConfigError


def _missing() -> list[Device]:
    raise ImportError("No module named 'nfc'", name="nfc")


def _down() -> list[Device]:
    raise ConfigError("pcscd is not running")


def _two() -> list[Device]:
    return [Device("serial:/dev/ttyUSB0", "MSR605"), Device("serial:/dev/ttyS0", "n/a")]


def _none() -> list[Device]:
    return []


@pytest.fixture
def families(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        discovery,
        "FAMILIES",
        (
            Lister("A", _missing, "no A", "a is not installed: pip install a"),
            Lister("B", _down, "no B", "-"),
            Lister("C", _two, "no C", "-"),
            Lister("D", _none, "no D devices", "-"),
        ),
    )


@pytest.mark.usefixtures("families")
def test_each_family_is_listed_or_says_why_not() -> None:
    found = discover()
    assert [f.title for f in found] == ["A", "B", "C", "D"]
    assert found[0] == Family("A", [], "no A", "a is not installed: pip install a")
    assert found[1].problem == "unavailable: pcscd is not running"
    assert [d.url for d in found[2].devices] == ["serial:/dev/ttyUSB0", "serial:/dev/ttyS0"]
    assert found[3].devices == [] and found[3].problem is None


@pytest.mark.usefixtures("families")
def test_readers_only_renders() -> None:
    result = CliRunner().invoke(main, ["readers"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "A",
        "  a is not installed: pip install a",
        "B",
        "  unavailable: pcscd is not running",
        "C",
        "  serial:/dev/ttyUSB0  (MSR605)",
        "  serial:/dev/ttyS0  (n/a)",
        "D",
        "  (no D devices)",
    ]


def test_the_real_families_never_raise() -> None:
    titles = [f.title for f in discover()]
    assert titles == ["PC/SC readers (pcsc:)", "Serial ports (serial:)", "nfcpy devices (nfcpy:)"]


def test_serial_ports_are_listed_by_the_serial_driver() -> None:
    from swipepay.drivers.serial_reader import list_devices

    assert all(d.url.startswith("serial:") for d in list_devices())
