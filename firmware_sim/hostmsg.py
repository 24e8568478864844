"""What the terminal asks the payment center and what it gets back (method steps 6-7).

These are transport-neutral: the in-process host calls the center core with them directly, and
the ISO 8583 codec maps them to and from wire messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swipepay.firmware_sim.transaction import Transaction


@dataclass(frozen=True)
class AuthRequest:
    """Identification + transaction + the phone's confirmation (PIN block, KSN, signature)."""

    txn: Transaction
    pin_block: bytes | None = field(default=None, repr=False)
    ksn: bytes | None = None
    confirmation: bytes | None = None


@dataclass(frozen=True)
class AuthResponse:
    """The center's answer: field 39 response code, authorization code, text, and for an approved
    balance inquiry the balance sealed for the phone (:mod:`firmware_sim.balance_seal`).

    The terminal receives this and never holds a balance in clear: ``sealed_balance`` is opaque
    to it and only relayed to the phone.
    """

    response_code: str
    auth_code: str | None = None
    message: str = ""
    sealed_balance: bytes | None = None

    @property
    def approved(self) -> bool:
        return self.response_code == "00"
