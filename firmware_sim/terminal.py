"""The terminal's transaction state machine (method steps 1-8), without I/O.

Like h11, the :class:`Terminal` takes events in (:meth:`Terminal.start`, :meth:`Terminal.handle`)
and gives actions out; a runner in ``drivers`` performs the actions on real or mock readers,
phone links and hosts and feeds the results back as events.  Timeouts are events too: the
runner reports a silent host as :class:`HostSilent`, a phone that left the field as
:class:`PhoneGone`, and the confirmation wait is counted in polls, so no clock is read here.
Every transition is one row of :data:`TRANSITIONS`: (phase, or the phone-link instruction whose
answer is awaited; event type) -> method.

Rules for endings (documented in hardware_notes/phone-link.md):

* the phone leaves, refuses or fails a check before the host was asked -> no host message;
* the host approved but the RESULT could not be delivered to the phone -> the approval is
  reversed (as an EMV terminal reverses when the card is pulled before the second GENERATE AC);
* the host did not answer in time -> a reversal is queued (store and forward) and the
  transaction ends as "host unavailable".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, IntEnum
from typing import Any

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.errors import LocalProtocolError, SwipepayError
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.phonelink.protocol import AID, ConfirmationStatus, Ins
from swipepay.firmware_sim.phonelink.terminal_link import Exchange, PhoneNotBound, TerminalLink
from swipepay.firmware_sim.transaction import Transaction, TxnType


class Step(IntEnum):
    """The steps of the method (hardware_notes/design.md §1), numbered as there."""

    READ_CARD = 1
    BUILD_TRANSACTION = 2
    CONNECT_PHONE = 3
    PAYMENT_REQUEST = 4
    USER_CONFIRMATION = 5
    HOST_REQUEST = 6
    HOST_RESULT = 7
    RESULT_TO_PHONE = 8


STEP_TEXT: dict[Step, str] = {
    Step.READ_CARD: "card read: user identification",
    Step.BUILD_TRANSACTION: "transaction built",
    Step.CONNECT_PHONE: "connection request with user-ID token; phone verified terminal",
    Step.PAYMENT_REQUEST: "encrypted payment request sent to phone",
    Step.USER_CONFIRMATION: "user confirms and types the PIN on the phone (or declines)",
    Step.HOST_REQUEST: "ID + transaction + confirmation to center; it verifies, posts",
    Step.HOST_RESULT: "center's result received",
    Step.RESULT_TO_PHONE: "result forwarded to phone; link disconnected",
}


class Ending(Enum):
    """How a transaction ended, with the process exit code the CLI uses for it."""

    APPROVED = 0
    DECLINED_BY_HOST = 10
    DECLINED_BY_USER = 11
    USER_TIMEOUT = 12
    NO_PHONE = 13
    PHONE_GONE = 14
    LINK_ERROR = 15
    HOST_UNAVAILABLE = 16
    CARD_ERROR = 17

    @property
    def exit_code(self) -> int:
        return self.value


@dataclass(frozen=True)
class TerminalConfig:
    terminal_id: str
    merchant_id: str
    merchant_name: str
    kind: str = "pos"
    currency: str = "978"
    poll_interval_ms: int = 200
    confirm_timeout_ms: int = 60_000
    host_timeout_ms: int = 15_000
    #: The AID the terminal SELECTs (its :class:`TerminalLink` is built with it).
    aid: bytes = AID


@dataclass(frozen=True)
class Order:
    """What the operator keyed in.  A completion names the pre-authorization it completes."""

    type: TxnType
    amount: int
    original: Transaction | None = None


# -- events in ------------------------------------------------------------------------


@dataclass(frozen=True)
class CardRead:
    card: CardData


@dataclass(frozen=True)
class CardFailed:
    reason: str


@dataclass(frozen=True)
class PhoneAnswer:
    response: bytes


@dataclass(frozen=True)
class PhoneGone:
    reason: str


@dataclass(frozen=True)
class HostAnswer:
    response: AuthResponse


@dataclass(frozen=True)
class HostSilent:
    reason: str = "no answer in time"
    #: False when the request never left (the center was unreachable): nothing to reverse.
    sent: bool = True


@dataclass(frozen=True)
class TimerFired:
    pass


Event = CardRead | CardFailed | PhoneAnswer | PhoneGone | HostAnswer | HostSilent | TimerFired

# -- actions out ----------------------------------------------------------------------


@dataclass(frozen=True)
class StepStarted:
    step: Step


@dataclass(frozen=True)
class ReadCard:
    pass


@dataclass(frozen=True)
class SendToPhone:
    exchange: Exchange


@dataclass(frozen=True)
class Wait:
    """Wait ``ms`` then report :class:`TimerFired`; ``remaining_ms`` is for the countdown."""

    ms: int
    reason: str
    remaining_ms: int


@dataclass(frozen=True)
class SendToHost:
    request: AuthRequest
    timeout_ms: int


@dataclass(frozen=True)
class QueueReversal:
    """Reverse this request at the host (store and forward until it is acknowledged)."""

    txn: Transaction


@dataclass(frozen=True)
class DisconnectPhone:
    pass


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    txn: Transaction | None
    response_code: str | None = None
    auth_code: str | None = None
    message: str = ""
    polls: int = 0

    @property
    def approved(self) -> bool:
        return self.ending is Ending.APPROVED


@dataclass(frozen=True)
class Finished:
    outcome: Outcome


Action = (
    StepStarted
    | ReadCard
    | SendToPhone
    | Wait
    | SendToHost
    | QueueReversal
    | DisconnectPhone
    | Finished
)


class Phase(Enum):
    IDLE = "idle"
    READING = "reading card"
    PHONE = "talking to phone"
    POLLING = "waiting for the user"
    HOST = "waiting for the center"
    RESULT = "sending result to phone"
    DONE = "done"


@dataclass
class _Run:
    order: Order
    now: datetime
    txn: Transaction | None = None
    request: AuthRequest | None = None
    response: AuthResponse | None = None
    polls: int = 0
    pending: Ins | None = None
    card_id: bytes = b""
    actions: list[Action] = field(default_factory=list)


class Terminal:
    """One POS or ATM: runs one transaction at a time."""

    def __init__(self, config: TerminalConfig, link: TerminalLink, next_stan: int = 1) -> None:
        self.config = config
        self.link = link
        self.next_stan = next_stan
        self.phase = Phase.IDLE
        self._run: _Run | None = None

    # -- entry points ----------------------------------------------------------------------

    def start(self, order: Order, now: datetime) -> list[Action]:
        """Begin a transaction at wall-clock ``now`` (used for field 7 only)."""
        if self.phase not in (Phase.IDLE, Phase.DONE):
            raise LocalProtocolError("a transaction is already running")
        self._run = run = _Run(order, now)
        if order.type is TxnType.COMPLETION:
            if order.original is None:
                raise LocalProtocolError("a completion needs the pre-authorization it completes")
            orig = order.original
            run.txn = self._build(order, orig.pan, orig.expiry, orig.entry_mode, orig)
            run.actions.append(StepStarted(Step.BUILD_TRANSACTION))
            self._to_host(AuthRequest(run.txn))
        else:
            self.phase = Phase.READING
            run.actions += [StepStarted(Step.READ_CARD), ReadCard()]
        return self._flush()

    def handle(self, event: Event) -> list[Action]:
        run = self._run
        if run is None or self.phase in (Phase.IDLE, Phase.DONE):
            raise LocalProtocolError(f"unexpected {type(event).__name__} while {self.phase.value}")
        try:
            self._handle(run, event)
        except SwipepayError as exc:
            self._link_failed(run, exc)
        return self._flush()

    # -- transitions -----------------------------------------------------------------------

    def _handle(self, run: _Run, event: Event) -> None:
        where: Phase | Ins = self.phase
        if self.phase in _TALKING_TO_PHONE and run.pending is not None:
            where = run.pending
        transition = TRANSITIONS.get((where, type(event)))
        if transition is None:
            raise LocalProtocolError(f"unexpected {type(event).__name__} while {self.phase.value}")
        transition(self, run, event)

    def _card_read(self, run: _Run, event: CardRead) -> None:
        card = event.card
        run.txn = self._build(run.order, card.pan, card.expiry, card.entry_mode, None)
        run.actions += [StepStarted(Step.BUILD_TRANSACTION), StepStarted(Step.CONNECT_PHONE)]
        self.phase = Phase.PHONE
        run.card_id = card.card_id
        self._send(run, self.link.select_command())

    def _card_failed(self, run: _Run, event: CardFailed) -> None:
        self._finish(Outcome(Ending.CARD_ERROR, None, message=event.reason))

    def _selected(self, run: _Run, event: PhoneAnswer) -> None:
        self.link.handle_select(event.response)
        self._send(run, self.link.connect_command(run.card_id))

    def _connected(self, run: _Run, event: PhoneAnswer) -> None:
        try:
            self.link.handle_connect(event.response)
        except PhoneNotBound:
            self._end_on_phone(
                Outcome(
                    Ending.NO_PHONE,
                    run.txn,
                    message="the phone in the field is not bound to this card",
                )
            )
            return
        self._send(run, self.link.authenticate_command())

    def _authenticated(self, run: _Run, event: PhoneAnswer) -> None:
        self.link.handle_authenticate(event.response)
        assert run.txn is not None
        run.actions.append(StepStarted(Step.PAYMENT_REQUEST))
        self._send(run, self.link.payment_request_command(run.txn))

    def _payment_requested(self, run: _Run, event: PhoneAnswer) -> None:
        self.link.handle_payment_request(event.response)
        run.actions.append(StepStarted(Step.USER_CONFIRMATION))
        self.phase = Phase.POLLING
        self._send(run, self.link.confirmation_command())

    def _poll(self, run: _Run, event: TimerFired) -> None:
        self._send(run, self.link.confirmation_command())

    def _phone_gone(self, run: _Run, event: PhoneGone) -> None:
        # Gone before it answered the SELECT: there never was a phone (NO_PHONE, not GONE).
        ending = Ending.NO_PHONE if run.pending is Ins.SELECT else Ending.PHONE_GONE
        message = f"no phone answered: {event.reason}" if ending is Ending.NO_PHONE else ""
        self._end_on_phone(
            Outcome(ending, run.txn, message=message or event.reason, polls=run.polls)
        )

    def _host_silent(self, run: _Run, event: HostSilent) -> None:
        assert run.txn is not None
        if event.sent:
            run.actions.append(QueueReversal(run.txn))
        self._end_on_phone(
            Outcome(Ending.HOST_UNAVAILABLE, run.txn, "91", message=event.reason, polls=run.polls)
        )

    def _result_delivered(self, run: _Run, event: PhoneAnswer) -> None:
        self.link.handle_result(event.response)
        assert run.response is not None
        self._finish_result(run, run.response)

    def _result_lost(self, run: _Run, event: PhoneGone) -> None:
        self._result_undelivered(run, event.reason)

    def _confirmation(self, run: _Run, event: PhoneAnswer) -> None:
        answer = self.link.handle_confirmation(event.response)
        run.polls += 1
        if answer.status is ConfirmationStatus.PENDING:
            waited = run.polls * self.config.poll_interval_ms
            remaining = self.config.confirm_timeout_ms - waited
            if remaining <= 0:
                self._end_on_phone(Outcome(Ending.USER_TIMEOUT, run.txn, polls=run.polls))
                return
            run.actions.append(
                Wait(self.config.poll_interval_ms, "user to confirm on the phone", remaining)
            )
            return
        if answer.status is not ConfirmationStatus.APPROVED:
            ending = (
                Ending.DECLINED_BY_USER
                if answer.status is ConfirmationStatus.DECLINED
                else Ending.USER_TIMEOUT
            )
            self._end_on_phone(Outcome(ending, run.txn, polls=run.polls))
            return
        assert run.txn is not None
        self._to_host(AuthRequest(run.txn, answer.pin_block, answer.ksn, answer.signature))

    def _host_answer(self, run: _Run, event: HostAnswer) -> None:
        response = event.response
        run.response = response
        run.actions.append(StepStarted(Step.HOST_RESULT))
        if run.order.type is TxnType.COMPLETION:
            self._finish_result(run, response)
            return
        run.actions.append(StepStarted(Step.RESULT_TO_PHONE))
        self.phase = Phase.RESULT
        # A balance inquiry's balance is sealed for the phone: relayed, never read here.
        sealed = response.sealed_balance if run.order.type is TxnType.BALANCE else None
        self._send(
            run, self.link.result_command(response.response_code, response.auth_code, sealed)
        )

    def _finish_result(self, run: _Run, response: AuthResponse) -> None:
        ending = Ending.APPROVED if response.approved else Ending.DECLINED_BY_HOST
        outcome = Outcome(
            ending,
            run.txn,
            response.response_code,
            response.auth_code,
            response.message,
            run.polls,
        )
        if run.order.type is TxnType.COMPLETION:
            self._finish(outcome)
        else:
            self._end_on_phone(outcome)

    def _result_undelivered(self, run: _Run, reason: str) -> None:
        response = run.response
        assert response is not None and run.txn is not None
        if response.approved:
            run.actions.append(QueueReversal(run.txn))
        self._end_on_phone(
            Outcome(
                Ending.PHONE_GONE,
                run.txn,
                response.response_code,
                response.auth_code,
                f"result not delivered ({reason}); approval reversed"
                if response.approved
                else reason,
                run.polls,
            )
        )

    def _link_failed(self, run: _Run, exc: SwipepayError) -> None:
        if self.phase is Phase.RESULT:
            self._result_undelivered(run, str(exc))
            return
        self._end_on_phone(Outcome(Ending.LINK_ERROR, run.txn, message=str(exc), polls=run.polls))

    # -- helpers -------------------------------------------------------------------------

    def _build(
        self, order: Order, pan: str, expiry: str, entry_mode: str, original: Transaction | None
    ) -> Transaction:
        stan = f"{self.next_stan % 1_000_000:06d}"
        self.next_stan = self.next_stan % 999_999 + 1
        return Transaction(
            type=order.type,
            amount=order.amount,
            pan=pan,
            expiry=expiry,
            terminal_id=self.config.terminal_id,
            merchant_id=self.config.merchant_id,
            stan=stan,
            transmitted_at=self._run_now().strftime("%m%d%H%M%S"),
            currency=self.config.currency,
            entry_mode=entry_mode,
            original_stan=original.stan if original else None,
            original_at=original.transmitted_at if original else None,
        )

    def _run_now(self) -> datetime:
        assert self._run is not None
        return self._run.now

    def _send(self, run: _Run, exchange: Exchange) -> None:
        run.pending = exchange.ins
        run.actions.append(SendToPhone(exchange))

    def _to_host(self, request: AuthRequest) -> None:
        run = self._run
        assert run is not None
        run.request = request
        run.actions.append(StepStarted(Step.HOST_REQUEST))
        run.actions.append(SendToHost(request, self.config.host_timeout_ms))
        self.phase = Phase.HOST

    def _end_on_phone(self, outcome: Outcome) -> None:
        self.link.close()
        assert self._run is not None
        self._run.actions.append(DisconnectPhone())
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        assert self._run is not None
        self._run.actions.append(Finished(outcome))
        self.phase = Phase.DONE

    def _flush(self) -> list[Action]:
        assert self._run is not None
        actions, self._run.actions = self._run.actions, []
        return actions


#: While the terminal talks to the phone, where it is in the transaction is the instruction
#: whose answer it awaits; otherwise it is the phase.
_TALKING_TO_PHONE = frozenset({Phase.PHONE, Phase.POLLING, Phase.RESULT})

#: Every transition of the terminal: (phase, or the instruction whose answer is awaited; event
#: type) -> what the terminal does.  Any other pair is a :class:`LocalProtocolError`.
TRANSITIONS: dict[tuple[Phase | Ins, type[Event]], Callable[[Terminal, _Run, Any], None]] = {
    (Phase.READING, CardRead): Terminal._card_read,
    (Phase.READING, CardFailed): Terminal._card_failed,
    (Ins.SELECT, PhoneAnswer): Terminal._selected,
    (Ins.SELECT, PhoneGone): Terminal._phone_gone,
    (Ins.CONNECT, PhoneAnswer): Terminal._connected,
    (Ins.CONNECT, PhoneGone): Terminal._phone_gone,
    (Ins.AUTHENTICATE, PhoneAnswer): Terminal._authenticated,
    (Ins.AUTHENTICATE, PhoneGone): Terminal._phone_gone,
    (Ins.PAYMENT_REQUEST, PhoneAnswer): Terminal._payment_requested,
    (Ins.PAYMENT_REQUEST, PhoneGone): Terminal._phone_gone,
    (Ins.GET_CONFIRMATION, PhoneAnswer): Terminal._confirmation,
    (Ins.GET_CONFIRMATION, TimerFired): Terminal._poll,
    (Ins.GET_CONFIRMATION, PhoneGone): Terminal._phone_gone,
    (Phase.HOST, HostAnswer): Terminal._host_answer,
    (Phase.HOST, HostSilent): Terminal._host_silent,
    (Ins.RESULT, PhoneAnswer): Terminal._result_delivered,
    (Ins.RESULT, PhoneGone): Terminal._result_lost,
}
