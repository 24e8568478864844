"""A lab phone served on a ``tcp:`` link in a thread (fixture ``served``): the phone side of
the terminal tests, which can leave the field after a given number of commands."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from swipepay.center.lab import Lab
from swipepay.drivers.tcp_link import SessionLimits, TcpPhoneServer
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PhoneApplet


class CountingPhone(Phone):
    """A phone that records deactivations and can leave after ``leave_after`` commands."""

    def __init__(self, *args: object, stop: threading.Event, leave_after: int | None) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.stop = stop
        self.leave_after = leave_after
        self.commands = 0
        self.deactivations = 0

    def process(self, apdu: bytes) -> bytes:
        self.commands += 1
        if self.leave_after is not None and self.commands >= self.leave_after:
            self.stop.set()  # the server ends the session after this answer: the phone left
        return super().process(apdu)

    def deactivate(self) -> None:
        self.deactivations += 1
        super().deactivate()


class Served:
    """The lab's ``alice-phone`` served on a fresh ``tcp:127.0.0.1`` port (``url``) in a thread,
    confirming with the card's PIN; ``close()`` stops and joins it."""

    def __init__(
        self,
        lab: Lab,
        leave_after: int | None = None,
        once: bool = False,
        limits: SessionLimits | None = None,
    ) -> None:
        profile = lab.phone_profile("alice-phone")
        pin = lab.pins()[profile.card]
        self.stop = threading.Event()
        self.phone = CountingPhone(
            PhoneApplet(profile.identity(), profile.dukpt()),
            ScriptedUser(Choice.CONFIRM, lambda: pin),
            time.time,
            stop=self.stop,
            leave_after=leave_after,
        )
        self.server = TcpPhoneServer("tcp:127.0.0.1:0", "127.0.0.1", 0, limits)
        host, port = self.server.address
        self.url = f"tcp:{host}:{port}"
        self.thread = threading.Thread(
            target=self.server.serve, args=(self.phone, self.stop, once), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()
        assert not self.thread.is_alive()


@pytest.fixture
def served(lab: Lab) -> Iterator[Served]:
    """The lab's phone served for this test, staying in the field."""
    s = Served(lab)
    yield s
    s.close()
