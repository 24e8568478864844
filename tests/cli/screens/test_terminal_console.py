"""The terminal console under Textual's headless pilot, on a real lab session (center
in-process, the lab's cards offered by the mock reader, a lab phone in a mock field)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from textual.widgets import Log, OptionList, Static

from swipepay.center.lab import Lab
from swipepay.cli.app.phone_app import lab_phone
from swipepay.cli.app.terminal_app import CANCELLED_EXIT, TerminalApp
from swipepay.cli.app.terminal_settings import TerminalSettings
from swipepay.cli.screens.terminal_console import TerminalConsole
from swipepay.cli.terminal_cmds import Session
from swipepay.drivers.base import DriverContext
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_phone_link
from swipepay.firmware_sim.phone import Choice
from tests.support.waiting import until_shown

SIZE = (100, 45)


def open_session(lab: Lab, terminal_id: str, choice: Choice) -> Session:
    """POS00001 or ATM00001 with the center in-process and alice-phone answering ``choice``."""
    settings = TerminalSettings(terminal_id=terminal_id, center="local", card="mock:",
                                phone="mock:", confirm_timeout=20)
    app = TerminalApp.open(lab.root, settings)
    field = MockField()
    lab_phone(lab, "alice-phone", choice).enter(field)
    return Session(app, app.open_center(), open_phone_link("mock:", DriverContext(field=field)))


@pytest.fixture
def console(lab: Lab, request: pytest.FixtureRequest) -> Iterator[TerminalConsole]:
    terminal_id, choice = getattr(request, "param", ("POS00001", Choice.CONFIRM))
    thread = ThreadPoolExecutor(max_workers=1)
    session = thread.submit(open_session, lab, terminal_id, choice).result()
    try:
        yield TerminalConsole(session, thread)
    finally:
        thread.submit(session.close).result()
        thread.shutdown()


def text(app: TerminalConsole, widget_id: str) -> str:
    return str(app.query_one(f"#{widget_id}", Static).render())


def menu(app: TerminalConsole) -> list[str]:
    options = app.query_one("#menu", OptionList)
    return [str(options.get_option_at_index(i).id) for i in range(options.option_count)]


def run(scenario: Callable[[], object]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_a_pos_offers_no_cash_and_an_atm_no_purchase(lab: Lab) -> None:
    with ThreadPoolExecutor(max_workers=1) as thread:
        for tid, have, lack in (("POS00001", "purchase", {"withdrawal", "balance"}),
                                ("ATM00001", "withdrawal", {"purchase"})):
            session = thread.submit(open_session, lab, tid, Choice.CONFIRM).result()
            console = TerminalConsole(session, thread)

            async def scenario(console: TerminalConsole = console) -> list[str]:
                async with console.run_test(size=SIZE):
                    return menu(console)

            offered = asyncio.run(scenario())
            thread.submit(session.close).result()
            assert have in offered
            assert not lack & set(offered), f"{tid} offers {offered}"


def test_a_bad_amount_asks_the_amount_again_then_a_purchase_is_approved(
    console: TerminalConsole,
) -> None:
    async def scenario() -> None:
        async with console.run_test(size=SIZE) as pilot:
            await pilot.press(str(menu(console).index("purchase") + 1))
            assert console.state == "amount"
            for bad in ("0", "-5", "1,50", "1.234"):
                await pilot.press(*bad, "enter")
                assert console.state == "amount", bad
                assert "type the amount again" in text(console, "error")
            await pilot.press(*"8.88", "enter")
            await until_shown(pilot, lambda: console.state == "card")
            assert text(console, "error") == ""
            await pilot.press(*"alice-visa tap", "enter")
            await until_shown(pilot, lambda: console.state == "menu")
            assert text(console, "result").startswith("APPROVED 00")
            steps = text(console, "steps")
            assert "[1] present the card" in steps and "[8]" in steps
            assert console.last_exit == 0

    run(scenario)


def test_a_card_by_its_label_with_number_or_by_a_pasted_pan(
    console: TerminalConsole, lab: Lab
) -> None:
    pan = lab.cards()["alice-visa"].pan

    async def scenario() -> None:
        async with console.run_test(size=SIZE) as pilot:
            for answer in ("3. alice-visa swipe", pan):
                await pilot.press("1", *"1.00", "enter")
                await until_shown(pilot, lambda: console.state == "card")
                await pilot.press(*"no-such-card", "enter")
                assert "choose the card again" in text(console, "error")
                await pilot.press(*answer, "enter")
                await until_shown(pilot, lambda: console.state == "menu")
                assert text(console, "result").startswith("APPROVED 00"), answer

    run(scenario)


@pytest.mark.parametrize("console", [("POS00001", Choice.IGNORE)], indirect=True)
def test_ctrl_c_cancels_the_transaction_then_quits(console: TerminalConsole) -> None:
    async def scenario() -> None:
        async with console.run_test(size=SIZE) as pilot:
            await pilot.press("1", *"8.88", "enter")
            await until_shown(pilot, lambda: console.state == "card")
            await pilot.press("1", "enter")  # the first card, by its number
            await until_shown(pilot, lambda: "confirm on the phone" in text(console, "waiting"))
            first = text(console, "waiting")
            await until_shown(pilot, lambda: text(console, "waiting") != first)
            assert "s left" in text(console, "waiting")
            await pilot.press("ctrl+t")
            trace = console.query_one("#trace", Log)
            assert trace.display
            assert "→ SELECT" in "\n".join(trace.lines)
            await pilot.press("ctrl+c")
            await until_shown(pilot, lambda: console.state == "menu")
            assert text(console, "result").startswith("cancelled")
            await pilot.press("ctrl+c")
        assert console.return_value == CANCELLED_EXIT

    run(scenario)
