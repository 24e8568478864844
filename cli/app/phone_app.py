"""The phone application: one phone profile (its :class:`PhoneStore`) and the person holding the
phone, served to whatever terminal is in range.

A person is served through :class:`AttendedUser`, which owns the rules every phone front-end
(the line prompt of ``phone run``, the full screen of :mod:`cli.screens`) inherits:

* input is bound to the payment on screen: :meth:`AttendedUser.confirm` and
  :meth:`AttendedUser.decline` name the :attr:`PaymentView.payment_id` they answer, and an answer
  for any other payment, for a payment that ended or after its deadline is refused;
* a payment ends visibly: the front-end's :meth:`PhoneUI.ended` is called when the user's time
  runs out or the terminal goes away (link closed, deselected, powered off), and
  :meth:`PhoneUI.result` with the result in words when the terminal delivers it.

``swipepay phone run`` serves it on a link; the in-process bench, the demo and ``terminal run
--phone mock:<name>`` put it into a mock field.  Either way the phone is the same
:class:`~firmware_sim.phone.Phone` on the same store, so the DUKPT counter rule (each counter on
disk before its key is used; :mod:`drivers.store.phone_store`) holds wherever the phone runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from swipepay.drivers.base import PhoneServer
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.store.phone_store import PhoneProfile, PhoneStore
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser, UserAgent
from swipepay.firmware_sim.phonelink.applet import (
    PaymentShown,
    PhoneApplet,
    ResultShown,
    SessionWiped,
)
from swipepay.firmware_sim.phonelink.protocol import AID
from swipepay.firmware_sim.pinblock import PIN_DIGITS, pin_well_formed
from swipepay.firmware_sim.transaction import CURRENCY_CODES, TXN_TYPES, TxnType

if TYPE_CHECKING:
    from swipepay.center.lab import Lab


# -- what a phone front-end shows ------------------------------------------------------------


def money(amount: int, letters: str) -> str:
    """Minor units with the currency's letters: ``888, "EUR"`` -> ``8.88 EUR``."""
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole}.{cents:02d} {letters}"


@dataclass(frozen=True)
class PaymentView:
    """A payment as the phone shows it.  ``merchant`` and ``terminal_id`` come from the terminal
    certificate the phone verified, never from the terminal's request."""

    payment_id: int
    merchant: str
    terminal_id: str
    txn_type: TxnType
    #: Minor units (cents).
    amount: int
    #: ISO 4217 letters (``EUR``), or the numeric code when the table does not know it.
    currency: str
    #: The :attr:`AttendedUser.clock` time after which the payment can no longer be answered.
    deadline: float

    @property
    def label(self) -> str:
        """The transaction type in words (``Purchase``)."""
        return TXN_TYPES[self.txn_type].label

    @property
    def has_amount(self) -> bool:
        return TXN_TYPES[self.txn_type].has_amount

    @property
    def amount_text(self) -> str:
        """``8.88 EUR``."""
        return money(self.amount, self.currency)

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.deadline - now)


class EndReason(Enum):
    """Why a payment left the screen without a result; the value is what the phone says."""

    CANCELLED_BY_TERMINAL = "Cancelled by the terminal"
    TIMED_OUT = "Timed out: the payment was not confirmed"
    DECLINED = "Declined on the phone"


@dataclass(frozen=True)
class ResultView:
    """The terminal's result as the phone shows it."""

    approved: bool
    response_code: str
    #: ``Approved``, ``Declined — incorrect PIN``...
    words: str
    #: Why it was declined (``incorrect PIN``); None when approved.
    reason: str | None = None
    auth_code: str | None = None
    #: A balance inquiry's available balance, e.g. ``1234.56 EUR``.
    balance_text: str | None = None


class PhoneUI(Protocol):
    """A phone front-end.  The calls come from the thread that serves the link: a front-end with
    its own event loop hands them over (Textual: ``App.call_from_thread``)."""

    def payment_shown(self, payment: PaymentView) -> None:
        """Show ``payment`` and let the user confirm (with the PIN) or decline it."""

    def ended(self, payment: PaymentView, reason: EndReason) -> None:
        """``payment`` is gone without a result; any input for it is now refused."""

    def result(self, payment: PaymentView, result: ResultView) -> None:
        """The terminal delivered the result of ``payment``."""


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

    @classmethod
    def attended(
        cls, store: PhoneStore, ui: PhoneUI, timeout: float, *, aid: bytes = AID
    ) -> PhoneApp[AttendedUser]:
        """The phone held by a person who answers through the front-end ``ui``."""
        lab = store.path.parent.parent if store.path.parent.name == "phones" else None
        user = AttendedUser(ui, timeout, card=store.profile.card,
                            home=str(lab) if lab is not None else "LAB")  # fmt: skip
        return PhoneApp(store, user, aid=aid)

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
        real = lab.pin(card)
        return f"{(int(real) + 1) % 10_000:04d}" if wrong_pin else real

    chosen = lab.aid if aid is None else aid
    return PhoneApp(store, ScriptedUser(choice, pin, delay_polls), aid=chosen)


# -- the person holding the phone, through a front-end --------------------------------------

#: The applet's wipe reason once the result was delivered (not a cancellation).
_COMPLETE = "transaction complete"


