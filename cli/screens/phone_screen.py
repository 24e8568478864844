"""The phone as a phone: a full-screen :class:`~cli.app.phone_app.PhoneUI` (Textual).

It shows the payment the :class:`~cli.app.phone_app.AttendedUser` hands it — merchant and
terminal from the verified certificate, type, amount with the currency's letters, a countdown —
and relays Confirm (with the PIN typed on a pad, shown masked) or Decline for *that* payment.
Which payment an answer belongs to, and whether it may still be answered, is the user's rule:
this screen only names the payment on screen when it answers, and keys pressed while no payment
is shown are dropped.  The phone link is served in a worker thread; its events reach the screen
through :meth:`App.call_from_thread`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import Button, Static

from swipepay.firmware_sim.phonelink.protocol import AID
from swipepay.firmware_sim.pinblock import DECIMAL, PIN_DIGITS

if TYPE_CHECKING:
    from swipepay.cli.app.phone_app import (
        AttendedUser,
        EndReason,
        PaymentView,
        ResultView,
    )
    from swipepay.drivers.store.phone_store import PhoneStore

#: The PIN pad's keys, in phone order.
PAD_KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "back", "0", "ok")


class ScreenUI:
    """The :class:`PhoneUI` the phone application calls from the link thread: each call is
    handed to the screen's own thread (and dropped once the screen has closed)."""

    def __init__(self, screen: PhoneScreen) -> None:
        self.screen = screen

    def __repr__(self) -> str:
        return "ScreenUI()"

    def _hand_over(self, call: Callable[[], None]) -> None:
        if self.screen.is_running:
            with contextlib.suppress(RuntimeError):  # the screen closed meanwhile
                self.screen.call_from_thread(call)

    def payment_shown(self, payment: PaymentView) -> None:
        self._hand_over(lambda: self.screen.show_payment(payment))

    def ended(self, payment: PaymentView, reason: EndReason) -> None:
        self._hand_over(lambda: self.screen.show_end(payment, reason.value))

    def result(self, payment: PaymentView, result: ResultView) -> None:
        self._hand_over(lambda: self.screen.show_result(payment, result))


