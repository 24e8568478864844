"""The phone screen under Textual's headless pilot, on the real phone and terminal applications:
a lab terminal (center in-process) pays through a mock field holding the attended lab phone,
whose front-end is the screen.  Keys go in with ``pilot.press``; the widgets' text comes out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from textual.widgets import Static

from swipepay.center.lab import Lab
from swipepay.cli.app.phone_app import PhoneApp
from swipepay.cli.app.terminal_app import TerminalApp, TerminalResult, TransactionCancelled
from swipepay.cli.app.terminal_settings import TerminalSettings
from swipepay.cli.screens.phone_screen import PhoneScreen
from swipepay.drivers.base import DriverContext, PhoneLink
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_phone_link
from swipepay.drivers.store.phone_store import PhoneStore
from tests.support.waiting import until_shown

SIZE = (60, 40)


@dataclass
class Bench:
    """A lab terminal and the attended alice-phone on its screen, in one mock field.  The
    terminal lives in one thread of its own (its store may only be used there)."""

    lab: Lab
    terminal: TerminalApp
    screen: PhoneScreen
    link: PhoneLink
    thread: ThreadPoolExecutor

    def paying(self, amount: str = "8.88") -> asyncio.Future[TerminalResult]:
        """Start :meth:`pay` in the terminal's thread."""
        return asyncio.get_running_loop().run_in_executor(self.thread, self.pay, amount)

    @property
    def pin(self) -> str:
        return self.lab.pins()["alice-visa"]

    def pay(self, amount: str = "8.88") -> TerminalResult:
        """One purchase with alice-visa tapped (blocks: run it in a thread)."""
        order = self.terminal.order("purchase", amount, None)
        reader = self.terminal.open_reader("mock:alice-visa?via=tap", order)
        host = self.terminal.open_center()
        try:
            return self.terminal.run(order, reader=reader, link=self.link, host=host)
        finally:
            reader.close()
            host.close()


