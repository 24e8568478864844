"""Double-entry rules: balanced postings, one currency per posting, holds, the rule table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swipepay.center.database import open_storage
from swipepay.center.ledger import (
    NORMAL_SIDE,
    POSTING_RULES,
    AccountKind,
    HoldAction,
    Ledger,
    Party,
    equity_account_id,
)
from swipepay.firmware_sim.errors import LocalError
from swipepay.firmware_sim.transaction import TxnType

CARD, SHOP, CASH = "card", "shop", "cash"
PARTIES_POS = {Party.CARDHOLDER: CARD, Party.TERMINAL: SHOP}
PARTIES_ATM = {Party.CARDHOLDER: CARD, Party.TERMINAL: CASH}


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    """A ledger inside one open transaction, on each backend in turn."""
    storage = open_storage(database_url)
    with storage.transaction():
        ledger = Ledger(storage)
        ledger.open_account(CARD, "Alice", AccountKind.CARDHOLDER, "978", funding=100)
        ledger.open_account(SHOP, "Shop", AccountKind.MERCHANT, "978")
        ledger.open_account(CASH, "ATM", AccountKind.ATM_CASH, "978")
        yield ledger
    storage.close()


def test_rule_table_covers_every_type() -> None:
    assert set(POSTING_RULES) == set(TxnType)
    assert set(NORMAL_SIDE) == set(AccountKind)
    assert POSTING_RULES[TxnType.PREAUTH].debit is None
    assert POSTING_RULES[TxnType.PREAUTH].hold is HoldAction.PLACE


def test_funding_comes_from_equity(ledger: Ledger) -> None:
    assert ledger.balance(CARD) == 100
    assert ledger.balance(equity_account_id("978")) == -100
    assert ledger.trial_balance() == 0 and ledger.check_balanced()


@pytest.mark.parametrize(
    ("type_", "parties", "card", "other"),
    [
        (TxnType.PURCHASE, PARTIES_POS, 70, (SHOP, 30)),
        (TxnType.COMPLETION, PARTIES_POS, 70, (SHOP, 30)),
        (TxnType.WITHDRAWAL, PARTIES_ATM, 70, (CASH, -30)),
        (TxnType.DEPOSIT, PARTIES_ATM, 130, (CASH, 30)),
        (TxnType.PREAUTH, PARTIES_POS, 100, (SHOP, 0)),
    ],
)
def test_apply_follows_the_table_and_reverse_undoes_it(
    ledger: Ledger,
    type_: TxnType,
    parties: dict[Party, str],
    card: int,
    other: tuple[str, int],
) -> None:
    if type_ is TxnType.COMPLETION:
        ledger.place_hold("pre", CARD, 40)
    ledger.apply(type_, "ref", parties, 30, hold_reference="pre")
    assert (ledger.balance(CARD), ledger.balance(other[0])) == (card, other[1])
    assert ledger.held(CARD) == (30 if type_ is TxnType.PREAUTH else 0)
    assert ledger.check_balanced()
    ledger.reverse(type_, "pre" if type_ is TxnType.PREAUTH else "ref", parties, 30)
    assert (ledger.balance(CARD), ledger.balance(other[0]), ledger.held(CARD)) == (100, 0, 0)
    assert ledger.check_balanced()


def test_available_is_ledger_minus_active_holds(ledger: Ledger) -> None:
    ledger.place_hold("h1", CARD, 25)
    ledger.place_hold("h2", CARD, 5)
    assert (ledger.balance(CARD), ledger.available(CARD)) == (100, 70)
    ledger.release_hold("h1")
    assert ledger.available(CARD) == 95
    with pytest.raises(LocalError):
        ledger.release_hold("h1")


def test_unbalanced_or_degenerate_postings_are_refused(ledger: Ledger) -> None:
    for entries in ([(CARD, 5), (SHOP, -4)], [(CARD, 5)], [(CARD, 0), (SHOP, 0)]):
        with pytest.raises(LocalError):
            ledger.post("bad", "bad", entries)
    with pytest.raises(LocalError):
        ledger.transfer("bad", "bad", CARD, SHOP, 0)
    assert ledger.check_balanced()


def test_postings_never_mix_currencies(ledger: Ledger) -> None:
    ledger.open_account("usd", "Bob", AccountKind.CARDHOLDER, "840", funding=50)
    with pytest.raises(LocalError, match="currencies"):
        ledger.transfer("x", "x", "usd", SHOP, 10)
    assert ledger.balance(equity_account_id("840")) == -50
    assert ledger.check_balanced()