class PhoneScreen(App[None]):
    """A phone-shaped screen.  States: idle, payment (Confirm/Decline), pin, sent, over."""

    TITLE = "swipepay phone"
    AUTO_FOCUS = None  # no widget takes Enter until a payment is on screen
    CSS = """
    Screen { align: center middle; background: $background; }
    #phone {
        width: 38; height: 31; border: round $accent; padding: 0 1;
        background: $surface;
    }
    #bar, #link { height: 1; color: $text-muted; }
    #status { height: 2; text-style: bold; content-align: center middle; width: 100%; }
    .field { height: 1; }
    #merchant { text-style: bold; }
    #amount { text-style: bold; color: $warning; height: 2; content-align: center middle;
              width: 100%; }
    #countdown { height: 1; color: $text-muted; content-align: center middle; width: 100%; }
    #answer { height: 3; align: center middle; }
    #answer Button { width: 1fr; min-width: 10; margin: 0 1; }
    #pin { height: 1; content-align: center middle; width: 100%; text-style: bold; }
    #pad { grid-size: 3 4; grid-gutter: 0 1; height: 12; }
    #pad Button { width: 100%; min-width: 6; height: 3; }
    #result { height: 3; content-align: center middle; width: 100%; text-style: bold; }
    .hidden { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "quit_phone", "Quit", priority=True),
        Binding("ctrl+q", "quit_phone", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        owner: str = "",
        link: str = "",
        serve: Callable[[threading.Event], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        #: "alice-phone · card alice-visa" in the top bar.
        self.owner = owner
        #: Where the phone is served (``tcp:127.0.0.1:7000``).
        self.link = link
        #: Serves the phone link until the event is set (run in a worker thread).
        self.serve = serve
        self.ui = ScreenUI(self)
        self.user: AttendedUser | None = None
        self._clock = clock
        self.state = "idle"
        self.payment: PaymentView | None = None
        self._pin = ""
        self._stop = threading.Event()
        self._ticker: Timer | None = None
        #: The last thing the screen said (printed when the program ends).
        self.last_words = ""

    def attach(self, user: AttendedUser) -> None:
        """The person this screen answers for (made with :attr:`ui` as its front-end)."""
        self.user = user
        if self._clock is None:
            self._clock = user.clock

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="phone"):
            yield Static(self.owner, id="bar")
            yield Static(self.link, id="link")
            yield Static("Hold the phone to a terminal", id="status")
            yield Static("", id="merchant", classes="field")
            yield Static("", id="terminal", classes="field")
            yield Static("", id="type", classes="field")
            yield Static("", id="amount")
            yield Static("", id="countdown")
            with Horizontal(id="answer", classes="hidden"):
                yield Button("Confirm", id="confirm", variant="success")
                yield Button("Decline", id="decline", variant="error")
            yield Static("", id="pin", classes="hidden")
            with Grid(id="pad", classes="hidden"):
                for key in PAD_KEYS:
                    label = {"back": "⌫", "ok": "OK"}.get(key, key)
                    yield Button(label, id=f"pad-{key}",
                                 variant="primary" if key == "ok" else "default")
            yield Static("", id="result")
            yield Static("y confirm · n decline · 0-9 PIN ⏎", id="help")

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False  # keys go to on_key, bound to the state on screen
            button.active_effect_duration = 0  # a quick second "5" is a digit, not a bounce
        self._ticker = self.set_interval(0.2, self._tick)
        if self.serve is not None:
            self.run_worker(self._serve_link, thread=True, name="phone link")

    def _serve_link(self) -> None:
        assert self.serve is not None
        try:
            self.serve(self._stop)
        finally:
            if not self._stop.is_set():
                self.call_from_thread(self.exit)  # --once: the session is over

    def _text(self, widget_id: str, text: str) -> None:
        self.query_one(f"#{widget_id}", Static).update(text)

    def _show(self, widget_id: str, shown: bool) -> None:
        self.query_one(f"#{widget_id}").set_class(not shown, "hidden")

    def _set_state(self, state: str) -> None:
        self.state = state
        self._show("answer", state == "payment")
        self._show("pin", state == "pin")
        self._show("pad", state == "pin")

    # -- what the phone application tells the screen --------------------------------------------

    def show_payment(self, payment: PaymentView) -> None:
        self.payment = payment
        self._pin = ""
        self._text("status", "Pay?")
        self._text("merchant", payment.merchant)
        self._text("terminal", f"terminal {payment.terminal_id} (certified)")
        self._text("type", payment.label)
        self._text("amount", payment.amount_text if payment.has_amount else "")
        self._text("pin", "")
        self._text("result", "")
        self._set_state("payment")
        self._tick()

    def show_end(self, payment: PaymentView, words: str) -> None:
        if self.payment is None or payment.payment_id != self.payment.payment_id:
            return
        self._over(words)

    def show_result(self, payment: PaymentView, result: ResultView) -> None:
        if self.payment is None or payment.payment_id != self.payment.payment_id:
            return
        words = result.words
        if result.balance_text:
            words += f"\nbalance {result.balance_text}"
        elif result.auth_code:
            words += f"\nauth {result.auth_code}"
        self._over(words)

    def _over(self, words: str) -> None:
        self._pin = ""
        self._text("pin", "")
        self._text("countdown", "")
        self._text("status", "Payment over")
        self._text("result", words)
        self.last_words = words.replace("\n", "; ")
        self._set_state("over")

    def _tick(self) -> None:
        if self.payment is None or self.state not in ("payment", "pin", "sent"):
            return
        if self.state == "sent":
            self._text("countdown", "sent — waiting for the terminal")
            return
        left = self.payment.seconds_left(self._now())
        self._text("countdown", f"{left:4.0f} s to answer")
        if left <= 0:
            self._over("Time is up: the payment was not confirmed")

    def _now(self) -> float:
        assert self._clock is not None, "attach() the user first"
        return self._clock()

    # -- what the user does ----------------------------------------------------------------------

    def on_key(self, event: events.Key) -> None:
        key = event.key
        if self.state == "payment" and key in ("y", "c"):
            self._confirm_pressed()
        elif self.state == "payment" and key in ("n", "d"):
            self._decline()
        elif self.state == "pin" and key in DECIMAL:  # 0-9 only: "٣" is no PIN digit
            self._digit(key)
        elif self.state == "pin" and key == "backspace":
            self._pin = self._pin[:-1]
            self._mask()
        elif self.state == "pin" and key == "enter":
            self._send_pin()
        elif self.state == "pin" and key == "escape":
            self._decline()
        else:
            return  # idle, sent or over: nothing typed here answers anything
        event.stop()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        key = (event.button.id or "").removeprefix("pad-")
        if key == "confirm" and self.state == "payment":
            self._confirm_pressed()
        elif key == "decline" and self.state == "payment":
            self._decline()
        elif self.state == "pin" and key in DECIMAL:
            self._digit(key)
        elif self.state == "pin" and key == "back":
            self._pin = self._pin[:-1]
            self._mask()
        elif self.state == "pin" and key == "ok":
            self._send_pin()

    def _confirm_pressed(self) -> None:
        self._pin = ""
        self._mask()
        self._text("status", "Enter your PIN")
        self._set_state("pin")

    def _digit(self, digit: str) -> None:
        if len(self._pin) < max(PIN_DIGITS):
            self._pin += digit
        self._mask()

    def _mask(self) -> None:
        self._text("pin", "PIN  " + ("•" * len(self._pin) or "_"))

    def _send_pin(self) -> None:
        if len(self._pin) not in PIN_DIGITS:
            self._text("status", f"The PIN has {min(PIN_DIGITS)} to {max(PIN_DIGITS)} digits")
            return
        pin, self._pin = self._pin, ""
        self._mask()
        self._answered(self.user is not None and self.payment is not None
                       and self.user.confirm(self.payment.payment_id, pin))
        del pin

    def _decline(self) -> None:
        self._pin = ""
        self._answered(self.user is not None and self.payment is not None
                       and self.user.decline(self.payment.payment_id))

    def _answered(self, taken: bool) -> None:
        if taken:
            self._text("status", "Sent")
            self._set_state("sent")
            self._tick()
        else:
            self._over("This payment can no longer be answered")

    def action_quit_phone(self) -> None:
        self._stop.set()
        self.exit()


def run_phone_screen(
    store: PhoneStore, url: str, timeout: float, once: bool = False, *, aid: bytes = AID
) -> str:
    """``swipepay phone run`` on a terminal: serve the phone on ``url`` behind the full screen
    until the user quits (Ctrl-C) or, with ``once``, the first session ends.  Returns the last
    thing the screen said, for the line printed after the screen closes."""
    from swipepay.cli.app.phone_app import PhoneApp
    from swipepay.drivers.registry import open_phone_server

    profile = store.profile
    server = open_phone_server(url)
    address = getattr(server, "address", None)  # a tcp: link on port 0: the port it got
    if isinstance(address, tuple):
        url = f"{url.partition(':')[0]}:{address[0]}:{address[1]}"
    try:
        screen = PhoneScreen(f"{profile.name} · card {profile.card}", url)
        phone = PhoneApp.attended(store, screen.ui, timeout, aid=aid)
        screen.attach(phone.user)
        screen.serve = lambda stop: phone.serve(server, stop=stop, once=once)
        screen.run()
    finally:
        server.close()
    return screen.last_words
