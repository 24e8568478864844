"""The terminal firmware driven event by event, joined to a real phone applet in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.terminal import (
    CardFailed,
    CardRead,
    DisconnectPhone,
    Ending,
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
    Terminal,
    TerminalConfig,
    TimerFired,
    Wait,
)
from swipepay.firmware_sim.transaction import TxnType
from tests.support.phonelink import PAN, Pair, make_pair

NOW = datetime(2026, 11, 26, 10, 15, 0, tzinfo=UTC)
CARD = CardData(
    pan=PAN,
    expiry="2912",
    name="MARTIN/ALICE",
    service_code="201",
    track2=f"{PAN}=2912201",
    entry_mode="07",
    source="emv-contactless",
)


@dataclass
class Script:
    """What the outside world does: the user's choice, when the phone leaves, the host."""

    confirm_after_polls: int = 0
    decline: bool = False
    phone_leaves_at: str | None = None
    host: AuthResponse | None = field(default_factory=lambda: AuthResponse("00", "123456"))
    sent_to_host: list[AuthRequest] = field(default_factory=list)
    reversals: int = 0
    polls: int = 0


def drive(
    pair: Pair, order: Order, script: Script, config: TerminalConfig | None = None
) -> Outcome:
    terminal = Terminal(
        config or TerminalConfig("POS00001", "MERCH0000000001", "Corner Coffee"), pair.link
    )
    actions = terminal.start(order, NOW)
    while True:
        action = actions.pop(0)
        event = None
        if isinstance(action, ReadCard):
            event = CardRead(CARD)
        elif isinstance(action, SendToPhone):
            name = action.exchange.ins.name
            if name == script.phone_leaves_at:
                event = PhoneGone("left the field")
            else:
                if name == "GET_CONFIRMATION" and pair.applet.awaiting_user:
                    if script.polls >= script.confirm_after_polls:
                        pair.applet.decline() if script.decline else pair.applet.confirm("1234")
                    script.polls += 1
                event = PhoneAnswer(pair.send(action.exchange.apdu))
        elif isinstance(action, Wait):
            event = TimerFired()
        elif isinstance(action, SendToHost):
            script.sent_to_host.append(action.request)
            event = HostAnswer(script.host) if script.host else HostSilent()
        elif isinstance(action, QueueReversal):
            script.reversals += 1
        elif isinstance(action, Finished):
            return action.outcome
        if event is not None:
            actions.extend(terminal.handle(event))


def test_purchase_approved_with_pin_block_signature_and_result() -> None:
    pair, script = make_pair(), Script(confirm_after_polls=2)
    outcome = drive(pair, Order(TxnType.PURCHASE, 12_34), script)
    assert outcome.ending is Ending.APPROVED and outcome.auth_code == "123456"
    (request,) = script.sent_to_host
    assert request.pin_block and request.ksn and request.confirmation
    assert request.txn.pan == PAN and request.txn.amount == 12_34
    assert request.txn.transmitted_at == "1126101500"
    assert outcome.polls == 3


@pytest.mark.parametrize(
    "step", ["SELECT", "CONNECT", "AUTHENTICATE", "PAYMENT_REQUEST", "GET_CONFIRMATION"]
)
def test_phone_leaving_before_the_host_ends_without_host_message(step: str) -> None:
    script = Script(phone_leaves_at=step)
    outcome = drive(make_pair(), Order(TxnType.PURCHASE, 5_00), script)
    # no answer to the SELECT: no phone was ever there
    assert outcome.ending is (Ending.NO_PHONE if step == "SELECT" else Ending.PHONE_GONE)
    assert script.sent_to_host == [] and script.reversals == 0


def test_phone_leaving_before_result_reverses_the_approval() -> None:
    script = Script(phone_leaves_at="RESULT")
    outcome = drive(make_pair(), Order(TxnType.PURCHASE, 5_00), script)
    assert outcome.ending is Ending.PHONE_GONE and script.reversals == 1


def test_host_silent_queues_a_reversal() -> None:
    script = Script(host=None)
    outcome = drive(make_pair(), Order(TxnType.WITHDRAWAL, 20_00), script)
    assert outcome.ending is Ending.HOST_UNAVAILABLE and script.reversals == 1


def test_host_decline_is_forwarded() -> None:
    script = Script(host=AuthResponse("51"))
    outcome = drive(make_pair(), Order(TxnType.PURCHASE, 5_00), script)
    assert outcome.ending is Ending.DECLINED_BY_HOST and outcome.response_code == "51"
    assert script.reversals == 0


def test_user_declines_and_user_timeout() -> None:
    declined = drive(make_pair(), Order(TxnType.PURCHASE, 5_00), Script(decline=True))
    assert declined.ending is Ending.DECLINED_BY_USER
    config = TerminalConfig(
        "POS00001", "M", "Corner Coffee", poll_interval_ms=100, confirm_timeout_ms=500
    )
    script = Script(confirm_after_polls=100)
    timed_out = drive(make_pair(), Order(TxnType.PURCHASE, 5_00), script, config)
    assert timed_out.ending is Ending.USER_TIMEOUT and timed_out.polls == 5
    assert script.sent_to_host == []


def test_phone_bound_to_another_card() -> None:
    pair = make_pair(pan="5413330000000019")
    outcome = drive(pair, Order(TxnType.PURCHASE, 5_00), Script())
    assert outcome.ending is Ending.NO_PHONE


def test_completion_goes_straight_to_host_with_reference() -> None:
    script = Script()
    preauth = drive(make_pair(), Order(TxnType.PREAUTH, 80_00), script)
    assert preauth.txn is not None
    outcome = drive(make_pair(), Order(TxnType.COMPLETION, 64_50, preauth.txn), script)
    assert outcome.ending is Ending.APPROVED
    completion = script.sent_to_host[-1]
    assert completion.pin_block is None and completion.confirmation is None
    assert completion.txn.original_stan == preauth.txn.stan


def test_card_failure_and_events_out_of_place() -> None:
    terminal = Terminal(TerminalConfig("POS00001", "M", "N"), make_pair().link)
    terminal.start(Order(TxnType.PURCHASE, 1_00), NOW)
    actions = terminal.handle(CardFailed("swipe again"))
    assert isinstance(actions[-1], Finished) and actions[-1].outcome.ending is Ending.CARD_ERROR
    assert not any(isinstance(a, DisconnectPhone) for a in actions)
    with pytest.raises(Exception, match="unexpected"):
        terminal.handle(TimerFired())


def test_garbage_from_the_phone_ends_as_link_error() -> None:
    terminal = Terminal(TerminalConfig("POS00001", "M", "N"), make_pair().link)
    terminal.start(Order(TxnType.PURCHASE, 1_00), NOW)
    terminal.handle(CardRead(CARD))
    actions = terminal.handle(PhoneAnswer(b"\x01"))
    assert isinstance(actions[-1], Finished)
    assert actions[-1].outcome.ending is Ending.LINK_ERROR
