"""Regenerate the SVG screenshots in hardware_notes/screens/ from real runs of the full screens.

    .venv/bin/python hardware_notes/make_screenshots.py [OUT_DIR]

Creates a throw-away lab and drives the phone screen (:mod:`cli.screens.phone_screen`) and the
terminal console (:mod:`cli.screens.terminal_console`) with Textual's headless pilot, through the
same applications ``swipepay phone run`` and ``swipepay terminal run`` use: the center runs in
this process, the phone sits in a mock field.  Each state is saved with Textual's own screenshot
export (SVG).  Keys, STANs, times and countdowns differ from run to run; the screens do not.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from textual.app import App
from textual.pilot import Pilot

from swipepay.center.lab import Lab, create_lab
from swipepay.cli.app.phone_app import PhoneApp, lab_phone
from swipepay.cli.app.terminal_app import TerminalApp, TerminalResult
from swipepay.cli.app.terminal_settings import TerminalSettings
from swipepay.cli.screens.phone_screen import PhoneScreen
from swipepay.cli.screens.terminal_console import TerminalConsole
from swipepay.cli.terminal_cmds import Session
from swipepay.drivers.base import DriverContext, PhoneLink
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_phone_link
from swipepay.drivers.store.phone_store import PhoneStore
from swipepay.firmware_sim.phone import Choice

PHONE_SIZE = (42, 32)
CONSOLE_SIZE = (100, 36)


async def until(pilot: Pilot[Any], ready: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the screen did not reach the state to capture")
        await pilot.pause(0.02)
    await pilot.pause(0.1)


def shot(app: App[Any], out: Path, name: str) -> None:
    app.save_screenshot(filename=f"{name}.svg", path=str(out))
    print(out / f"{name}.svg")


async def phone_states(lab: Lab, out: Path, thread: ThreadPoolExecutor) -> None:
    settings = TerminalSettings(center="local", card="mock:", phone="mock:", confirm_timeout=30)
    terminal = thread.submit(TerminalApp.open, lab.root, settings).result()
    screen = PhoneScreen("alice-phone · card alice-visa", "tcp:127.0.0.1:7000")
    phone = PhoneApp.attended(PhoneStore(lab.phone_path("alice-phone")), screen.ui, 30.0)
    screen.attach(phone.user)
    field = MockField()
    phone.enter(field)
    link: PhoneLink = open_phone_link("mock:", DriverContext(field=field))
    pin = lab.pins()["alice-visa"]
    wrong = f"{(int(pin) + 1) % 10_000:04d}"

    def pay(amount: str) -> TerminalResult:
        order = terminal.order("purchase", amount, None)
        reader = terminal.open_reader("mock:alice-visa?via=tap", order)
        host = terminal.open_center()
        try:
            return terminal.run(order, reader=reader, link=link, host=host)
        finally:
            reader.close()
            host.close()

    loop = asyncio.get_running_loop()
    try:
        async with screen.run_test(size=PHONE_SIZE) as pilot:
            await pilot.pause(0.1)
            shot(screen, out, "phone-idle")
            paying = loop.run_in_executor(thread, pay, "8.88")
            await until(pilot, lambda: screen.state == "payment")
            shot(screen, out, "phone-payment")
            await pilot.press("y", *pin[:2])
            await pilot.pause(0.1)
            shot(screen, out, "phone-pin")
            await pilot.press(*pin[2:], "enter")
            await paying
            await until(pilot, lambda: screen.state == "over")
            shot(screen, out, "phone-approved")

            paying = loop.run_in_executor(thread, pay, "3.10")
            await until(pilot, lambda: screen.state == "payment")
            await pilot.press("y", *wrong, "enter")
            await paying
            await until(pilot, lambda: screen.state == "over")
            shot(screen, out, "phone-declined-pin")

            paying = loop.run_in_executor(thread, pay, "5.00")
            await until(pilot, lambda: screen.state == "payment")
            terminal.cancel()
            await asyncio.gather(paying, return_exceptions=True)
            await until(pilot, lambda: screen.state == "over")
            shot(screen, out, "phone-cancelled")
    finally:
        thread.submit(terminal.close).result()


def open_session(lab: Lab, terminal_id: str, choice: Choice) -> Session:
    settings = TerminalSettings(terminal_id=terminal_id, center="local", card="mock:",
                                phone="mock:alice-phone", confirm_timeout=60)
    app = TerminalApp.open(lab.root, settings)
    field = MockField()
    lab_phone(lab, "alice-phone", choice).enter(field)
    return Session(app, app.open_center(), open_phone_link("mock:", DriverContext(field=field)))


async def console_states(lab: Lab, out: Path, thread: ThreadPoolExecutor) -> None:
    session = thread.submit(open_session, lab, "ATM00001", Choice.CONFIRM).result()
    try:
        console = TerminalConsole(session, thread)
        async with console.run_test(size=CONSOLE_SIZE) as pilot:
            await pilot.pause(0.1)
            shot(console, out, "terminal-atm-menu")
    finally:
        thread.submit(session.close).result()

    session = thread.submit(open_session, lab, "POS00001", Choice.CONFIRM).result()
    try:
        console = TerminalConsole(session, thread)
        async with console.run_test(size=CONSOLE_SIZE) as pilot:
            await pilot.pause(0.1)
            shot(console, out, "terminal-pos-menu")
            await pilot.press("1", "-", "5", "enter")
            await pilot.pause(0.1)
            shot(console, out, "terminal-amount-again")
            await pilot.press(*"12.34", "enter")
            await until(pilot, lambda: console.state == "card")
            shot(console, out, "terminal-card")
            await pilot.press(*"alice-visa tap", "enter")
            await until(pilot, lambda: console.state == "menu")
            await pilot.press("ctrl+t")
            await pilot.pause(0.1)
            shot(console, out, "terminal-approved")
    finally:
        thread.submit(session.close).result()

    session = thread.submit(open_session, lab, "POS00001", Choice.IGNORE).result()
    try:
        console = TerminalConsole(session, thread)
        async with console.run_test(size=CONSOLE_SIZE) as pilot:
            await pilot.press("1", *"8.88", "enter")
            await until(pilot, lambda: console.state == "card")
            await pilot.press("1", "enter")
            await until(pilot, lambda: "confirm on the phone" in console.waiting_text)
            await pilot.pause(1.0)
            await pilot.press("ctrl+t")
            await pilot.pause(0.1)
            shot(console, out, "terminal-waiting")
            await pilot.press("ctrl+c")
            await until(pilot, lambda: console.state == "menu")
            shot(console, out, "terminal-cancelled")
    finally:
        thread.submit(session.close).result()


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=1) as thread:
        lab = create_lab(Path(tmp) / "lab")
        await phone_states(lab, out, thread)
        await console_states(lab, out, thread)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "screens"))
