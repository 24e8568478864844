"""A virtual contactless EMV card on an nfcpy device (or ``udp:``), for the ``nfcpy:`` card reader.

The lab's :class:`~firmware_sim.cards.emv_card.EmvCardApplet` answers behind the same ISO-DEP
card emulation the phone uses (:class:`drivers.nfcpy_link.CardEmulator`), so the contactless
read path (anticollision, RATS, chaining, PPSE, GPO, READ RECORD) runs over real nfcpy code
without a card on a reader.
"""

from __future__ import annotations

import threading
from typing import Any

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.nfcpy_link import CardEmulator, nfcpy_path
from swipepay.firmware_sim.cards.emv_card import EmvCardApplet
from swipepay.firmware_sim.cards.spec import CardSpec
from swipepay.firmware_sim.errors import ConfigError


class NfcpyCardServer:
    """Serves one lab card as a contactless EMV card until ``stop`` (or one tap with ``once``)."""

    def __init__(self, url: str, path: str, **options: Any) -> None:
        self.url = url
        self.emulator = CardEmulator(url, path, **options)

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> NfcpyCardServer:
        return cls(url, nfcpy_path(url))

    def serve(
        self, card: CardSpec, stop: threading.Event | None = None, once: bool = False
    ) -> None:
        if "contactless" not in card.interfaces:
            raise ConfigError(f"card {card.name} has no contactless interface")
        applet = EmvCardApplet(card.emv_profile(), "contactless")
        self.emulator.serve_handler(applet.process, applet.reset, stop, once)

    def close(self) -> None:
        self.emulator.close()
