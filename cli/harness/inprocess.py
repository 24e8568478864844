"""All three parts in one process on mock drivers: what ``swipepay demo`` and fast tests run.

The center core sits on the lab's real SQLite file, the phones are real applets with their
enrolled keys, the cards are read through the EMV read sequence or the track parser; only
the air and the wire are mocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from pathlib import Path

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.local_host import LocalHost
from swipepay.drivers.base import DriverContext
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_card_reader, open_phone_link
from swipepay.drivers.runner import Observer, TxnReport, run_transaction
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PhoneApplet
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.terminal import Order, Terminal


@dataclass
class PhoneSetup:
    """Which lab phone is in the field and what its user will do."""

    name: str
    choice: Choice = Choice.CONFIRM
    wrong_pin: bool = False
    delay_polls: int = 0
    leave_after: int | None = None


@dataclass
class InProcessBench:
    lab: Lab
    center: Center
    rf: MockField = dc_field(default_factory=MockField)
    #: The simulated user of the last phone placed in the field (what it was shown).
    last_user: ScriptedUser | None = None

    @classmethod
    def open(cls, root: Path) -> InProcessBench:
        lab = Lab(root)
        return cls(lab, Center.open(lab.db_path, lab.center_keys()))

    def close(self) -> None:
        self.center.close()

    def __enter__(self) -> InProcessBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _phone(self, setup: PhoneSetup) -> tuple[Phone, Callable[[], None]]:
        profile = self.lab.phone_profile(setup.name)
        applet = PhoneApplet(profile.identity(), profile.dukpt())
        card = profile.card
        wrong = setup.wrong_pin

        def pin() -> str:
            real = self.lab.pins()[card]
            return f"{(int(real) + 1) % 10_000:04d}" if wrong else real

        user = ScriptedUser(setup.choice, pin, setup.delay_polls)
        self.last_user = user
        phone = Phone(applet, user, time.time)

        def save() -> None:
            if applet.dukpt.counter != profile.counter and profile.path is not None:
                profile.with_counter(applet.dukpt.counter).save(profile.path)

        return phone, save

    def run(
        self,
        terminal_id: str,
        order: Order,
        *,
        card_url: str | None,
        phone: PhoneSetup | None,
        now: datetime | None = None,
        observe: Observer | None = None,
    ) -> TxnReport:
        config = self.lab.terminal_config(terminal_id)
        cert, key = self.lab.terminal_link_identity(terminal_id)
        terminal = Terminal(config, TerminalLink(cert, key), self.lab.next_stan(terminal_id))
        context = DriverContext(cards=self.lab.cards())
        reader = open_card_reader(card_url, context) if card_url else None
        if reader is not None and hasattr(reader, "amount"):
            reader.amount = order.amount
        save: Callable[[], None] = lambda: None  # noqa: E731
        if phone is not None:
            simulated, save = self._phone(phone)
            self.rf.place(simulated, phone.leave_after)
        else:
            self.last_user = None
            self.rf.place(None)
        link = open_phone_link("mock:", DriverContext(field=self.rf))
        try:
            report = run_transaction(
                terminal,
                order,
                reader=reader,
                link=link,
                host=LocalHost(self.center),
                now=now,
                sleep=lambda s: None,
                observe=observe,
            )
        finally:
            save()
            self.lab.save_next_stan(terminal_id, terminal.next_stan)
        return report
