"""The terminal as a POS/ATM console: a full-screen front-end (Textual) of the terminal session
that ``swipepay terminal run`` opens (:class:`cli.terminal_cmds.Session` on
:class:`~cli.app.terminal_app.TerminalApp`).

It asks what the line console asks — the transaction type (only the types this terminal kind
supports, from :meth:`TerminalApp.supported_types`), the amount (checked by
:func:`~cli.app.terminal_app.order_amount`; a bad one re-asks the amount), the card (the lab's
cards to swipe, insert or tap, by number or by the label as shown, or pasted track data) — and
shows the running transaction: each step of the method as it begins, what the terminal waits
for with a countdown from the runner's :class:`~drivers.runner.Waiting` events, and the result on
its own line.  ``ctrl+t`` shows the APDU / center trace of the transaction
(:mod:`drivers.trace`).

Ctrl-C cancels: during a transaction it asks the application to cancel it (the phone is told, a
request that already left is reversed) and comes back to the menu; in the menu, or a second time
while a cancel is under way, it quits with :data:`~cli.app.terminal_app.CANCELLED_EXIT` (130).

The session lives in one thread of its own (its store may be used only in the thread that opened
it): every call into it goes through :attr:`TerminalConsole.thread`.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Footer, Input, Log, OptionList, Static
from textual.widgets.option_list import Option

from swipepay.cli.app.phone_app import currency_letters
from swipepay.cli.app.terminal_app import CANCELLED_EXIT, TransactionCancelled, order_amount
from swipepay.cli.terminal_cmds import (
    STEP_NOW,
    GivenCardReader,
    Session,
    _card_hint,
    _reader,
    _render,
    card_choices,
    resolve_card_choice,
)
from swipepay.drivers.runner import RunEvent, StepBegan, Waiting
from swipepay.drivers.trace import TraceWriter, TracingHost, TracingLink
from swipepay.firmware_sim.errors import SwipepayError
from swipepay.firmware_sim.transaction import TXN_TYPES, TxnType

if TYPE_CHECKING:
    from swipepay.cli.app.terminal_app import CenterConnection
    from swipepay.cli.app.terminal_settings import TerminalSettings
    from swipepay.drivers.base import CardReader
    from swipepay.firmware_sim.terminal import Order

T = TypeVar("T")


class _TracedCenter(TracingHost):
    """The session's center with its messages traced; still checked and closed like the center
    itself (the application asks a host for both)."""

    def __init__(self, inner: CenterConnection, writer: TraceWriter) -> None:
        super().__init__(inner, writer)
        self.center = inner

    def check(
        self, terminal_id: str, stan: Callable[[], str], transmitted_at: str, timeout: float
    ) -> None:
        check = getattr(self.center, "check", None)
        if check is not None:
            self.writer.write("host", dir="terminal->center", text="echo (is the center there?)")
            check(terminal_id, stan, transmitted_at, timeout)

    def close(self) -> None:
        self.center.close()

    @property
    def answered_by(self) -> object:
        """The traced center's answering address (failover: see TlsHost)."""
        return getattr(self.center, "answered_by", None)

    @property
    def skipped(self) -> object:
        return getattr(self.center, "skipped", ())


class _TraceLines(io.StringIO):
    """The text file a :class:`TraceWriter` writes to, read back one record at a time."""

    def __init__(self, line: Callable[[str], object]) -> None:
        super().__init__()
        self._line = line

    def write(self, text: str) -> int:
        for record in text.splitlines():
            self._line(trace_line(json.loads(record)))
        return len(text)


def trace_line(record: dict[str, Any]) -> str:
    """One trace record as one line of the trace pane."""
    t = f"{record.get('t_ms', 0):8.1f} ms"
    kind = record.get("kind")
    if kind == "apdu":
        cmd, rsp = record.get("cmd") or "", record.get("rsp") or ""
        back = f"SW {record['sw']} {len(rsp) // 2} B" if record.get("sw") else record.get("error")
        return f"{t}  → {record.get('ins')} {len(cmd) // 2} B   ← {back}"
    if kind == "host":
        arrow = "→ center" if record.get("dir") == "terminal->center" else "← center"
        return f"{t}  {arrow}  {record.get('text')}"
    if kind == "link":
        return f"{t}  phone link {record.get('event')} {record.get('detail') or ''}".rstrip()
    return f"{t}  {kind}"


