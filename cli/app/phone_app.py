"""The phone application: one phone profile (its :class:`PhoneStore`) and the person holding the
phone, served to whatever terminal is in range.

``swipepay phone run`` serves it on a link; the in-process bench, the demo and ``terminal run
--phone mock:<name>`` put it into a mock field.  Either way the phone is the same
:class:`~firmware_sim.phone.Phone` on the same store, so the DUKPT counter rule (each counter on
disk before its key is used; :mod:`drivers.store.phone_store`) holds wherever the phone runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from swipepay.drivers.base import PhoneServer
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.store.phone_store import PhoneProfile, PhoneStore
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser, UserAgent
from swipepay.firmware_sim.phonelink.applet import PhoneApplet
from swipepay.firmware_sim.phonelink.protocol import AID

if TYPE_CHECKING:
    from swipepay.center.lab import Lab


#: The kind of user holding the phone (a prompt, a scripted user...).
U = TypeVar("U", bound=UserAgent)


class PhoneApp(Generic[U]):
    """A phone: its stored profile, its applet on the store's DUKPT device, and its user."""

    def __init__(
        self, store: PhoneStore, user: U, clock: Callable[[], float] = time.time,
        aid: bytes = AID,
    ) -> None:
        """``aid``: the AID the phone answers a SELECT for (the terminal's must match)."""
        self.store = store
        self.user = user
        applet = PhoneApplet(store.profile.identity(), store.dukpt(), aid=aid)
        self.phone = Phone(applet, user, clock)

    @classmethod
    def open(cls, profile_path: Path, user: U) -> PhoneApp[U]:
        return cls(PhoneStore(profile_path), user)

    def __repr__(self) -> str:
        return f"PhoneApp({self.store.profile!r})"

    @property
    def profile(self) -> PhoneProfile:
        return self.store.profile

    def serve(
        self, server: PhoneServer, *, stop: threading.Event | None = None, once: bool = False
    ) -> None:
        """Answer terminals on ``server`` until ``stop`` is set (or after one session)."""
        server.serve(self.phone, stop=stop, once=once)

    def enter(self, field: MockField, leave_after: int | None = None) -> None:
        """Hold the phone in an in-process field; it leaves after ``leave_after`` exchanges."""
        field.place(self.phone, leave_after)


def lab_phone(
    lab: Lab,
    name: str,
    choice: Choice = Choice.CONFIRM,
    *,
    wrong_pin: bool = False,
    delay_polls: int = 0,
    aid: bytes | None = None,
) -> PhoneApp[ScriptedUser]:
    """Lab phone ``name`` with a simulated user who knows the lab PIN of the bound card (or
    types a wrong one) and answers after ``delay_polls`` polls, answering to ``aid`` (default:
    the lab's).  The PIN is read from the lab's
    secrets when it is typed, never from a command line."""
    store = PhoneStore(lab.phone_path(name))
    card = store.profile.card

    def pin() -> str:
        real = lab.pins()[card]
        return f"{(int(real) + 1) % 10_000:04d}" if wrong_pin else real

    chosen = lab.aid if aid is None else aid
    return PhoneApp(store, ScriptedUser(choice, pin, delay_polls), aid=chosen)
