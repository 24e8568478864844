"""The phone application's rules for a person answering through a front-end (AttendedUser):
input is bound to the payment on screen, a payment that ended cannot be answered, and the
front-end is told when the terminal goes away."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from swipepay.cli.app.phone_app import (
    AttendedUser,
    EndReason,
    PaymentView,
    ResultView,
    decline_reason,
    money,
)
from swipepay.firmware_sim.conformance import CheckResult, run_check, select_checks
from swipepay.firmware_sim.phone import Phone
from swipepay.firmware_sim.phonelink.applet import PaymentShown, ResultShown, SessionWiped
from tests.support.phonelink import conformance_setup


@dataclass
class RecordingUI:
    """A front-end that records what it was told; ``on_shown`` plays the user."""

    on_shown: Callable[[PaymentView], None] = lambda view: None
    shown: list[PaymentView] = field(default_factory=list)
    endings: list[tuple[int, EndReason]] = field(default_factory=list)
    results: list[ResultView] = field(default_factory=list)

    def payment_shown(self, payment: PaymentView) -> None:
        self.shown.append(payment)
        self.on_shown(payment)

    def ended(self, payment: PaymentView, reason: EndReason) -> None:
        self.endings.append((payment.payment_id, reason))

    def result(self, payment: PaymentView, result: ResultView) -> None:
        self.results.append(result)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def purchase(ui: RecordingUI, *, timeout: float = 60.0, clock: Clock | None = None,
             pause: Callable[[float], None] = lambda s: None,
             max_polls: int = 10) -> tuple[CheckResult, AttendedUser, Phone]:
    ctx, scripted = conformance_setup()
    user = AttendedUser(ui, timeout, card="alice-visa", clock=clock or Clock())
    phone = Phone(scripted.applet, user, lambda: ctx.now)
    check = select_checks(["transaction"])[0]
    return run_check(check, replace(ctx, max_polls=max_polls), phone.process, pause), user, phone


def test_the_payment_on_screen_is_confirmed_with_its_id() -> None:
    holder: list[AttendedUser] = []
    ui = RecordingUI(lambda view: holder[0].confirm(view.payment_id, "1234"))
    ctx, scripted = conformance_setup()
    user = AttendedUser(ui, 60, card="alice-visa", clock=Clock())
    holder.append(user)
    phone = Phone(scripted.applet, user, lambda: ctx.now)
    result = run_check(select_checks(["transaction"])[0], ctx, phone.process, lambda s: None)
    assert result.passed, result.detail
    (view,) = ui.shown
    assert (view.merchant, view.terminal_id, view.label) == ("Corner Coffee", "POS00001",
                                                             "Purchase")
    assert view.amount_text.endswith(" EUR")
    assert [r.words for r in ui.results] == ["Approved"]
    assert ui.endings == []  # the wipe after the result is not a cancellation


def test_an_answer_given_before_the_payment_appeared_is_refused() -> None:
    ui = RecordingUI()
    user = AttendedUser(ui, 60, clock=Clock())
    assert not user.confirm(1, "1234")  # typed ahead on an idle phone
    assert not user.decline(1)
    assert user.current is None


def test_an_unanswered_payment_times_out_and_cannot_be_answered_after() -> None:
    clock = Clock()
    ui = RecordingUI()

    def pause(seconds: float) -> None:
        clock.now += 5

    result, user, _ = purchase(ui, timeout=10, clock=clock, pause=pause)
    assert not result.passed and "TIMED_OUT" in result.detail
    (view,) = ui.shown
    assert ui.endings == [(view.payment_id, EndReason.TIMED_OUT)]
    assert not user.confirm(view.payment_id, "1234")  # a late "y" answers nothing


def test_an_answer_past_the_deadline_is_refused_even_before_the_next_poll() -> None:
    clock = Clock()
    taken: list[bool] = []
    holder: list[AttendedUser] = []

    def late(view: PaymentView) -> None:
        clock.now = view.deadline + 0.1
        taken.append(holder[0].confirm(view.payment_id, "1234"))

    ui = RecordingUI(late)
    ctx, scripted = conformance_setup()
    user = AttendedUser(ui, 10, clock=clock)
    holder.append(user)
    phone = Phone(scripted.applet, user, lambda: ctx.now)
    run_check(select_checks(["transaction"])[0], ctx, phone.process, lambda s: None)
    assert taken == [False]


def test_the_terminal_going_away_ends_the_payment_on_screen() -> None:
    ui = RecordingUI()
    ctx, scripted = conformance_setup()
    user = AttendedUser(ui, 60, clock=Clock())
    phone = Phone(scripted.applet, user, lambda: ctx.now)
    left: list[bool] = []

    def leave(seconds: float) -> None:
        if not left:
            left.append(True)
            phone.deactivate()  # the link closed: Ctrl-C on the terminal, power off...

    run_check(select_checks(["transaction"])[0], ctx, phone.process, leave)
    (view,) = ui.shown
    assert ui.endings == [(view.payment_id, EndReason.CANCELLED_BY_TERMINAL)]
    assert user.current is None
    assert not user.confirm(view.payment_id, "1234")


class FakeApplet:
    """Just what AttendedUser.poll uses of the applet."""

    def __init__(self) -> None:
        self.awaiting_user = True
        self.calls: list[str] = []

    def confirm(self, pin: str) -> None:
        self.calls.append(f"confirm {len(pin)}")
        self.awaiting_user = False

    def decline(self) -> None:
        self.calls.append("decline")
        self.awaiting_user = False

    def expire(self) -> None:
        self.calls.append("expire")
        self.awaiting_user = False


SHOWN = PaymentShown("Corner Coffee", "POS00001", "purchase", 888, "978")


def test_an_answer_for_an_earlier_payment_does_not_answer_the_next() -> None:
    ui = RecordingUI()
    user = AttendedUser(ui, 60, clock=Clock())
    user.on_payment(SHOWN)
    old = ui.shown[-1].payment_id
    user.on_end(SessionWiped("deactivated"))
    user.on_payment(SHOWN)
    assert ui.shown[-1].amount_text == "8.88 EUR"
    assert not user.confirm(old, "1234")
    applet = FakeApplet()
    user.poll(applet)  # type: ignore[arg-type]
    assert applet.calls == []  # nothing answered the new payment
    assert user.confirm(ui.shown[-1].payment_id, "1234")
    assert not user.confirm(ui.shown[-1].payment_id, "1234")  # one answer per payment
    user.poll(applet)  # type: ignore[arg-type]
    assert applet.calls == ["confirm 4"]


def test_declining_ends_as_declined_not_cancelled() -> None:
    ui = RecordingUI()
    user = AttendedUser(ui, 60, clock=Clock())
    user.on_payment(SHOWN)
    assert user.decline(ui.shown[-1].payment_id)
    applet = FakeApplet()
    user.poll(applet)  # type: ignore[arg-type]
    user.on_end(SessionWiped("deactivated"))  # the terminal hangs up after a decline
    assert applet.calls == ["decline"]
    assert [r for _, r in ui.endings] == [EndReason.DECLINED]


def test_results_in_words() -> None:
    ui = RecordingUI()
    user = AttendedUser(ui, 60, card="alice-visa", clock=Clock())
    user.on_payment(PaymentShown("Corner Coffee", "POS00001", "balance", 0, "978"))
    user.on_result(ResultShown("00", "123456", 1_234_56))
    assert ui.results[-1].balance_text == "1234.56 EUR"
    assert decline_reason("55") == "incorrect PIN"
    reason = decline_reason("75", "alice-visa")
    assert reason is not None and "swipepay center unblock" in reason and "alice-visa" in reason
    assert decline_reason("58") == "transaction not permitted to terminal"
    assert money(-5, "EUR") == "-0.05 EUR"


def test_a_malformed_pin_is_refused_before_the_applet_and_the_payment_stays_open() -> None:
    holder: list[AttendedUser] = []
    tried: list[str] = []

    def answer(view: PaymentView) -> None:
        for pin in ("123", "12345678901234", "12a4"):
            try:
                holder[0].confirm(view.payment_id, pin)
            except ValueError:
                tried.append(pin)
        assert holder[0].confirm(view.payment_id, "1234")  # still the payment on screen

    ui = RecordingUI(answer)
    ctx, scripted = conformance_setup()
    user = AttendedUser(ui, 60, card="alice-visa", clock=Clock())
    holder.append(user)
    phone = Phone(scripted.applet, user, lambda: ctx.now)
    result = run_check(select_checks(["transaction"])[0], ctx, phone.process, lambda s: None)
    assert result.passed, result.detail
    assert tried == ["123", "12345678901234", "12a4"]
    assert [r.words for r in ui.results] == ["Approved"]
