"""``mock:<card>[?via=tap|insert|swipe]`` — a card reader with the lab's simulated cards.

The card is read through the same EMV read sequence or track parser a real reader feeds, so a
mock run exercises the terminal's card-reading code.  ``mock:none`` has no card (times out);
``mock:garbage`` presents an unreadable swipe.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.registry import url_options
from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.cards.spec import CardSpec, present
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout
from swipepay.firmware_sim.tracks import card_from_tracks


class MockCardReader:
    def __init__(
        self,
        url: str,
        cards: Mapping[str, CardSpec],
        card: str,
        via: str | None,
        amount: int = 0,
    ) -> None:
        self.url = url
        self._cards = cards
        self.card = card
        self.via = via
        #: Amount (minor units) for the PDOL's 9F02.
        self.amount = amount

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> MockCardReader:
        name, options = url_options(url, ("via",))
        return cls(url, context.cards, name, options.get("via"), context.amount)

    def read_card(self, timeout: float) -> CardData:
        if self.card in ("", "none"):
            raise LinkTimeout(f"no card presented within {timeout:.0f} s")
        if self.card == "garbage":
            return card_from_tracks(None, ";4111111111111112=?")
        spec = self._cards.get(self.card)
        if spec is None:
            known = ", ".join(sorted(self._cards)) or "none in this lab"
            raise ConfigError(f"no card named {self.card!r} (lab cards: {known})")
        how = self.via or spec.default_presentation()
        terminal_data = {0x9F02: bytes.fromhex(f"{self.amount:012d}"), 0x9F37: os.urandom(4)}
        return present(spec, how, terminal_data)

    def close(self) -> None:
        pass
