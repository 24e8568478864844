"""``vpcd-listen:<host:port>`` — the phone program behind a relay app that connects to it.

vsmartcard's Android Smart Card Emulator (ACardEmulator), in its "Remote Virtual Smart Card"
mode, hands every APDU that Android's host card emulation routes to it to a program over TCP and
relays the answer: the phone's radio carries the ISO 14443-4 exchange with the reader, and this
program (``swipepay phone run``, in Termux on the same phone) is the card.  The app is the
*connecting* side (vsmartcard's ``vicc --reversed``), so here the phone listens.  See
hardware_notes/android-phone.md.

The bytes are vpcd's (:mod:`drivers.vpcd`): a 2-byte big-endian length, then the payload.

=========  ================================================================================
payload    meaning (from the app)
=========  ================================================================================
``01``     power on: sent once, when the app connects -> a fresh phone
``00``     power off: Android deactivated the app (phone out of the field, reader deselected)
           -> the tap is over: the phone's session is wiped, a payment it showed is cancelled
``02``     reset -> a fresh phone
``04``     get ATR -> the ATR of an HCE phone (vpcd's own code; the app never sends it)
> 1 byte   command APDU -> one response APDU
=========  ================================================================================

The app keeps one connection across taps: after a power off, the next tap's APDUs come on the
same socket without a new power on, so one connection serves many sessions.  The loop is the
one :mod:`drivers.listener` shares with ``tcp:``, with these rules for a silent app: between
taps it may stay silent for ever (the phone waits in the user's pocket); inside a tap (APDUs
since the last power off) a silence of ``idle_timeout`` means the tap is over although no power
off came, so the phone's session is ended there and the connection kept; and a connection that
is silent while another one waits (the app restarted and connected again) gives way after
``yield_after``.
"""

from __future__ import annotations

import logging

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.drivers.listener import FramedListener, SessionLimits
from swipepay.drivers.registry import split_url
from swipepay.drivers.vpcd import DEFAULT_HOST, DEFAULT_PORT, HCE_PHONE_ATR, VirtualCard
from swipepay.firmware_sim.address import Address, parse_address
from swipepay.firmware_sim.phone import Phone

log = logging.getLogger(__name__)


def listen_address(url: str) -> Address:
    """``vpcd-listen:127.0.0.1:35963`` -> the address to listen on (port 0: any free port)."""
    _scheme, rest = split_url(url)
    return parse_address(
        rest, "a vpcd-listen: URL (e.g. vpcd-listen:127.0.0.1:35963)",
        default_host=DEFAULT_HOST, default_port=DEFAULT_PORT, any_port=True,
    )  # fmt: skip


class RelayConversation:
    """One connection of the relay app: control codes and APDUs, many taps on one socket."""

    def __init__(self, phone: Phone, limits: SessionLimits) -> None:
        self.phone = phone
        self.limits = limits
        self.card = VirtualCard(phone.process, HCE_PHONE_ATR, self._field_off)
        #: APDUs answered when the last tap ended; more than that: a tap is going on.
        self._ended_at = 0
        #: Taps served on this connection (a tap: APDUs, then a power off or the end).
        self.taps = 0

    @property
    def finished(self) -> bool:
        return self.taps > 0

    @property
    def in_tap(self) -> bool:
        return self.card.apdus > self._ended_at

    def receive(self, payload: bytes) -> bytes | None:
        return self.card.respond(payload)

    def idle(self, seconds: float) -> bool:
        if self.in_tap and seconds >= self.limits.idle_timeout:
            log.warning("vpcd-listen: no APDU for %.0f s inside a tap; the tap is over", seconds)
            self._field_off()
        return False  # the app does not connect again by itself: never drop it for silence

    def close(self) -> None:
        self._field_off()

    def _field_off(self) -> None:
        """Power off, power on, reset, a tap gone silent or the connection lost: the phone is
        deactivated (whatever it was showing is cancelled); a tap that had APDUs is counted."""
        self.phone.deactivate()
        if self.in_tap:
            self.taps += 1
            self._ended_at = self.card.apdus


class VpcdListenServer(FramedListener):
    """``vpcd-listen:<host:port>``: waits for the relay app and serves the phone to it."""

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> VpcdListenServer:
        host, port = listen_address(url)
        return cls(url, host, port)

    def conversation(self, phone: Phone) -> RelayConversation:
        return RelayConversation(phone, self.limits)
