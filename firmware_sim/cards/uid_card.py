"""A MIFARE-like RF card with no payment application: all the terminal can learn is its UID.

PC/SC readers answer the pseudo-APDU GET DATA ``FF CA 00 00 00`` (PC/SC part 3, 3.2.2.1.3) on
the card's behalf with the UID, so this object plays card *and* reader firmware for that one
command.  Everything else is refused with a status word, as a real reader would.
"""

from __future__ import annotations

from typing import Final

from swipepay.firmware_sim.errors import LocalError
from swipepay.firmware_sim.statuswords import SW

#: CLA INS of the PC/SC GET DATA pseudo-APDU.
GET_DATA: Final = b"\xff\xca"
#: P1 values of GET DATA: 00 = UID, 01 = historical bytes / ATS (not simulated).
P1_UID: Final = 0x00


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class UidCard:
    """Answers ``FF CA 00 00 Le`` with the UID; 6A81 for other GET DATA forms, 6D00 otherwise."""

    def __init__(self, uid: bytes) -> None:
        if len(uid) not in (4, 7, 10):  # ISO/IEC 14443-3 single, double, triple size
            raise LocalError("a 14443-A UID is 4, 7 or 10 bytes")
        self.uid = bytes(uid)

    def process(self, apdu: bytes) -> bytes:
        """Answer one pseudo-APDU.  Never raises."""
        raw = bytes(apdu)
        if raw[:2] != GET_DATA:
            return _sw(SW.INS_NOT_SUPPORTED)
        if len(raw) != 5 or raw[2] != P1_UID or raw[3] != 0x00:
            return _sw(SW.FUNCTION_NOT_SUPPORTED)
        le = raw[4]
        if le not in (0, len(self.uid)):
            return _sw(0x6C00 | len(self.uid))  # the reader tells the exact length
        return self.uid + _sw(SW.OK)
