"""All three parts in one process on mock drivers: what ``swipepay demo`` and fast tests run.

The terminals are the terminal application (:class:`~cli.app.terminal_app.TerminalApp`, one
per terminal ID, on the lab's terminal stores), the phones are the phone application on their
profiles, the center core sits on the lab's real SQLite file; the cards are read through the
EMV read sequence or the track parser.  Only the air and the wire are mocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from pathlib import Path

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.local_host import LocalHost
from swipepay.cli.app.phone_app import lab_phone
from swipepay.cli.app.terminal_app import TerminalApp
from swipepay.cli.app.terminal_settings import TerminalSettings
from swipepay.drivers.base import DriverContext
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_phone_link
from swipepay.drivers.runner import Observer, TxnReport
from swipepay.firmware_sim.phone import Choice, ScriptedUser
from swipepay.firmware_sim.terminal import Order


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
    terminals: dict[str, TerminalApp] = dc_field(default_factory=dict)

    @classmethod
    def open(cls, root: Path) -> InProcessBench:
        lab = Lab(root)
        return cls(lab, Center.open(lab.database_url, lab.center_keys()))

    def close(self) -> None:
        for app in self.terminals.values():
            app.close()
        self.terminals.clear()
        self.center.close()

    def __enter__(self) -> InProcessBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def terminal(self, terminal_id: str) -> TerminalApp:
        """The terminal application of ``terminal_id`` (opened once, closed with the bench)."""
        app = self.terminals.get(terminal_id)
        if app is None:
            settings = TerminalSettings(terminal_id=terminal_id, center="local", phone="mock:")
            app = self.terminals[terminal_id] = TerminalApp.open(self.lab.root, settings)
        return app

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
        app = self.terminal(terminal_id)
        self.last_user = None
        if phone is None:
            self.rf.place(None)
        else:
            held = lab_phone(self.lab, phone.name, phone.choice, wrong_pin=phone.wrong_pin,
                             delay_polls=phone.delay_polls)  # fmt: skip
            held.enter(self.rf, phone.leave_after)
            self.last_user = held.user
        reader = app.open_reader(card_url, order) if card_url else None
        result = app.run(
            order,
            reader=reader,
            link=open_phone_link("mock:", DriverContext(field=self.rf)),
            host=LocalHost(self.center),
            now=now,
            sleep=lambda s: None,
            observe=observe,
        )
        return result.report