def currency_letters(numeric: str) -> str:
    """ISO 4217 letters for a numeric currency code (``978`` -> ``EUR``), else the code."""
    return CURRENCY_CODES.get(numeric, numeric)


def decline_reason(code: str, card: str | None = None, home: str = "LAB") -> str | None:
    """Why ``code`` declined, in words (None: approved); code 75 names the unblock command."""
    from swipepay.center.response_codes import RC, describe

    row = describe(code)
    if row.approved:
        return None
    reason = f"{row.text[0].lower()}{row.text[1:]}"
    if code == RC.PIN_TRIES_EXCEEDED:
        reason += f"; the operator resets them with `{unblock_command(card, home)}`"
    return reason


def unblock_command(card: str | None, home: str = "LAB") -> str:
    """The operator command that resets a card's PIN tries (named in every code-75 message)."""
    return f"swipepay center unblock --home {home} --card {card or 'CARD'}"


class AttendedUser:
    """A person answering through a :class:`PhoneUI`; the phone's :class:`UserAgent`.

    The applet's events arrive on the link thread; the front-end answers on its own thread with
    :meth:`confirm` or :meth:`decline`, naming the payment it answers.  The answer is handed to
    the applet on the next poll only if that payment is still the one waiting, so nothing typed
    for (or before) another payment can ever answer this one.
    """

    def __init__(
        self,
        ui: PhoneUI,
        timeout: float,
        *,
        card: str | None = None,
        home: str = "LAB",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ui = ui
        self.timeout = timeout
        #: The bound card's lab name and the lab directory: code 75 names the unblock command.
        self.card = card
        self.home = home
        self.clock = clock
        self._lock = threading.Lock()
        self._ids = 0
        self._current: PaymentView | None = None
        self._answer: tuple[int, bool, str] | None = None
        self._declined = False

    def __repr__(self) -> str:
        return f"AttendedUser(timeout={self.timeout})"

    @property
    def current(self) -> PaymentView | None:
        """The payment on screen that may still be answered, if any."""
        with self._lock:
            return self._current

    # -- front-end side ------------------------------------------------------------------------

    def confirm(self, payment_id: int, pin: str) -> bool:
        """The user confirmed ``payment_id`` with ``pin``; False when that payment cannot be
        answered any more (ended, answered, past its deadline, or not the one on screen).

        :class:`ValueError` for a PIN that is not 4 to 12 digits (ISO 9564-1): the front-end
        asks again; such a PIN never reaches the applet."""
        if not pin_well_formed(pin):
            raise ValueError(f"a PIN has {PIN_DIGITS.start} to {PIN_DIGITS.stop - 1} digits")
        return self._take(payment_id, True, pin)

    def decline(self, payment_id: int) -> bool:
        """The user declined ``payment_id``; False as for :meth:`confirm`."""
        return self._take(payment_id, False, "")

    def _take(self, payment_id: int, ok: bool, pin: str) -> bool:
        with self._lock:
            view = self._current
            if (
                view is None
                or view.payment_id != payment_id
                or self._answer is not None
                or self.clock() > view.deadline
            ):
                return False
            self._answer = (payment_id, ok, pin)
            return True

    # -- UserAgent side (the link thread) ------------------------------------------------------

    def on_payment(self, shown: PaymentShown) -> None:
        with self._lock:
            self._ids += 1
            view = PaymentView(
                payment_id=self._ids,
                merchant=shown.merchant_name,
                terminal_id=shown.terminal_id,
                txn_type=TxnType(shown.txn_type),
                amount=shown.amount,
                currency=currency_letters(shown.currency),
                deadline=self.clock() + self.timeout,
            )
            self._current, self._answer, self._declined = view, None, False
        self.ui.payment_shown(view)

    def poll(self, applet: PhoneApplet) -> None:
        if not applet.awaiting_user:
            return
        with self._lock:
            view, answer = self._current, self._answer
            if view is None:
                return
            late = answer is None and self.clock() > view.deadline
            if late:
                self._current = None
            elif answer is not None:
                self._declined = not answer[1]
                self._answer = (answer[0], answer[1], "")  # answered: the PIN is not kept
        if late:
            applet.expire()
            self.ui.ended(view, EndReason.TIMED_OUT)
        elif answer is not None:
            _, ok, pin = answer
            del answer
            if ok:
                applet.confirm(pin)
            else:
                applet.decline()
            del pin

    def on_result(self, shown: ResultShown) -> None:
        with self._lock:
            view, self._current = self._current, None
        if view is None:
            return
        balance = None
        if shown.balance is not None:
            balance = money(shown.balance, view.currency)
        reason = decline_reason(shown.response_code, self.card, self.home)
        self.ui.result(
            view,
            ResultView(
                approved=reason is None,
                response_code=shown.response_code,
                words="Approved" if reason is None else f"Declined — {reason}",
                reason=reason,
                auth_code=shown.auth_code,
                balance_text=balance,
            ),
        )

    def on_end(self, wiped: SessionWiped) -> None:
        with self._lock:
            view, self._current = self._current, None
            declined = self._declined
        if view is None or wiped.reason == _COMPLETE:
            return
        self.ui.ended(view, EndReason.DECLINED if declined else EndReason.CANCELLED_BY_TERMINAL)
