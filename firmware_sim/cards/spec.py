"""A lab card as data, and how to present it on each interface (tap, insert, swipe).

The mock card reader and the virtual PC/SC cards build their simulated card from this, so a
card read in CI goes through the same EMV read sequence and track parser as a real one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.cards.emv_card import EmvCardApplet, EmvCardProfile
from swipepay.firmware_sim.emv_reader import EmvReader, run_reader
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.tracks import build_track1, build_track2, card_from_tracks

#: How a card is presented -> (EMV interface or None for magstripe, contactless?)
PRESENTATIONS: dict[str, str] = {"tap": "contactless", "insert": "contact", "swipe": "magstripe"}


@dataclass(frozen=True)
class CardSpec:
    name: str
    pan: str
    expiry: str
    holder: str
    interfaces: tuple[str, ...] = ("contactless", "contact", "magstripe")
    data_in_gpo: bool = False
    service_code: str = "201"

    def default_presentation(self) -> str:
        for how, interface in PRESENTATIONS.items():
            if interface in self.interfaces:
                return how
        raise ConfigError(f"card {self.name} has no interface")

    def emv_profile(self) -> EmvCardProfile:
        return EmvCardProfile(
            pan=self.pan,
            expiry=self.expiry,
            name=self.holder,
            service_code=self.service_code,
            contact="contact" in self.interfaces,
            contactless="contactless" in self.interfaces,
            data_in_gpo=self.data_in_gpo,
        )

    def tracks(self) -> tuple[str, str]:
        return (
            build_track1(self.pan, self.holder, self.expiry, self.service_code),
            build_track2(self.pan, self.expiry, self.service_code),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pan": self.pan,
            "expiry": self.expiry,
            "holder": self.holder,
            "interfaces": list(self.interfaces),
            "data_in_gpo": self.data_in_gpo,
            "service_code": self.service_code,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardSpec:
        try:
            return cls(
                name=str(data["name"]),
                pan=str(data["pan"]),
                expiry=str(data["expiry"]),
                holder=str(data["holder"]),
                interfaces=tuple(data.get("interfaces", ("contactless", "contact", "magstripe"))),
                data_in_gpo=bool(data.get("data_in_gpo", False)),
                service_code=str(data.get("service_code", "201")),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"card entry is incomplete: {exc}") from exc


def present(card: CardSpec, how: str, terminal_data: dict[int, bytes]) -> CardData:
    """Read ``card`` the way a reader would when it is tapped, inserted or swiped."""
    interface = PRESENTATIONS.get(how)
    if interface is None:
        raise ConfigError(f"present a card by {', '.join(PRESENTATIONS)}, not {how!r}")
    if interface not in card.interfaces:
        raise ConfigError(f"card {card.name} cannot be read by {how}")
    if interface == "magstripe":
        track1, track2 = card.tracks()
        return card_from_tracks(track1, track2)
    contactless = interface == "contactless"
    applet = EmvCardApplet(card.emv_profile(), "contactless" if contactless else "contact")
    reader = EmvReader(contactless=contactless, terminal_data=terminal_data)
    return run_reader(reader, applet.process)
