"""Balance inquiry (processing code 31): PIN and phone confirmation, nothing moves."""

from __future__ import annotations

from swipepay.firmware_sim.transaction import TxnType
from tests.support.world import ACCOUNT, NOW, OPENING, PAN, POS, World

B = TxnType.BALANCE


def test_balance_inquiry_answers_the_available_balance_and_moves_nothing(world: World) -> None:
    world.center.authorize(world.signed(TxnType.PREAUTH, 30_00), NOW)
    request = world.signed(B, 0)
    r = world.center.authorize(request, NOW)
    assert r.approved and world.phone.balance(request, r) == OPENING - 30_00
    assert world.center.ledger_balance(ACCOUNT) == OPENING
    assert world.center.check_balanced()


def test_balance_inquiry_needs_the_right_pin(world: World) -> None:
    wrong = world.phone.request(world.txn(B, 0), pin="0000")
    assert world.center.authorize(wrong, NOW).response_code == "55"


def test_balance_inquiry_with_an_amount_is_13_and_on_a_pos_is_58(world: World) -> None:
    assert world.center.authorize(world.signed(B, 1_00), NOW).response_code == "13"
    on_pos = world.signed(B, 0, terminal=POS, merchant_id="MERCH0001")
    assert world.center.authorize(on_pos, NOW).response_code == "58"


def test_reversing_a_balance_inquiry_changes_nothing(world: World) -> None:
    request = world.signed(B, 0)
    world.center.authorize(request, NOW)
    t = request.txn
    r = world.center.reverse(t.terminal_id, t.stan, t.transmitted_at)
    assert r.response_code == "00" and "nothing" in r.message
    assert world.center.account_for_pan(PAN) == ACCOUNT
    assert world.center.ledger_balance(ACCOUNT) == OPENING
