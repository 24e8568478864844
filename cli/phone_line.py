"""The phone's line mode: :class:`~cli.app.phone_app.PhoneUI` on a plain terminal or a pipe.

What it shows and asks; the rules (which payment an answer belongs to, when a payment ends) are
:class:`~cli.app.phone_app.AttendedUser`'s.  Each payment gets its own question thread, started
after the payment is printed and after pending input is discarded; when the payment ends the
question is abandoned, so a late ``y`` or PIN answers nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import click

from swipepay.cli.app.phone_app import AttendedUser, EndReason, PaymentView, ResultView
from swipepay.cli.line_input import LineInput


class LinePhoneUI:
    """Prints payments and results; asks "confirm this payment?" and the PIN (never echoed)."""

    def __init__(self, lines: LineInput, echo: Callable[[str], None] = click.echo) -> None:
        self.lines = lines
        self.echo = echo
        self.user: AttendedUser | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LinePhoneUI(tty={self.lines.tty})"

    def attach(self, user: AttendedUser) -> None:
        """The user this screen answers for (made with this screen as its UI)."""
        self.user = user

    # -- PhoneUI --------------------------------------------------------------------------------

    def payment_shown(self, payment: PaymentView) -> None:
        self._abandon()
        amount = f" {payment.amount_text}" if payment.has_amount else ""
        left = payment.seconds_left(self._now())
        self.echo(
            f"\nPAY {payment.merchant} (terminal {payment.terminal_id}, certified)\n"
            f"  {payment.label}{amount} — answer within {left:.0f} s"
        )
        self._cancel = cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._ask, args=(payment.payment_id, cancel), daemon=True
        )
        self._thread.start()

    def ended(self, payment: PaymentView, reason: EndReason) -> None:
        self._abandon()
        self.echo(f"\n  {reason.value}")

    def result(self, payment: PaymentView, result: ResultView) -> None:
        self._abandon()
        auth = f" (auth {result.auth_code})" if result.auth_code else ""
        verdict = "APPROVED" if result.approved else "DECLINED"
        why = f": {result.reason}" if result.reason else ""
        self.echo(f"  result: {verdict} {result.response_code}{auth}{why}")
        if result.balance_text is not None:
            self.echo(f"  available balance: {result.balance_text}")

    # -- the question ---------------------------------------------------------------------------

    def _now(self) -> float:
        return self.user.clock() if self.user is not None else 0.0

    def _abandon(self) -> None:
        """End the question of the previous payment (it returns within one read slice)."""
        self._cancel.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        self._thread = None

    def _ask(self, payment_id: int, cancel: threading.Event) -> None:
        user = self.user
        assert user is not None, "attach() the AttendedUser first"
        self.lines.discard_pending()  # typed before the payment was on screen: not an answer
        answer = self.lines.read_line(cancel, prompt="  confirm this payment? [y/N]: ")
        if answer is None and cancel.is_set():
            return
        if (answer or "").strip().lower() not in ("y", "yes"):
            taken = user.decline(payment_id)
        else:
            while True:
                pin = self.lines.read_line(cancel, prompt="  PIN (not shown): ", secret=True)
                if self.lines.tty:
                    click.echo("")  # the Enter the user typed was not echoed either
                if pin is None:
                    return
                try:
                    taken = user.confirm(payment_id, pin.strip())
                    break
                except ValueError as exc:  # the PIN's form, never its digits
                    self.echo(f"  ({exc}; type it again)")
                finally:
                    del pin
        if not taken and not cancel.is_set():
            self.echo("  (that payment has ended; nothing was sent)")