class TerminalConsole(App[int]):
    """States: menu, amount, card, running, cancelling.  The exit code is the last transaction's
    (``q`` in the menu) or :data:`CANCELLED_EXIT` (Ctrl-C in the menu)."""

    TITLE = "swipepay terminal"
    CSS = """
    #till { border: round $accent; padding: 0 1; height: 1fr; }
    #head { text-style: bold; height: 1; }
    #setup { color: $text-muted; height: 1; }
    #ask { margin-top: 1; height: 1; text-style: bold; }
    #menu, #cards { height: auto; max-height: 12; }
    #error { color: $error; height: auto; }
    #steps { height: auto; }
    #waiting { color: $warning; height: 1; }
    #result { height: auto; margin-top: 1; text-style: bold; }
    #result.approved { color: $success; }
    #result.declined { color: $warning; }
    #trace { height: 12; border: round $secondary; }
    .hidden { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "interrupt", "Cancel / quit", priority=True),
        Binding("ctrl+t", "toggle_trace", "Trace"),
    ]

    def __init__(self, session: Session, thread: ThreadPoolExecutor) -> None:
        super().__init__()
        self.session = session
        #: The one thread that may use the session.
        self.thread = thread
        self.types: list[TxnType] = session.app.supported_types()
        self.state = "menu"
        self.txn_type: TxnType | None = None
        self.amount_text: str | None = None
        self.order: Order | None = None
        self.last_exit = 0
        self._waiting: tuple[str, float | None, float] | None = None
        self._card_hint: str | None = None

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        cfg, settings = self.session.app.config, self.session.app.settings
        with Vertical(id="till"):
            yield Static(f"{cfg.merchant_name} — terminal {cfg.terminal_id} ({cfg.kind})",
                         id="head")
            yield Static(f"card reader {settings.card} · phone {settings.phone} · "
                         f"center {settings.center}", id="setup")
            yield Static("Transaction", id="ask")
            yield OptionList(
                *(Option(f"{n}. {TXN_TYPES[t].label}", id=t.value)
                  for n, t in enumerate(self.types, 1)),
                id="menu",
            )
            yield Input(placeholder="12.34", id="amount", classes="hidden")
            yield OptionList(id="cards", classes="hidden")
            yield Input(placeholder="number, label as shown, track data or PAN", id="card",
                        classes="hidden")
            yield Static("", id="error")
            yield Static("", id="steps")
            yield Static("", id="waiting")
            yield Static("", id="result")
        yield Log(id="trace", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(0.1, self._tick)
        self._to_menu()

    @property
    def waiting_text(self) -> str:
        """What the terminal waits for, with the time left, as shown."""
        return str(self.query_one("#waiting", Static).render())

    def _text(self, widget_id: str, text: str) -> None:
        self.query_one(f"#{widget_id}", Static).update(text)

    def _show_only(self, *ids: str) -> None:
        for widget_id in ("menu", "amount", "cards", "card"):
            self.query_one(f"#{widget_id}").set_class(widget_id not in ids, "hidden")
        if ids:
            self.query_one(f"#{ids[-1]}").focus()

    async def _in_session(self, call: Callable[[], T]) -> T:
        """Run ``call`` in the session's thread without blocking the screen."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, call)

    # -- menu -> amount -> card -----------------------------------------------------------------

    def _to_menu(self) -> None:
        self.state = "menu"
        self.txn_type, self.amount_text, self.order = None, None, None
        self._text("ask", "Transaction (number or Enter · q quits)")
        self._show_only("menu")

    def on_key(self, event: events.Key) -> None:
        key = event.key
        if self.state != "menu":
            return
        if key.isdigit() and 1 <= int(key) <= len(self.types):
            event.stop()
            self._chose(self.types[int(key) - 1])
        elif key == "q":
            event.stop()
            self.exit(self.last_exit)

    @on(OptionList.OptionSelected, "#menu")
    def _menu_selected(self, event: OptionList.OptionSelected) -> None:
        if self.state == "menu" and event.option.id is not None:
            self._chose(TxnType(event.option.id))

    def _chose(self, txn_type: TxnType) -> None:
        self.txn_type = txn_type
        self._text("error", "")
        self._text("steps", "")
        self._text("waiting", "")
        if TXN_TYPES[txn_type].has_amount:
            self.state = "amount"
            letters = currency_letters(self.session.app.config.currency)
            self._text("ask", f"{TXN_TYPES[txn_type].label}: amount ({letters})")
            amount = self.query_one("#amount", Input)
            amount.value = ""
            self._show_only("amount")
        else:
            self._ordered()

    @on(Input.Submitted, "#amount")
    def _amount_submitted(self, event: Input.Submitted) -> None:
        if self.state != "amount" or self.txn_type is None:
            return
        try:
            order_amount(self.txn_type, event.value.strip())
        except SwipepayError as exc:
            self._text("error", f"{exc} — type the amount again")
            event.input.value = ""
            return
        self._text("error", "")
        self.amount_text = event.value.strip()
        self._ordered()

    @work(exclusive=True, group="order")
    async def _ordered(self) -> None:
        """The order from what was keyed; then the card (if this type reads one)."""
        assert self.txn_type is not None
        name, amount = self.txn_type.value, self.amount_text
        try:
            self.order = await self._in_session(lambda: self.session.app.order(name, amount, None))
        except SwipepayError as exc:
            self._text("result", f"error: {exc}")
            self._to_menu()
            return
        if self.order.type is TxnType.COMPLETION:
            self._start(None)
        elif self.session.app.settings.card in ("mock:", "mock"):
            self._ask_card()
        else:
            order = self.order
            try:
                reader = await self._in_session(lambda: _reader(self.session, None, order))
            except SwipepayError as exc:
                self._text("result", f"error: {exc}")
                self._to_menu()
                return
            self._start(reader)

    def _ask_card(self) -> None:
        self.state = "card"
        self._text("ask", "Card: choose one, or paste track data / a lab PAN")
        cards = self.query_one("#cards", OptionList)
        cards.clear_options()
        choices = card_choices(self.session.app.lab.cards())
        cards.add_options(Option(f"{n:2}. {name} {via}", id=f"{name} {via}")
                          for n, (name, via) in enumerate(choices, 1))
        self.query_one("#card", Input).value = ""
        self._show_only("cards", "card")

    @on(OptionList.OptionSelected, "#cards")
    def _card_selected(self, event: OptionList.OptionSelected) -> None:
        if self.state == "card" and event.option.id is not None:
            self._card_answer(event.option.id)

    @on(Input.Submitted, "#card")
    def _card_submitted(self, event: Input.Submitted) -> None:
        if self.state == "card":
            self._card_answer(event.value.strip().removesuffix(".").strip())

    def _card_answer(self, answer: str) -> None:
        """A number, the label exactly as shown (``2. alice-visa insert`` or without its
        number), track data or a lab PAN."""
        number, _, label = answer.partition(". ")
        if number.strip().isdigit() and label:
            answer = label
        assert self.order is not None
        try:
            url, data = resolve_card_choice(answer, self.session.app.lab.cards())
        except SwipepayError as exc:
            self._text("error", f"{exc} — choose the card again")
            self.query_one("#card", Input).value = ""
            return
        self._text("error", "")
        order = self.order
        if url is None:
            self._start(GivenCardReader(data))
        else:
            self._open_and_start(url, order)

    @work(exclusive=True, group="order")
    async def _open_and_start(self, url: str, order: Order) -> None:
        try:
            reader = await self._in_session(lambda: self.session.app.open_reader(url, order))
        except SwipepayError as exc:
            self._text("error", str(exc))
            return
        self._start(reader)

    # -- the running transaction ----------------------------------------------------------------

    def _start(self, reader: CardReader | None) -> None:
        assert self.order is not None
        self.state = "running"
        self._show_only()
        self._text("ask", f"{TXN_TYPES[self.order.type].label} running — Ctrl-C cancels")
        self._text("result", "")
        self._text("steps", "")
        self._card_hint = _card_hint(self.session, reader)
        pane = self.query_one("#trace", Log)
        pane.clear()
        self._run(self.order, reader, pane)

    @work(exclusive=True, group="run")
    async def _run(self, order: Order, reader: CardReader | None, pane: Log) -> None:
        result: dict[str, Any] | None = None
        line = ""
        try:
            result = await self._in_session(lambda: self._run_traced(order, reader, pane))
        except TransactionCancelled as exc:
            line = f"cancelled{f' (reversal {exc.reversal})' if exc.reversal else ''}"
            self.last_exit = exc.exit_code
        except SwipepayError as exc:
            line = f"error: {exc}"
        finally:
            if reader is not None:
                await self._in_session(reader.close)
        approved = result is not None and result["ending"] == "APPROVED"
        if result is not None:
            words: list[str] = []
            _render(result, words.append)
            line = click.unstyle(words[0]).strip().removeprefix("-> ")
            self.last_exit = int(result["exit_code"])
        self._waiting = None
        self._text("waiting", "")
        self._text("result", line)
        shown = self.query_one("#result")
        shown.set_class(approved, "approved")
        shown.set_class(not approved, "declined")
        self._to_menu()

    def _run_traced(self, order: Order, reader: CardReader | None, pane: Log) -> dict[str, Any]:
        """In the session's thread: one transaction, its link and center traced to the pane."""
        session = self.session
        writer = TraceWriter(_TraceLines(lambda s: self.call_from_thread(pane.write_line, s)))
        link, host = session.link, session.host
        session.link = TracingLink(link, writer)
        session.host = _TracedCenter(host, writer)
        try:
            return session.run(order, reader, lambda event: self.call_from_thread(self._event,
                                                                                   event))
        finally:
            session.link, session.host = link, host

    def _event(self, event: RunEvent) -> None:
        match event:
            case StepBegan(step=step):
                text = STEP_NOW[int(step)]
                if int(step) == 1 and self._card_hint:
                    text = f"present the card {self._card_hint}"
                lines = str(self.query_one("#steps", Static).render())
                self._text("steps", f"{lines}\n[{int(step)}] {text}".strip("\n"))
                self._waiting = None
                self._text("waiting", "")
            case Waiting(what=what, remaining_s=remaining):
                self._waiting = (what, remaining, time.monotonic())
                self._tick()

    def _tick(self) -> None:
        if self._waiting is None:
            return
        what, remaining, at = self._waiting
        if remaining is None:
            self._text("waiting", f"    waiting for {what}")
        else:
            left = max(0.0, remaining - (time.monotonic() - at))
            self._text("waiting", f"    waiting for {what} — {left:4.1f} s left")

    # -- keys -------------------------------------------------------------------------------------

    def action_interrupt(self) -> None:
        if self.state == "running":
            self.state = "cancelling"
            self.session.app.cancel()
            self._text("ask", "cancelling… (Ctrl-C again quits)")
        elif self.state in ("amount", "card"):
            self._text("result", "cancelled")
            self._text("error", "")
            self._to_menu()
        else:  # the menu, or a cancel that is taking long
            self.session.app.cancel()
            self.exit(CANCELLED_EXIT)

    def action_toggle_trace(self) -> None:
        pane = self.query_one("#trace", Log)
        pane.set_class(not pane.has_class("hidden"), "hidden")


def run_console(home: Path, settings: TerminalSettings) -> int:
    """``swipepay terminal run`` (menu) on a terminal: open the session in its own thread, run
    the console, close the session; the exit code as documented in ``terminal run --help``."""
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terminal")
    try:
        session = thread.submit(Session.open, home, settings).result()  # errors: before the UI
        try:
            code = TerminalConsole(session, thread).run()
        finally:
            thread.submit(session.close).result()
    finally:
        thread.shutdown(wait=False, cancel_futures=True)
    return CANCELLED_EXIT if code is None else code
