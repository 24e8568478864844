"""The lab's cards as virtual cards on vpcd, for tests and bench use without a card reader.

The card applets are the simulated cards of :mod:`firmware_sim.cards` (the same objects the mock
reader reads), so a read through pyscard + pcscd + vpcd sees exactly the bytes a mock read
sees; only the ATR is added here, chosen to look like what a PC/SC reader reports:

=============  ======================================================================
profile        ATR
=============  ======================================================================
contact        ISO 7816-3 card, T=0, historical bytes "SWIPEPAY" (``3B 68 00 00 ..``)
contactless    ISO 14443-4 card via a PC/SC part 3 reader (``3B 88 80 01 ..`` + TCK)
uid            MIFARE Classic 1K storage card via PC/SC part 3 (``3B 8F 80 01 80 4F ..``)
=============  ======================================================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from swipepay.drivers.vpcd import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    VirtualCard,
    VpcdClient,
    pcsc_contactless_atr,
)
from swipepay.firmware_sim.cards.emv_card import EmvCardApplet, EmvCardProfile, Interface
from swipepay.firmware_sim.cards.spec import CardSpec
from swipepay.firmware_sim.cards.uid_card import UidCard
from swipepay.firmware_sim.errors import ConfigError

#: A contact card with T=0 only (TB1 = TC1 = 00) and 8 historical bytes: no TCK for T=0.
CONTACT_ATR: Final = bytes.fromhex("3B680000") + b"SWIPEPAY"
#: A contactless EMV card seen through a PC/SC reader: compact-TLV historical bytes (category
#: 80, card capabilities 73) inside the part-3 ATR, as many payment cards send in their ATS.
CONTACTLESS_ATR: Final = pcsc_contactless_atr(bytes.fromhex("8031C0730100"))
#: PC/SC part 3 ATR of a MIFARE Classic 1K storage card (RID A000000306, SS 03, NN 0001).
MIFARE_ATR: Final = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")

#: Profile -> ATR (specs as data).
ATRS: Final[dict[str, bytes]] = {
    "contact": CONTACT_ATR,
    "contactless": CONTACTLESS_ATR,
    "uid": MIFARE_ATR,
}


@dataclass
class CardOnSlot:
    """What to put on a vpcd slot: an APDU handler, its ATR and its power-off reset."""

    handler: Callable[[bytes], bytes]
    atr: bytes
    reset: Callable[[], None] | None = None

    def virtual_card(self) -> VirtualCard:
        return VirtualCard(self.handler, self.atr, self.reset)


def emv_card(profile: EmvCardProfile, interface: Interface) -> CardOnSlot:
    applet = EmvCardApplet(profile, interface)
    return CardOnSlot(applet.process, ATRS[interface], applet.reset)


def uid_card(uid: bytes) -> CardOnSlot:
    return CardOnSlot(UidCard(uid).process, MIFARE_ATR)


CardLike = CardSpec | EmvCardProfile | UidCard | CardOnSlot


def card_on_slot(card: CardLike, interface: str | None = None) -> CardOnSlot:
    """Build what a slot serves from a lab card, an EMV profile, a UID card or a ready handler.

    ``interface`` is ``contact`` or ``contactless`` (default: contactless when the card has it).
    """
    if isinstance(card, CardOnSlot):
        return card
    if isinstance(card, UidCard):
        return CardOnSlot(card.process, MIFARE_ATR)
    profile = card.emv_profile() if isinstance(card, CardSpec) else card
    if interface is None:
        interface = "contactless" if profile.contactless else "contact"
    if interface == "contact":
        return emv_card(profile, "contact")
    if interface == "contactless":
        return emv_card(profile, "contactless")
    raise ConfigError(f"a virtual EMV card is contact or contactless, not {interface!r}")


def serve_card(
    card: CardLike,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stop: threading.Event | None = None,
    *,
    interface: str | None = None,
    reconnect: bool = True,
) -> None:
    """Serve ``card`` on a vpcd slot until ``stop`` is set (blocks; the bench's card)."""
    client = VpcdClient(card_on_slot(card, interface).virtual_card(), host, port)
    client.serve(stop or threading.Event(), reconnect=reconnect)


def insert_card(
    card: CardLike,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    interface: str | None = None,
) -> VpcdClient:
    """Insert ``card`` into a vpcd slot now; serve in the background until ``.remove()``."""
    client = VpcdClient(card_on_slot(card, interface).virtual_card(), host, port)
    client.insert()
    return client
