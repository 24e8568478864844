"""Center.authorize / Center.reverse: approvals, every decline path, retransmission, durability."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from swipepay.center.core import AuthRequest, Center
from swipepay.center.keystore import CenterKeys
from swipepay.center.storage import CardRecord, MessageKey, SQLiteStorage
from swipepay.center.verifier import SignatureCheck
from swipepay.firmware_sim.confirmation import Decision
from swipepay.firmware_sim.dukpt import DukptDevice, derive_initial_key
from swipepay.firmware_sim.ecc import encode_point, generate_key
from swipepay.firmware_sim.errors import LocalError
from swipepay.firmware_sim.transaction import TxnType
from tests.support.world import (
    ACCOUNT,
    ATM,
    BANK,
    EXPIRY,
    MERCHANT,
    NOW,
    OPENING,
    PAN,
    PIN,
    POS,
    Phone,
    World,
)

SETTLEMENT = f"settlement-{POS}"
ATM_CASH = f"atm-cash-{ATM}"
P, W, D = TxnType.PURCHASE, TxnType.WITHDRAWAL, TxnType.DEPOSIT
PRE, COMP = TxnType.PREAUTH, TxnType.COMPLETION


def approve(w: World, req: AuthRequest) -> str:
    r = w.center.authorize(req, NOW)
    assert r.response_code == "00", r
    assert r.approved
    assert r.auth_code is not None and re.fullmatch(r"\d{6}", r.auth_code)
    return r.auth_code


def code(w: World, req: AuthRequest, now: datetime = NOW) -> str:
    return w.center.authorize(req, now).response_code


def balances(w: World) -> tuple[int, int, int, int]:
    c = w.center
    return (
        c.ledger_balance(ACCOUNT),
        c.available_balance(ACCOUNT),
        c.ledger_balance(SETTLEMENT),
        c.ledger_balance(ATM_CASH),
    )


def completion(w: World, pre: AuthRequest, amount: int) -> AuthRequest:
    txn = w.txn(COMP, amount, original_stan=pre.txn.stan, original_at=pre.txn.transmitted_at)
    return AuthRequest(txn)


# -- approvals ----------------------------------------------------------------------------------


def test_fixture_starts_funded_and_balanced(world: World) -> None:
    assert balances(world) == (OPENING, OPENING, 0, 0)
    assert world.center.check_balanced()
    assert world.center.account_for_pan(PAN) == ACCOUNT


def test_purchase_moves_money_from_cardholder_to_merchant(world: World) -> None:
    r = world.center.authorize(world.signed(P, 25_00), NOW)
    assert r.approved and r.sealed_balance is None  # no balance to the terminal, not even sealed
    assert balances(world) == (OPENING - 25_00, OPENING - 25_00, 25_00, 0)
    assert world.center.check_balanced()


def test_withdrawal_moves_money_from_cardholder_to_atm_cash(world: World) -> None:
    approve(world, world.signed(W, 40_00))
    assert balances(world) == (OPENING - 40_00, OPENING - 40_00, 0, -40_00)
    assert world.center.check_balanced()


def test_deposit_credits_cardholder_from_atm_cash(world: World) -> None:
    approve(world, world.signed(D, 15_00))
    assert balances(world) == (OPENING + 15_00, OPENING + 15_00, 0, 15_00)
    assert world.center.check_balanced()


def test_preauth_holds_without_posting(world: World) -> None:
    approve(world, world.signed(PRE, 30_00))
    assert balances(world) == (OPENING, OPENING - 30_00, 0, 0)
    assert world.center.check_balanced()


def test_completion_posts_amount_and_releases_whole_hold(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    approve(world, completion(world, pre, 25_00))
    assert balances(world) == (OPENING - 25_00, OPENING - 25_00, 25_00, 0)
    assert world.center.check_balanced()


def test_completion_of_full_hold_amount_is_allowed(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    approve(world, completion(world, pre, 30_00))
    assert balances(world)[:2] == (OPENING - 30_00, OPENING - 30_00)


def test_recorded_balance_after_each_approval_is_the_ledgers(world: World) -> None:
    """The balance a decision records with its answer is the ledger's available balance after
    its posting, for every type (some are worked out from the funds check's read)."""
    pre: AuthRequest | None = None
    for type_, amount in ((P, 25_00), (W, 10_00), (D, 5_00), (PRE, 30_00), (COMP, 20_00)):
        if type_ is COMP:
            assert pre is not None
            req = completion(world, pre, amount)
        else:
            req = world.signed(type_, amount)
        pre = req if type_ is PRE else pre
        approve(world, req)
        key = MessageKey(req.txn.terminal_id, req.txn.stan, req.txn.transmitted_at)
        with world.center._storage.transaction():
            stored = world.center._storage.get_message(key)
        assert stored is not None
        assert stored.available_balance == world.center.available_balance(ACCOUNT), type_


# -- declines before the phone checks --------------------------------------------------------


def test_unknown_terminal_is_58(world: World) -> None:
    assert code(world, world.signed(P, 1_00, terminal="NOSUCH01")) == "58"


def test_terminal_of_other_merchant_is_58(world: World) -> None:
    assert code(world, world.signed(P, 1_00, merchant_id="OTHER")) == "58"


@pytest.mark.parametrize(
    ("type_", "terminal", "merchant"),
    [(W, POS, MERCHANT), (D, POS, MERCHANT), (P, ATM, BANK), (PRE, ATM, BANK), (COMP, ATM, BANK)],
)
def test_type_not_allowed_on_terminal_kind_is_58(
    world: World, type_: TxnType, terminal: str, merchant: str
) -> None:
    req = world.signed(type_, 1_00, terminal=terminal, merchant_id=merchant)
    assert code(world, req) == "58"
    assert balances(world) == (OPENING, OPENING, 0, 0)


def test_unknown_card_is_14(world: World) -> None:
    assert code(world, world.signed(P, 1_00, pan="4000000000000002")) == "14"


def test_malformed_presented_expiry_is_14(world: World) -> None:
    assert code(world, world.signed(P, 1_00, expiry="2713")) == "14"


def test_expired_card_is_54(world: World) -> None:
    after_expiry = datetime(2028, 1, 1, tzinfo=UTC)
    assert code(world, world.signed(P, 1_00), after_expiry) == "54"
    # the expiry month itself is still valid
    assert code(world, world.signed(P, 1_00), datetime(2027, 12, 31, tzinfo=UTC)) == "00"


def test_presented_expiry_in_the_past_is_54(world: World) -> None:
    assert code(world, world.signed(P, 1_00, expiry="2501")) == "54"


def test_zero_amount_is_13(world: World) -> None:
    assert code(world, world.signed(P, 0)) == "13"


def test_foreign_currency_is_12(world: World) -> None:
    assert code(world, world.signed(P, 1_00, currency="840")) == "12"


@pytest.mark.parametrize("missing", ["pin_block", "ksn", "confirmation"])
def test_missing_phone_data_is_30(world: World, missing: str) -> None:
    changes: dict[str, Any] = {missing: None}
    req = replace(world.signed(P, 1_00), **changes)
    assert code(world, req) == "30"


def test_malformed_ksn_is_30(world: World) -> None:
    req = world.signed(P, 1_00)
    assert req.ksn is not None
    assert code(world, replace(req, ksn=req.ksn[:-1])) == "30"


# -- security: KSN, confirmation, PIN --------------------------------------------------------


def test_ksn_of_another_device_is_63(world: World) -> None:
    other_ikid = world.keys.bdk_id + bytes.fromhex("00000002")
    other = Phone(
        world.phone.key,
        DukptDevice(derive_initial_key(world.keys.bdk, other_ikid), other_ikid),
    )
    assert code(world, other.request(world.txn(P, 1_00))) == "63"


def test_replayed_ksn_counter_is_63(world: World) -> None:
    approve(world, world.signed(P, 1_00))
    # A device rewound to counter 0 re-issues counter 1: properly signed, but a replay.
    ikid = world.phone.device.ikid
    rewound = Phone(world.phone.key, DukptDevice(derive_initial_key(world.keys.bdk, ikid), ikid))
    r = world.center.authorize(rewound.request(world.txn(P, 1_00)), NOW)
    assert (r.response_code, r.message) == ("63", "KSN counter replayed")
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 1_00


def test_declined_confirmation_spends_its_ksn(world: World) -> None:
    """A confirmation that got 51 cannot be replayed later when funds are there."""
    req = world.signed(P, OPENING + 1)
    assert code(world, req) == "51"
    approve(world, world.signed(D, 10_00))
    assert code(world, replace(req, txn=replace(req.txn, stan="999999"))) == "63"


def test_tampered_amount_is_63_and_moves_nothing(world: World) -> None:
    req = world.phone.request(world.txn(P, 90_00), signed_amount=9_00)
    assert code(world, req) == "63"
    assert balances(world) == (OPENING, OPENING, 0, 0)
    # a failed signature does not spend the KSN counter: the honest next request goes through
    approve(world, world.signed(P, 9_00))


def test_signature_on_other_stan_is_63(world: World) -> None:
    req = world.signed(P, 5_00)
    assert code(world, replace(req, txn=replace(req.txn, stan="777777"))) == "63"


def test_user_declined_confirmation_is_63(world: World) -> None:
    req = world.phone.request(world.txn(P, 5_00), decision=Decision.DECLINED)
    assert code(world, req) == "63"


def test_a_check_done_ahead_counts_only_for_exactly_this_check(world: World) -> None:
    """A signature verified elsewhere (the server's verifier process) is bound to what was
    verified: the key, the digest and the signature.  For anything else it is ignored and the
    signature checked again here."""
    approve(world, world.signed(P, 1_00))  # the card's phone key is now known

    def forged() -> tuple[AuthRequest, SignatureCheck]:
        req = world.phone.request(world.txn(P, 90_00), signed_amount=9_00)
        item = world.center.signature_check(req)
        assert item is not None
        return req, item

    honest = world.signed(P, 1_00)
    honest_item = world.center.signature_check(honest)
    assert honest_item is not None
    # "verifies" for another key, or for another request's digest: ignored -> checked -> 63
    req, item = forged()
    other_key = replace(item, phone_key=encode_point(generate_key().public_key()))
    assert world.center.authorize(req, NOW, (other_key, True)).response_code == "63"
    req, _ = forged()
    assert world.center.authorize(req, NOW, (honest_item, True)).response_code == "63"
    # for exactly this check, the result is what counts, either way
    req, item = forged()
    assert world.center.authorize(req, NOW, (item, True)).response_code == "00"
    assert world.center.authorize(honest, NOW, (honest_item, False)).response_code == "63"


def test_signature_check_ahead_needs_the_cards_key_seen_once(world: World) -> None:
    first = world.signed(P, 1_00)
    assert world.center.signature_check(first) is None  # key not known before a decision
    approve(world, first)
    item = world.center.signature_check(world.signed(P, 1_00))
    assert item is not None and item.phone_key == encode_point(world.phone.key.public_key())
    assert world.center.signature_check(world.signed(TxnType.COMPLETION, 1_00)) is None


def test_checks_described_ahead_are_let_go_by_each_decision(world: World) -> None:
    """signature_check keeps what it described until the request's decision (which reuses the
    digest): approved, retransmitted or declined before the phone check, nothing stays."""
    approve(world, world.signed(P, 1_00))
    req = world.signed(P, 1_00)
    item = world.center.signature_check(req)
    assert item is not None
    assert world.center.authorize(req, NOW, (item, True)).response_code == "00"
    assert world.center.signature_check(req) == item  # a retransmission of it
    assert world.center.authorize(req, NOW, (item, True)).response_code == "00"
    other = world.signed(P, 1_00)
    assert world.center.signature_check(other) is not None
    assert world.center.authorize(other, NOW).response_code == "00"  # verified inline
    assert world.center._described == {}


def test_garbage_pin_block_is_63(world: World) -> None:
    req = world.phone.request(world.txn(P, 5_00), pin_block=bytes(range(16)))
    assert code(world, req) == "63"


def test_wrong_pin_is_55_and_correct_pin_resets_the_counter(world: World) -> None:
    wrong = "1111"
    for _ in range(2):
        assert code(world, world.phone.request(world.txn(P, 1_00), pin=wrong)) == "55"
    approve(world, world.signed(P, 1_00))  # resets the counter
    for _ in range(2):
        assert code(world, world.phone.request(world.txn(P, 1_00), pin=wrong)) == "55"
    approve(world, world.signed(P, 1_00))
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 2_00


def test_third_wrong_pin_blocks_every_later_try_with_75(world: World) -> None:
    codes = [code(world, world.phone.request(world.txn(P, 1_00), pin="0000")) for _ in range(3)]
    assert codes == ["55", "55", "55"]
    assert code(world, world.signed(P, 1_00)) == "75"  # even the right PIN
    assert code(world, world.phone.request(world.txn(P, 1_00), pin="0000")) == "75"
    # blocked is answered before the PIN block is even looked at
    assert code(world, world.phone.request(world.txn(P, 1_00), pin_block=bytes(16))) == "75"
    assert world.center.ledger_balance(ACCOUNT) == OPENING


def test_insufficient_funds_is_51_without_the_balance(world: World) -> None:
    r = world.center.authorize(world.signed(P, OPENING + 1), NOW)
    assert (r.response_code, r.sealed_balance, r.auth_code) == ("51", None, None)
    assert code(world, world.signed(W, OPENING + 1)) == "51"
    assert code(world, world.signed(PRE, OPENING + 1)) == "51"
    assert balances(world) == (OPENING, OPENING, 0, 0)


def test_holds_count_against_available_balance(world: World) -> None:
    approve(world, world.signed(PRE, 80_00))
    assert code(world, world.signed(P, 30_00)) == "51"
    approve(world, world.signed(P, 20_00))
    assert world.center.available_balance(ACCOUNT) == 0


# -- completion ------------------------------------------------------------------------------


def test_completion_above_hold_is_13(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    assert code(world, completion(world, pre, 30_01)) == "13"
    assert balances(world) == (OPENING, OPENING - 30_00, 0, 0)


def test_completion_without_open_preauth_is_12(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    assert code(world, completion(world, pre, 10_00)) == "12"  # never sent
    declined = world.signed(PRE, OPENING + 1)
    assert code(world, declined) == "51"
    assert code(world, completion(world, declined, 10_00)) == "12"  # declined
    purchase = world.signed(P, 10_00)
    approve(world, purchase)
    assert code(world, completion(world, purchase, 10_00)) == "12"  # not a pre-auth
    assert code(world, AuthRequest(world.txn(COMP, 10_00))) == "12"  # no reference


def test_second_completion_is_12(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    approve(world, completion(world, pre, 10_00))
    assert code(world, completion(world, pre, 10_00)) == "12"
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 10_00


def test_completion_of_another_cards_preauth_is_12(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    world.center.open_account("ACC-BOB", "Bob", 10_00)
    other_pan = "5500000000000004"
    world.center.enroll(
        pan=other_pan,
        expiry=EXPIRY,
        account_id="ACC-BOB",
        phone_key=encode_point(generate_key().public_key()),
        ikid=world.keys.bdk_id + bytes.fromhex("00000009"),
        pin="1234",
    )
    req = completion(world, pre, 10_00)
    assert code(world, replace(req, txn=replace(req.txn, pan=other_pan))) == "12"


# -- retransmission --------------------------------------------------------------------------


def test_retransmission_returns_stored_response_and_moves_nothing(world: World) -> None:
    req = world.signed(P, 10_00)
    first = world.center.authorize(req, NOW)
    again = world.center.authorize(req, NOW)
    assert first.approved and again == first
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 10_00


def test_retransmitted_decline_gets_the_same_decline(world: World) -> None:
    req = world.signed(P, OPENING + 1)
    first = world.center.authorize(req, NOW)
    approve(world, world.signed(D, 50_00))
    assert world.center.authorize(req, NOW) == first
    assert first.response_code == "51"


def test_same_key_different_content_is_94(world: World) -> None:
    req = world.signed(P, 10_00)
    approve(world, req)
    other = world.phone.request(replace(req.txn, amount=20_00))
    r = world.center.authorize(other, NOW)
    assert r.response_code == "94"
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 10_00
    assert world.center.authorize(req, NOW).approved  # the original is still answered


def test_a_message_stored_by_an_earlier_build_is_still_recognised(world: World) -> None:
    """Earlier builds stored the hash of the decoded fields (``fields_hash``), this one the hash
    of the bytes (``wire_hash``): a retransmission that arrives after the upgrade matches the
    earlier form and gets the stored answer; another message under the same key still gets 94."""
    from swipepay.center.core import fields_hash, wire_hash
    from swipepay.firmware_sim.hostlink import iso8583 as codec

    def wire(req: AuthRequest) -> tuple[bytes, dict[str, Any]]:
        body = codec.encode(codec.request_fields(req))
        return body, codec.decode(body)

    req = world.signed(P, 10_00)
    body, fields = wire(req)
    first = world.center.authorize(req, NOW, content_hash=fields_hash(fields))  # before
    assert first.approved
    asked: list[bool] = []

    def earlier(of: dict[str, Any]) -> Callable[[], bytes]:
        def hash_() -> bytes:
            asked.append(True)
            return fields_hash(of)

        return hash_

    again = world.center.authorize(req, NOW, content_hash=wire_hash(body),
                                   earlier_hash=earlier(fields))  # fmt: skip
    assert again == first and asked == [True]
    other = world.phone.request(replace(req.txn, amount=20_00))
    other_body, other_fields = wire(other)
    r = world.center.authorize(other, NOW, content_hash=wire_hash(other_body),
                               earlier_hash=earlier(other_fields))  # fmt: skip
    assert r.response_code == "94"
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 10_00
    # A message this build stored matches at once: the earlier form is not even computed.
    asked.clear()
    new = world.signed(P, 5_00)
    new_body, new_fields = wire(new)
    decided = world.center.authorize(new, NOW, content_hash=wire_hash(new_body))
    assert world.center.authorize(new, NOW, content_hash=wire_hash(new_body),
                                  earlier_hash=earlier(new_fields)) == decided  # fmt: skip
    assert asked == []


# -- reversal --------------------------------------------------------------------------------


def test_full_reversal_restores_balances(world: World) -> None:
    req = world.signed(P, 10_00)
    approve(world, req)
    r = world.center.reverse(POS, req.txn.stan, req.txn.transmitted_at)
    assert (r.response_code, r.message) == ("00", "reversed 1000 of 1000")
    assert r.sealed_balance is None
    assert balances(world) == (OPENING, OPENING, 0, 0)
    assert world.center.check_balanced()


def test_partial_reversal_leaves_the_rest(world: World) -> None:
    req = world.signed(W, 50_00)
    approve(world, req)
    r = world.center.reverse(ATM, req.txn.stan, req.txn.transmitted_at, amount=20_00)
    assert r.message == "reversed 2000 of 5000"
    assert balances(world) == (OPENING - 30_00, OPENING - 30_00, 0, -30_00)
    assert world.center.check_balanced()


def test_double_reversal_changes_nothing(world: World) -> None:
    req = world.signed(P, 10_00)
    approve(world, req)
    world.center.reverse(POS, req.txn.stan, req.txn.transmitted_at, amount=4_00)
    r = world.center.reverse(POS, req.txn.stan, req.txn.transmitted_at, amount=4_00)
    assert (r.response_code, r.message) == ("00", "already reversed; nothing changed")
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 6_00


def test_reversal_of_unknown_transaction_is_acknowledged(world: World) -> None:
    r = world.center.reverse(POS, "123456", "0615120000")
    assert (r.response_code, r.message) == ("00", "unknown transaction; nothing to reverse")
    assert balances(world) == (OPENING, OPENING, 0, 0)


def test_an_original_arriving_after_its_reversal_is_refused(world: World) -> None:
    """The terminal gave up on a request and reversed it before the request itself reached
    the center (it was still in another worker's batch, or late in the network): the reversal
    is acknowledged, and the original, when it comes, is refused and moves nothing."""
    req = world.signed(P, 7_00)
    t = req.txn
    r = world.center.reverse(t.terminal_id, t.stan, t.transmitted_at, original_amount=7_00)
    assert (r.response_code, r.message) == ("00", "unknown transaction; nothing to reverse")
    late = world.center.authorize(req, NOW)
    assert late.response_code == "94" and late.auth_code is None
    assert "before it arrived" in late.message
    assert world.center.authorize(req, NOW) == late  # and again, if it is retransmitted
    again = world.center.reverse(t.terminal_id, t.stan, t.transmitted_at, original_amount=7_00)
    assert again == r
    assert balances(world) == (OPENING, OPENING, 0, 0)
    assert world.center.check_balanced()


def test_the_record_of_a_reversal_without_original_is_not_in_the_report(world: World) -> None:
    from swipepay.center.database import open_storage
    from swipepay.center.report import reconcile, settlement

    world.center.reverse(POS, "123457", "0615120000")
    assert code(world, world.signed(P, 3_00)) == "00"
    storage = open_storage(world.db_path)
    try:
        rows = settlement(storage)
        assert [(r.txn_type, r.count, r.net) for r in rows] == [("purchase", 1, 3_00)]
        assert not reconcile(storage, rows)
    finally:
        storage.close()


def test_reversal_of_declined_transaction_changes_nothing(world: World) -> None:
    req = world.signed(P, OPENING + 1)
    assert code(world, req) == "51"
    r = world.center.reverse(POS, req.txn.stan, req.txn.transmitted_at)
    assert (r.response_code, r.message) == ("00", "declined transaction; nothing to reverse")
    assert balances(world) == (OPENING, OPENING, 0, 0)


def test_reversal_amount_out_of_range_is_13(world: World) -> None:
    req = world.signed(P, 10_00)
    approve(world, req)
    for amount in (0, -1, 10_01):
        r = world.center.reverse(POS, req.txn.stan, req.txn.transmitted_at, amount=amount)
        assert r.response_code == "13"
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 10_00


def test_deposit_reversal_takes_the_credit_back(world: World) -> None:
    req = world.signed(D, 10_00)
    approve(world, req)
    world.center.reverse(ATM, req.txn.stan, req.txn.transmitted_at)
    assert balances(world) == (OPENING, OPENING, 0, 0)


def test_reversing_a_spent_deposit_takes_the_account_below_zero(world: World) -> None:
    """A reversal is not declined for funds (hardware_notes/iso8583.md): the deposit did not
    happen, so money withdrawn on the strength of it becomes the cardholder's debt."""
    deposit = world.signed(D, 10_00)
    approve(world, deposit)
    approve(world, world.signed(W, OPENING + 10_00))  # everything, the deposit included
    assert code(world, world.signed(W, 1)) == "51"
    r = world.center.reverse(ATM, deposit.txn.stan, deposit.txn.transmitted_at)
    assert r.approved
    assert world.center.available_balance(ACCOUNT) == -10_00
    assert world.center.check_balanced()


def test_preauth_reversal_releases_the_hold(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    assert world.center.reverse(POS, pre.txn.stan, pre.txn.transmitted_at).approved
    assert balances(world) == (OPENING, OPENING, 0, 0)
    assert code(world, completion(world, pre, 1_00)) == "12"


def test_partial_preauth_reversal_shrinks_the_hold(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    world.center.reverse(POS, pre.txn.stan, pre.txn.transmitted_at, amount=10_00)
    assert world.center.available_balance(ACCOUNT) == OPENING - 20_00
    assert code(world, completion(world, pre, 20_01)) == "13"
    approve(world, completion(world, pre, 20_00))
    assert balances(world)[:3] == (OPENING - 20_00, OPENING - 20_00, 20_00)


def test_completed_preauth_cannot_be_reversed(world: World) -> None:
    pre = world.signed(PRE, 30_00)
    approve(world, pre)
    comp = completion(world, pre, 10_00)
    approve(world, comp)
    assert world.center.reverse(POS, pre.txn.stan, pre.txn.transmitted_at).response_code == "12"
    # the completion itself can be reversed; the hold does not come back
    assert world.center.reverse(POS, comp.txn.stan, comp.txn.transmitted_at).approved
    assert balances(world) == (OPENING, OPENING, 0, 0)


# -- atomicity, group commit, durability -----------------------------------------------------


def test_internal_error_is_96_with_nothing_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = world.signed(P, 10_00)
    storage = world.center._storage

    def broken(*args: object) -> None:
        raise RuntimeError("disk on fire")

    # Fails after the KSN counter, the posting and the hold have been written.
    monkeypatch.setattr(storage, "insert_message", broken)
    r = world.center.authorize(req, NOW)
    assert (r.response_code, r.auth_code) == ("96", None)
    monkeypatch.undo()
    assert balances(world) == (OPENING, OPENING, 0, 0)
    assert world.center.check_balanced()
    # nothing stored and the KSN not spent: the terminal's retry is decided afresh
    approve(world, req)


def test_batch_commits_several_requests_and_isolates_failures(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok1, bad, ok2 = world.signed(P, 1_00), world.signed(P, 2_00), world.signed(P, 4_00)
    ledger = world.center._ledger
    real_apply = ledger.apply

    def apply_failing_for_bad(*args: object, **kw: object) -> None:
        if args[1] == str(MessageKey(POS, bad.txn.stan, bad.txn.transmitted_at)):
            raise RuntimeError("boom")
        real_apply(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger, "apply", apply_failing_for_bad)
    with world.center.batch():
        codes = [code(world, req) for req in (ok1, bad, ok2)]
    assert codes == ["00", "96", "00"]
    world.reopen()
    assert world.center.ledger_balance(ACCOUNT) == OPENING - 5_00
    assert world.center.check_balanced()


def test_everything_survives_close_and_reopen(world: World) -> None:
    purchase = world.signed(P, 10_00)
    first = world.center.authorize(purchase, NOW)
    approve(world, world.signed(PRE, 20_00))
    assert code(world, world.phone.request(world.txn(P, 1_00), pin="0000")) == "55"
    world.reopen()
    assert balances(world) == (OPENING - 10_00, OPENING - 30_00, 10_00, 0)
    assert world.center.check_balanced()
    assert world.center.authorize(purchase, NOW) == first  # stored response
    # KSN counter persisted: a rewound device is still a replay
    ikid = world.phone.device.ikid
    rewound = Phone(world.phone.key, DukptDevice(derive_initial_key(world.keys.bdk, ikid), ikid))
    assert code(world, rewound.request(world.txn(P, 1_00))) == "63"
    # try counter persisted: two more wrong PINs (not three) block the card
    for _ in range(2):
        assert code(world, world.phone.request(world.txn(P, 1_00), pin="0000")) == "55"
    assert code(world, world.signed(P, 1_00)) == "75"


def test_database_uses_wal_and_full_sync(world: World) -> None:
    db = world.center._storage
    assert isinstance(db, SQLiteStorage)
    assert db._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


# -- secrets ---------------------------------------------------------------------------------


def test_pin_never_reaches_the_database_or_a_repr(world: World, db_path: Path) -> None:
    req = world.signed(P, 10_00)
    approve(world, req)
    assert code(world, world.phone.request(world.txn(P, 1_00), pin="0000")) == "55"
    card = world.center._storage.get_card(PAN)
    reprs = [repr(req), repr(card), repr(world.keys), repr(world.phone), repr(world.center)]
    world.center.close()
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert files
    for path in files:
        assert PIN.encode() not in path.read_bytes(), path
    for text in reprs:
        assert PIN not in text
        assert world.keys.bdk.hex() not in text.lower()
        assert world.keys.pvk.hex() not in text.lower()
    world.center = Center.open(db_path, world.keys)  # for the fixture's teardown


# -- administration --------------------------------------------------------------------------


def test_enroll_refuses_bad_data(world: World) -> None:
    world.center.open_account("ACC-BOB", "Bob", 0)
    good = {
        "pan": "5500000000000004",
        "expiry": "2712",
        "account_id": "ACC-BOB",
        "phone_key": encode_point(generate_key().public_key()),
        "ikid": world.keys.bdk_id + bytes(4),
        "pin": "1234",
    }
    bad_values: dict[str, object] = {
        "pan": "55",
        "expiry": "2713",
        "account_id": SETTLEMENT,
        "phone_key": bytes(33),
        "ikid": bytes(8),
        "pin": "12",
    }
    for field_name, bad in bad_values.items():
        with pytest.raises(LocalError) as info:
            world.center.enroll(**{**good, field_name: bad})  # type: ignore[arg-type]
        assert "1234" not in str(info.value)
    world.center.enroll(**good)  # type: ignore[arg-type]
    with pytest.raises(LocalError):
        world.center.enroll(**good)  # type: ignore[arg-type]


def test_admin_refuses_duplicates_and_unknown_kinds(world: World) -> None:
    with pytest.raises(LocalError):
        world.center.open_account(ACCOUNT, "Alice again", 1)
    with pytest.raises(LocalError):
        world.center.register_terminal(POS, MERCHANT, "again", "pos")
    with pytest.raises(LocalError):
        world.center.register_terminal("KIOSK001", MERCHANT, "kiosk", "kiosk")
    with pytest.raises(LocalError):
        world.center.account_for_pan("4000000000000002")


def test_center_is_a_context_manager(tmp_path: Path) -> None:
    keys = CenterKeys.generate()
    with Center.open(tmp_path / "c.db", keys) as center:
        center.open_account("A", "holder", 5)
    with Center.open(tmp_path / "c.db", keys) as center:
        assert center.ledger_balance("A") == 5


def test_remembered_phone_keys_are_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import swipepay.center.core

    monkeypatch.setattr(swipepay.center.core, "PHONE_KEYS_REMEMBERED", 2)

    def record(pan: str) -> CardRecord:
        return CardRecord(pan, EXPIRY, ACCOUNT, b"\x02" + bytes(32), bytes(8), 0, bytes(32))

    for pan in ("1111", "2222", "3333"):
        world.center._remember_phone_key(record(pan))
    assert list(world.center._phone_keys) == ["2222", "3333"]  # the oldest went
    world.center._remember_phone_key(record("3333"))  # already known: nothing dropped
    assert list(world.center._phone_keys) == ["2222", "3333"]


def test_authorization_codes_are_six_digits_drawn_without_bias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each code is a 3-byte draw below 16,000,000 taken modulo 10**6; a draw at or above it
    is thrown away (else codes below 777216 would come more often), and the pool is read again
    from the OS when it runs out."""
    import swipepay.center.core as core

    reads: list[int] = []
    draws = iter([
        # 1; 16,000,000 and 16,777,215 (thrown away); 15,999,999
        bytes.fromhex("000001" "F42400" "FFFFFF" "F423FF"),
        bytes.fromhex("0F4240" "000000"),  # 1,000,000 -> 000000
    ])  # fmt: skip

    def urandom(n: int) -> bytes:
        reads.append(n)
        return next(draws)

    monkeypatch.setattr(core.os, "urandom", urandom)
    codes = core.AuthCodes()
    assert [codes.next() for _ in range(4)] == ["000001", "999999", "000000", "000000"]
    assert len(reads) == 2


def test_approvals_carry_fresh_authorization_codes(world: World) -> None:
    codes = {approve(world, world.signed(P, 1_00)) for _ in range(20)}
    assert len(codes) >= 18  # 20 draws from 10**6: two pairs colliding is ~2e-8
