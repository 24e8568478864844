"""What every driver offers, whatever carries the bytes (mock, PC/SC, nfcpy, serial, TCP).

Two layers of Protocols:

* what the terminal and the phone programs use — :class:`CardReader`, :class:`PhoneLink`,
  :class:`PhoneServer`, :class:`Host` — which any object may satisfy (a tracing wrapper, a
  reader built from given card data, a test double);
* what a *driver* in :mod:`drivers.registry` is — :class:`CardReaderDriver`,
  :class:`PhoneLinkDriver`, :class:`PhoneServerDriver` — the same plus
  ``from_url(url, context)``, the one way a URL becomes an open driver.

:class:`DriverContext` is everything a driver may need beyond its URL: the lab's cards for
``mock:`` readers, the in-process field for the ``mock:`` phone link, the amount for a card
read's PDOL, and so on.  Each driver reads the fields it needs and ignores the others.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as default
from typing import IO, TYPE_CHECKING, Protocol, Self

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.cards.spec import CardSpec
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.phone import Phone
from swipepay.firmware_sim.transaction import Transaction

if TYPE_CHECKING:
    from swipepay.drivers.mock_phone import MockField


@dataclass(frozen=True)
class DriverContext:
    """What opening a driver may use besides its URL (every field has a neutral default)."""

    #: The lab's cards by name (``mock:<card>`` readers).
    cards: Mapping[str, CardSpec] = default(default_factory=dict)
    #: Amount of the transaction in minor units: the card read's PDOL 9F02 (EMV readers:
    #: ``mock:``, ``pcsc:``, ``nfcpy:``; magstripe readers have no use for it).
    amount: int = 0
    #: The in-process RF field (``mock:`` phone link: demo, benches and tests).
    field: MockField | None = None
    #: Where a ``keyboard:`` wedge types (None: the process's stdin).
    stdin: IO[str] | IO[bytes] | None = None
    #: Seconds to wait for each phone answer (``tcp:`` phone link; None: the driver's default).
    response_timeout: float | None = None


#: The context of a driver that needs nothing beyond its URL.
NO_CONTEXT = DriverContext()


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


class CardReaderDriver(CardReader, Protocol):
    """A card reader the registry can open from a URL."""

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> Self:
        """Open the reader ``url`` names; ConfigError for a malformed URL or a missing stack."""
        ...


class PhoneLinkDriver(PhoneLink, Protocol):
    """A terminal-side phone link the registry can open from a URL."""

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> Self: ...


class PhoneServerDriver(PhoneServer, Protocol):
    """A phone-side link the registry can open from a URL."""

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> Self: ...
