"""The PC/SC fixtures: the machine's pcscd with the vpcd readers (the product's manager,
swipepay.cli.harness.pcscd) and its two slots, into which tests put in-process virtual cards.

They skip only when pcscd / vsmartcard-vpcd / pyscard are really missing and CI is not set;
in CI a missing stack fails the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from swipepay.cli.harness.pcscd import CARD_SLOT, PHONE_SLOT, Pcscd, missing_stack, wait_slot
from swipepay.drivers.vpcd import VpcdClient
from swipepay.firmware_sim.errors import ConfigError
from tests.support.ci import unavailable


@pytest.fixture(scope="module")
def pcscd() -> Iterator[Pcscd]:
    """pcscd for one test module: the slot lock is held only while that module runs, so several
    sessions on one machine (other engineers, CI shards, a demo) take turns instead of failing."""
    why = missing_stack()
    if why is not None:
        unavailable(why)
    try:
        daemon = Pcscd.ensure()
    except ConfigError as exc:
        pytest.fail(str(exc))
    try:
        yield daemon
    finally:
        daemon.stop()


#: Seconds (several of pcscd's ~400 ms presence polls) after which a card that is connected but
#: not reported PRESENT counts as missed.
_MISSED_AFTER = 2.0


@dataclass
class Slot:
    """One vpcd slot: a virtual card goes in (connects) and out (closes), and each move waits
    until pcscd reports it, so the next test starts from the state it expects."""

    reader: str
    port: int
    client: VpcdClient | None = None

    def insert(self, client: VpcdClient) -> VpcdClient:
        """Connect ``client`` and wait until pcscd reports the slot PRESENT.

        pcscd can miss a card that connects soon after the previous one left and keep the slot
        EMPTY while the card is connected (hardware_notes/pcsc.md).  When the slot is still
        EMPTY after several presence polls (~400 ms each), that is the state seen: the card is
        taken out (pcscd confirms EMPTY) and put in again, once.
        """
        self.remove()
        self.client = client
        client.insert()
        try:
            wait_slot(self.reader, True, timeout=_MISSED_AFTER)
        except ConfigError:
            client.remove()
            wait_slot(self.reader, False)
            client.insert()
            wait_slot(self.reader, True)
        return client

    def remove(self) -> None:
        """Take the card out and wait until pcscd reports the slot EMPTY."""
        client, self.client = self.client, None
        if client is not None:
            client.remove()
        wait_slot(self.reader, False)


def _emptied(slot: Slot) -> Iterator[Slot]:
    slot.remove()
    yield slot
    slot.remove()


@pytest.fixture
def slot0(pcscd: Pcscd) -> Iterator[Slot]:
    """``Virtual PCD 00 00`` (the card's slot, vpcd port 35963), empty at the start and end."""
    yield from _emptied(Slot(*CARD_SLOT))


@pytest.fixture
def slot1(pcscd: Pcscd) -> Iterator[Slot]:
    """``Virtual PCD 00 01`` (the phone's slot, vpcd port 35964), empty at the start and end."""
    yield from _emptied(Slot(*PHONE_SLOT))
