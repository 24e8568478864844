"""Simulated user cards (method step 1): an EMV applet and a UID-only RF card.

They take command APDU bytes and return response APDU bytes, exactly as a card behind a PC/SC
reader would, so the mock reader driver, a vpcd virtual card and the tests all reuse them.
"""

from swipepay.firmware_sim.cards.emv_card import EmvCardApplet, EmvCardProfile
from swipepay.firmware_sim.cards.uid_card import UidCard

__all__ = ["EmvCardApplet", "EmvCardProfile", "UidCard"]
