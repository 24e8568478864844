"""What every driver offers, whatever carries the bytes (mock, PC/SC, nfcpy, serial, TCP)."""

from __future__ import annotations

import threading
from typing import Protocol

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.phone import Phone
from swipepay.firmware_sim.transaction import Transaction


class CardReader(Protocol):
    """Reads one user card (method step 1)."""

    url: str

    def read_card(self, timeout: float) -> CardData:
        """Wait up to ``timeout`` seconds for a card and read it; raise a SwipepayError."""
        ...

    def close(self) -> None: ...


class PhoneLink(Protocol):
    """The terminal's side of the near-field link: it is the reader, the phone is the card."""

    url: str

    def connect(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a phone in the field."""
        ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU, return the response; TransportError if the phone left."""
        ...

    def disconnect(self) -> None: ...


class Host(Protocol):
    """The payment center as the terminal sees it (in-process core or ISO 8583 over TLS)."""

    def authorize(self, request: AuthRequest, timeout: float) -> AuthResponse:
        """Ask for authorization; LinkTimeout when the center is silent."""
        ...

    def reverse(self, txn: Transaction) -> AuthResponse: ...

    def settle(self, txn: Transaction) -> None:
        """The terminal finished ``txn`` (no reversal needed): forget its write-ahead reversal."""
        ...


class PhoneServer(Protocol):
    """The phone's side of the near-field link: serves a phone to whatever reader is in range.

    ``serve`` blocks, handing every command APDU from the field to ``phone.process`` and calling
    ``phone.deactivate()`` when the field drops or the reader deselects, until ``stop`` is set
    (or, with ``once``, after the first session ends).
    """

    url: str

    def serve(self, phone: Phone, stop: threading.Event | None = None, once: bool = False) -> None:
        ...

    def close(self) -> None: ...