@pytest.fixture
def bench(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The bench; ``indirect`` parametrization gives the user's seconds to answer (15)."""
    answer_within = float(getattr(request, "param", 15.0))
    settings = TerminalSettings(center="local", card="mock:", phone="mock:", confirm_timeout=20)
    thread = ThreadPoolExecutor(max_workers=1)
    terminal = thread.submit(TerminalApp.open, lab.root, settings).result()
    screen = PhoneScreen("alice-phone (card alice-visa)")
    phone = PhoneApp.attended(PhoneStore(lab.phone_path("alice-phone")), screen.ui, answer_within)
    screen.attach(phone.user)
    field = MockField()
    phone.enter(field)
    link: PhoneLink = open_phone_link("mock:", DriverContext(field=field))
    try:
        yield Bench(lab, terminal, screen, link, thread)
    finally:
        thread.submit(terminal.close).result()
        thread.shutdown()


def text(app: PhoneScreen, widget_id: str) -> str:
    return str(app.query_one(f"#{widget_id}", Static).render())


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_keys_typed_on_an_idle_phone_do_not_answer_the_next_payment(bench: Bench) -> None:
    async def scenario() -> None:
        async with bench.screen.run_test(size=SIZE) as pilot:
            await pilot.press("y", "enter", "1", "2", "3", "4", "enter")
            assert bench.screen.state == "idle"
            paying = bench.paying()
            await until_shown(pilot, lambda: bench.screen.state == "payment")
            assert text(bench.screen, "amount") == "8.88 EUR"
            assert text(bench.screen, "merchant") == "Corner Coffee"
            assert text(bench.screen, "type") == "Purchase"
            await pilot.pause(0.5)  # polls go by: the payment is still waiting for its user
            assert bench.screen.state == "payment"
            assert not paying.done()
            await pilot.press("n")
            result = await paying
            assert result.outcome.ending.name == "DECLINED_BY_USER"

    run(scenario)


def test_confirm_and_pin_is_approved_with_the_pin_masked(bench: Bench) -> None:
    async def scenario() -> None:
        async with bench.screen.run_test(size=SIZE) as pilot:
            paying = bench.paying()
            await until_shown(pilot, lambda: bench.screen.state == "payment")
            assert "s to answer" in text(bench.screen, "countdown")
            await pilot.press("y")
            assert bench.screen.state == "pin"
            await pilot.press(*bench.pin[:2], "٣", "²", *bench.pin[2:])  # 0-9 only are digits
            assert text(bench.screen, "pin") == "PIN  " + "•" * len(bench.pin)
            assert bench.pin not in text(bench.screen, "pin")
            await pilot.press("enter")
            result = await paying
            assert result.outcome.approved
            await until_shown(pilot, lambda: bench.screen.state == "over")
            assert text(bench.screen, "result").startswith("Approved")

    run(scenario)


def test_a_wrong_pin_is_declined_in_words(bench: Bench) -> None:
    async def scenario() -> None:
        async with bench.screen.run_test(size=SIZE) as pilot:
            paying = bench.paying()
            await until_shown(pilot, lambda: bench.screen.state == "payment")
            await pilot.click("#confirm")
            wrong = f"{(int(bench.pin) + 1) % 10_000:04d}"
            for digit in wrong:
                await pilot.click(f"#pad-{digit}")
            await pilot.click("#pad-ok")
            await paying
            await until_shown(pilot, lambda: bench.screen.state == "over")
            assert text(bench.screen, "result").startswith("Declined — incorrect PIN")

    run(scenario)


def test_cancel_from_the_terminal_shows_it_at_once_and_the_next_payment_works(
    bench: Bench,
) -> None:
    async def scenario() -> None:
        async with bench.screen.run_test(size=SIZE) as pilot:
            paying = bench.paying()
            await until_shown(pilot, lambda: bench.screen.state == "payment")
            await pilot.press("y")  # the user is halfway through
            cancelled_at = time.monotonic()
            bench.terminal.cancel()
            with pytest.raises(TransactionCancelled):
                await paying
            # "At once": by the terminal's cancel, not by the user's 15 s to answer running
            # out (the bound is that far below 15 s so a loaded machine cannot fail it).
            await until_shown(pilot, lambda: bench.screen.state == "over", within=5.0)
            assert time.monotonic() - cancelled_at < 5.0
            assert text(bench.screen, "result") == "Cancelled by the terminal"
            await pilot.press(*bench.pin, "enter")  # a late PIN answers nothing
            assert bench.screen.state == "over"

            paying = bench.paying("2.50")
            await until_shown(pilot, lambda: bench.screen.state == "payment")
            assert text(bench.screen, "amount") == "2.50 EUR"
            await pilot.press("y", *bench.pin, "enter")
            assert (await paying).outcome.approved

    run(scenario)


@pytest.mark.parametrize("bench", [1.0], indirect=True)
def test_a_payment_that_timed_out_cannot_be_answered(bench: Bench) -> None:
    async def scenario() -> None:
        async with bench.screen.run_test(size=SIZE) as pilot:
            paying = bench.paying()
            await until_shown(pilot, lambda: bench.screen.state == "payment")
            await until_shown(pilot, lambda: bench.screen.state == "over", within=5.0)
            assert text(bench.screen, "result").startswith(("Time is up", "Timed out"))
            await pilot.press("y", *bench.pin, "enter")
            assert bench.screen.state == "over"
            result = await paying
            assert result.outcome.ending.name == "USER_TIMEOUT"
            await until_shown(pilot, lambda: text(bench.screen, "result").startswith("Timed out"))

    run(scenario)


def test_the_link_is_served_in_a_worker_thread_until_quit() -> None:
    served = threading.Event()
    stopped = threading.Event()

    def serve(stop: threading.Event) -> None:
        served.set()
        stop.wait(10)
        stopped.set()

    async def scenario() -> None:
        screen = PhoneScreen("test", serve=serve, clock=time.monotonic)
        async with screen.run_test(size=SIZE) as pilot:
            await until_shown(pilot, served.is_set)
            await pilot.press("ctrl+c")
        assert stopped.wait(5)

    run(scenario)
