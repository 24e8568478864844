"""What devices this machine has for each driver family (``swipepay readers``).

Each driver module that talks to hardware lists its own devices (``list_devices()`` in
:mod:`drivers.pcsc`, :mod:`drivers.serial_reader`, :mod:`drivers.nfcpy_link`) as
:class:`Device` rows holding the URL that opens them.  This module runs them one family at a
time, imports each stack only then, and turns a missing stack into a :class:`Family` with a
``problem`` instead of an exception, so one missing library never hides the other families.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from swipepay.firmware_sim.errors import SwipepayError


@dataclass(frozen=True)
class Device:
    """One device a driver URL can open, with what it is or what state it is in."""

    url: str
    detail: str


@dataclass(frozen=True)
class Family:
    """The devices of one driver family; ``empty`` says what no device means for it."""

    title: str
    devices: list[Device] = field(default_factory=list)
    empty: str = ""
    #: Why the family could not be listed (its library is missing, pcscd is down, ...).
    problem: str | None = None


def _pcsc() -> list[Device]:
    from swipepay.drivers.pcsc import list_devices

    return list_devices()


def _serial() -> list[Device]:
    from swipepay.drivers.serial_reader import list_devices

    return list_devices()


def _nfcpy() -> list[Device]:
    from swipepay.drivers.nfcpy_link import list_devices

    return list_devices()


@dataclass(frozen=True)
class Lister:
    """How to list one family: its lister, what an empty list means, how to get its stack."""

    title: str
    run: Callable[[], list[Device]]
    empty: str
    missing: str


FAMILIES: tuple[Lister, ...] = (
    Lister(
        "PC/SC readers (pcsc:)",
        _pcsc,
        "pcscd is running but lists no readers",
        "pyscard is not installed: pip install swipepay[pcsc]",
    ),
    Lister(
        "Serial ports (serial:)",
        _serial,
        "no serial ports",
        "pyserial is not installed: pip install pyserial",
    ),
    Lister(
        "nfcpy devices (nfcpy:)",
        _nfcpy,
        "no nfcpy USB devices; nfcpy's udp: simulator is always available",
        "nfcpy is not installed: pip install swipepay[nfc]",
    ),
)


def discover() -> list[Family]:
    """Every family, in :data:`FAMILIES` order; never raises for a missing stack."""
    families = []
    for lister in FAMILIES:
        try:
            families.append(Family(lister.title, lister.run(), lister.empty))
        except SwipepayError as exc:
            families.append(Family(lister.title, empty=lister.empty, problem=f"unavailable: {exc}"))
        except ImportError:
            families.append(Family(lister.title, empty=lister.empty, problem=lister.missing))
    return families
