"""Runs the terminal firmware against real or mock drivers: actions out, events back in.

This is the only place where the sans-IO :class:`~firmware_sim.terminal.Terminal` meets I/O.
It also measures what the demo and benchmarks report: time per method step, APDU count and
bytes each way on the phone link.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from swipepay.drivers.base import CardReader, Host, PhoneLink
from swipepay.firmware_sim.apdu import ResponseApdu
from swipepay.firmware_sim.errors import (
    DecodeError,
    LinkTimeout,
    NotSent,
    SwipepayError,
    TransportError,
)
from swipepay.firmware_sim.terminal import (
    CardFailed,
    CardRead,
    DisconnectPhone,
    Event,
    Finished,
    HostAnswer,
    HostSilent,
    Order,
    Outcome,
    PhoneAnswer,
    PhoneGone,
    QueueReversal,
    ReadCard,
    SendToHost,
    SendToPhone,
    Step,
    StepStarted,
    Terminal,
    TimerFired,
    Wait,
)


@dataclass(frozen=True)
class ExchangeRecord:
    ins: str
    sent: int
    received: int
    sw: int
    ms: float


@dataclass
class TxnReport:
    outcome: Outcome
    steps: list[tuple[Step, float]] = field(default_factory=list)
    exchanges: list[ExchangeRecord] = field(default_factory=list)
    total_ms: float = 0.0
    reversal: str | None = None

    @property
    def apdu_count(self) -> int:
        return len(self.exchanges)

    @property
    def bytes_to_phone(self) -> int:
        return sum(e.sent for e in self.exchanges)

    @property
    def bytes_from_phone(self) -> int:
        return sum(e.received for e in self.exchanges)


@dataclass(frozen=True)
class StepBegan:
    """The transaction entered a step of the method."""

    step: Step


@dataclass(frozen=True)
class Waiting:
    """The terminal waits for ``what``; ``remaining_s`` is the time left (None: no deadline
    known to the runner, e.g. the phone's connect timeout is the link's own)."""

    what: str
    remaining_s: float | None = None


#: What :func:`run_transaction` reports to its observer while it runs.
RunEvent = StepBegan | Waiting
Observer = Callable[[RunEvent], None]


def _quiet(event: RunEvent) -> None:
    return None


def run_transaction(
    terminal: Terminal,
    order: Order,
    *,
    reader: CardReader | None,
    link: PhoneLink | None,
    host: Host,
    now: datetime | None = None,
    card_timeout: float = 30.0,
    phone_timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
    observe: Observer | None = None,
) -> TxnReport:
    """Run one transaction to its end; never raises for anything a peer or a user did."""
    observe = observe or _quiet
    t0 = clock()
    marks: list[tuple[Step, float]] = []
    exchanges: list[ExchangeRecord] = []
    connected = False
    reversal: str | None = None
    actions = terminal.start(order, now or datetime.now(UTC))
    outcome: Outcome | None = None
    while outcome is None:
        if not actions:
            raise RuntimeError("terminal firmware stopped without finishing")  # a bug, not input
        action = actions.pop(0)
        event: Event | None = None
        match action:
            case StepStarted(step=step):
                marks.append((step, clock()))
                observe(StepBegan(step))
            case ReadCard():
                if reader is None:
                    event = CardFailed("no card reader configured")
                else:
                    try:
                        event = CardRead(reader.read_card(card_timeout))
                    except SwipepayError as exc:
                        event = CardFailed(str(exc))
            case SendToPhone(exchange=exchange):
                try:
                    if link is None:
                        raise TransportError("no phone link configured")
                    if not connected:
                        observe(Waiting("phone in the field", phone_timeout))
                        link.connect(phone_timeout)
                        connected = True
                    started = clock()
                    response = link.transmit(exchange.apdu)
                    sw = _status_word(response)
                    exchanges.append(
                        ExchangeRecord(
                            exchange.ins.name,
                            len(exchange.apdu),
                            len(response),
                            sw,
                            (clock() - started) * 1000,
                        )
                    )
                    event = PhoneAnswer(response)
                except TransportError as exc:
                    event = PhoneGone(str(exc))
            case Wait(ms=ms, reason=reason, remaining_ms=remaining):
                observe(Waiting(reason, remaining / 1000))
                sleep(ms / 1000)
                event = TimerFired()
            case SendToHost(request=request, timeout_ms=timeout_ms):
                try:
                    event = HostAnswer(host.authorize(request, timeout_ms / 1000))
                except (LinkTimeout, TransportError) as exc:
                    event = HostSilent(str(exc), sent=not isinstance(exc, NotSent))
            case QueueReversal(txn=txn):
                try:
                    reversal = host.reverse(txn).response_code
                except SwipepayError as exc:
                    reversal = f"queued ({exc})"
            case DisconnectPhone():
                if link is not None and connected:
                    link.disconnect()
                    connected = False
            case Finished(outcome=done):
                outcome = done
                if done.txn is not None:
                    # Reached the end: any reversal the firmware wanted is already sent or
                    # queued, so the write-ahead one of an approval can go.
                    host.settle(done.txn)
        if event is not None:
            actions.extend(terminal.handle(event))
    end = clock()
    steps = [
        (step, (marks[i + 1][1] if i + 1 < len(marks) else end) - at)
        for i, (step, at) in enumerate(marks)
    ]
    return TxnReport(
        outcome,
        [(s, ms * 1000) for s, ms in steps],
        exchanges,
        (end - t0) * 1000,
        reversal,
    )


def _status_word(response: bytes) -> int:
    try:
        return ResponseApdu.parse(response).sw
    except DecodeError:
        return 0
