"""The phone: the applet plus its user, still without I/O.

A :class:`UserAgent` stands for the person holding the phone.  The interactive phone program
asks a real person (hidden PIN input, with a timeout); :class:`ScriptedUser` answers for demos,
tests and benchmarks.  The PIN is handed to the applet the moment it is needed and not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from swipepay.firmware_sim.phonelink.applet import (
    PaymentShown,
    PhoneApplet,
    PhoneEvent,
    ResultShown,
    SessionWiped,
)


class Choice(Enum):
    CONFIRM = "confirm"
    DECLINE = "decline"
    IGNORE = "ignore"


class UserAgent(Protocol):
    def on_payment(self, shown: PaymentShown) -> None:
        """The phone shows a payment; the agent may answer now or on a later :meth:`poll`."""

    def poll(self, applet: PhoneApplet) -> None:
        """Called on every exchange while the phone waits for the user."""

    def on_result(self, shown: ResultShown) -> None: ...

    def on_end(self, wiped: SessionWiped) -> None:
        """The phone's session ended (result delivered, field gone, terminal deselected us or
        broke the protocol): a payment still on screen can no longer be answered."""


@dataclass
class ScriptedUser:
    """Confirms (with the PIN from ``pin_source``) or declines once ``delay_polls`` polls of the
    terminal have been answered "pending"."""

    choice: Choice = Choice.CONFIRM
    pin_source: Callable[[], str] = field(default=lambda: "", repr=False)
    delay_polls: int = 0
    shown: list[PaymentShown] = field(default_factory=list)
    results: list[ResultShown] = field(default_factory=list)
    _polls: int = 0

    def on_payment(self, shown: PaymentShown) -> None:
        self.shown.append(shown)
        self._polls = 0

    def poll(self, applet: PhoneApplet) -> None:
        if not applet.awaiting_user:
            return
        if self._polls < self.delay_polls:
            self._polls += 1
            return
        if self.choice is Choice.CONFIRM:
            applet.confirm(self.pin_source())
        elif self.choice is Choice.DECLINE:
            applet.decline()

    def on_result(self, shown: ResultShown) -> None:
        self.results.append(shown)

    def on_end(self, wiped: SessionWiped) -> None:
        return None


class Phone:
    """Applet + user: what the phone-side drivers serve to the field."""

    def __init__(self, applet: PhoneApplet, user: UserAgent, clock: Callable[[], float]) -> None:
        self.applet = applet
        self.user = user
        self._clock = clock

    def process(self, apdu: bytes) -> bytes:
        self.user.poll(self.applet)
        response = self.applet.process(apdu, int(self._clock()))
        self._dispatch(self.applet.take_events())
        return response

    def deactivate(self) -> None:
        self.applet.deactivate()
        self._dispatch(self.applet.take_events())

    def _dispatch(self, events: list[PhoneEvent]) -> None:
        for event in events:
            if isinstance(event, PaymentShown):
                self.user.on_payment(event)
            elif isinstance(event, ResultShown):
                self.user.on_result(event)
            else:
                self.user.on_end(event)
