"""A reversal must name the amount of what it reverses (0400 field 4), else 13 and nothing moves.

``hardware_notes/iso8583.md``: field 4 of a 0400 is the original amount, field 95 what stays
posted (a partial reversal gives back field 4 - field 95).  A field 4 other than the original's
is refused with 13 and reverses nothing, whether the reversal is full or partial.
"""

from __future__ import annotations

from typing import Any

import pytest

from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.transaction import Transaction, TxnType
from tests.support.lab_center import RawClient, ServerThread, cardholder, ledger, signed
from tests.support.world import NOW, World
from tests.support.world import POS as CORE_POS

PRICE = 12_34


def _purchase(server: ServerThread, c: RawClient) -> tuple[Transaction, str]:
    alice = cardholder(server.lab, "alice-phone")
    req = signed(alice, TxnType.PURCHASE, PRICE, "000200")
    assert c.call(codec.request_fields(req))["39"] == "00"
    return req.txn, alice.account


def _stays(amount: int) -> str:
    return f"{amount:012d}".ljust(42, "0")


@pytest.mark.parametrize(
    "change",
    [
        {"4": f"{100 * PRICE:012d}"},  # full reversal claiming 100x the original
        {"4": f"{PRICE - 1:012d}"},  # full reversal of less than the original
        {"4": f"{2 * PRICE:012d}", "95": _stays(PRICE)},  # "partial": gives back all of it
        {"4": f"{PRICE + 1_00:012d}", "95": _stays(1_00)},  # partial, wrong original amount
    ],
)
def test_reversal_whose_amount_differs_from_the_original_is_13(
    server: ServerThread, change: dict[str, Any]
) -> None:
    c = RawClient(server.lab, server.port)
    try:
        txn, account = _purchase(server, c)
        answer = c.call({**codec.reversal_fields(txn), **change})
        assert (answer["t"], answer["39"]) == ("0410", "13")
        with ledger(server.lab) as center:
            assert center.ledger_balance(account) == 1_500_00 - PRICE  # nothing reversed
        # The right amount still reverses it afterwards (the refusal changed nothing).
        assert c.call(codec.reversal_fields(txn, 2_34))["44"] == "reversed 234 of 1234"
        assert c.call(codec.reversal_fields(txn))["44"] == "already reversed; nothing changed"[:25]
    finally:
        c.close()
    with ledger(server.lab) as center:
        assert center.ledger_balance(account) == 1_500_00 - PRICE + 2_34
        assert center.check_balanced()


def test_core_refuses_a_reversal_naming_another_amount(world: World) -> None:
    req = world.signed(TxnType.PURCHASE, 10_00)
    assert world.center.authorize(req, NOW).approved
    t = req.txn
    wrong = world.center.reverse(CORE_POS, t.stan, t.transmitted_at, original_amount=10_01)
    assert (wrong.response_code, wrong.message) == ("13", "reversal amount mismatch")
    ok = world.center.reverse(CORE_POS, t.stan, t.transmitted_at, 4_00, original_amount=10_00)
    assert (ok.response_code, ok.message) == ("00", "reversed 400 of 1000")
