"""Double-entry ledger: every money movement is a posting whose entries sum to zero.

Why double-entry: the sum over *all* accounts is zero after every posting, so a bug that creates
or destroys money shows up at once in :meth:`Ledger.check_balanced`, instead of months later in a
settlement report.

Sign convention: an entry's amount is positive for a debit and negative for a credit.  A
balance is reported on the account's *normal side* (:data:`NORMAL_SIDE`): a cardholder account
is money the bank owes the cardholder (a liability, credit-normal), so a purchase, which debits
it, makes its balance go down, as the cardholder expects.

Which accounts a transaction type debits and credits, and what it does to holds, is the table
:data:`POSTING_RULES`, not code; reversals apply the same rule with debit and credit swapped.
A posting never mixes currencies, so the ledger also balances per currency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum

from swipepay.center.storage import AccountRecord, HoldRecord, Storage
from swipepay.firmware_sim.errors import LocalError
from swipepay.firmware_sim.transaction import TxnType


class AccountKind(StrEnum):
    CARDHOLDER = "cardholder"  # a cardholder's account: the bank's liability to them
    MERCHANT = "merchant"  # a merchant's settlement account: owed to the merchant
    ATM_CASH = "atm_cash"  # the cash inside an ATM: the bank's asset
    EQUITY = "equity"  # opening balances: where initial funding comes from


class Side(IntEnum):
    """Sign of an entry on that side."""

    DEBIT = 1
    CREDIT = -1


#: The side on which each kind of account normally has its balance.
NORMAL_SIDE: dict[AccountKind, Side] = {
    AccountKind.CARDHOLDER: Side.CREDIT,
    AccountKind.MERCHANT: Side.CREDIT,
    AccountKind.ATM_CASH: Side.DEBIT,
    AccountKind.EQUITY: Side.CREDIT,
}


#: :data:`NORMAL_SIDE` keyed by the kind as stored (text) and signed as a plain int: looked up
#: for every available balance, without making an enum member from the stored text first.
_NORMAL_SIGN: dict[str, int] = {kind.value: int(side) for kind, side in NORMAL_SIDE.items()}


class Party(Enum):
    """Whose account a rule means; the caller maps each party to an account ID."""

    CARDHOLDER = "cardholder"
    TERMINAL = "terminal"  # merchant settlement account of a POS, cash account of an ATM


class HoldAction(Enum):
    NONE = "none"
    PLACE = "place"  # reserve the amount on the cardholder's account
    RELEASE = "release"  # release the referenced pre-authorization's hold entirely


@dataclass(frozen=True)
class PostingRule:
    """What one transaction type does to the ledger."""

    debit: Party | None
    credit: Party | None
    hold: HoldAction
    #: The amount must be covered by the cardholder's available balance.
    checks_funds: bool


#: Posting rules per transaction type (hardware_notes/design.md §6; the center's part of step 7).
POSTING_RULES: dict[TxnType, PostingRule] = {
    TxnType.PURCHASE: PostingRule(Party.CARDHOLDER, Party.TERMINAL, HoldAction.NONE, True),
    TxnType.WITHDRAWAL: PostingRule(Party.CARDHOLDER, Party.TERMINAL, HoldAction.NONE, True),
    TxnType.DEPOSIT: PostingRule(Party.TERMINAL, Party.CARDHOLDER, HoldAction.NONE, False),
    TxnType.PREAUTH: PostingRule(None, None, HoldAction.PLACE, True),
    # The pre-authorization's hold already guaranteed the funds; it is released in full.
    TxnType.COMPLETION: PostingRule(Party.CARDHOLDER, Party.TERMINAL, HoldAction.RELEASE, False),
    # A balance inquiry moves nothing; it only needs the PIN and the phone's confirmation.
    TxnType.BALANCE: PostingRule(None, None, HoldAction.NONE, False),
}


def balance_effect(txn_type: TxnType, party: Party, kind: AccountKind) -> int:
    """How an amount of ``txn_type`` moves the balance of ``party``'s account (an account of
    ``kind``): +1, -1, or 0 when the type posts nothing to that party (a hold, an inquiry).

    Read off :data:`POSTING_RULES` and :data:`NORMAL_SIDE`, so a report that totals amounts per
    type can be checked against the ledger without a second table of signs.
    """
    rule = POSTING_RULES[txn_type]
    if rule.debit is party:
        side = Side.DEBIT
    elif rule.credit is party:
        side = Side.CREDIT
    else:
        return 0
    return 1 if side is NORMAL_SIDE[kind] else -1


def equity_account_id(currency: str) -> str:
    """The opening-balance account of one currency (created on first use)."""
    return f"equity-{currency}"


class Ledger:
    """Postings, balances and holds on top of a :class:`Storage`.

    Every method must be called inside ``storage.transaction()``; the ledger never commits by
    itself, so a posting and the response that reports it are durable together or not at all.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    # -- accounts -----------------------------------------------------------------------------

    def open_account(
        self, account_id: str, holder: str, kind: AccountKind, currency: str, funding: int = 0
    ) -> None:
        """Create an account; ``funding`` > 0 moves that much in from the currency's equity."""
        if funding < 0:
            raise LocalError("opening balance must not be negative")
        if self._storage.get_account(account_id) is not None:
            raise LocalError(f"account {account_id} already exists")
        self._storage.insert_account(AccountRecord(account_id, holder, kind, currency))
        if funding:
            equity = self.ensure_equity(currency)
            debit, credit = (
                (equity, account_id) if NORMAL_SIDE[kind] is Side.CREDIT else (account_id, equity)
            )
            self.transfer(f"open:{account_id}", "opening balance", debit, credit, funding)

    def ensure_equity(self, currency: str) -> str:
        account_id = equity_account_id(currency)
        if self._storage.get_account(account_id) is None:
            self._storage.insert_account(
                AccountRecord(account_id, "opening balances", AccountKind.EQUITY, currency)
            )
        return account_id

    def account(self, account_id: str) -> AccountRecord:
        record = self._storage.get_account(account_id)
        if record is None:
            raise LocalError(f"unknown account {account_id}")
        return record

    # -- postings -----------------------------------------------------------------------------

    def post(self, reference: str, memo: str, entries: Sequence[tuple[str, int]]) -> None:
        """Record one posting; refuse it unless it has ≥ 2 non-zero entries summing to zero."""
        # Plain loops, not generator expressions: every approval posts once.
        if len(entries) < 2:
            raise LocalError("a posting needs at least two non-zero entries")
        total = 0
        for _, amount in entries:
            if amount == 0:
                raise LocalError("a posting needs at least two non-zero entries")
            total += amount
        if total != 0:
            raise LocalError("posting does not balance")
        currencies = set()
        for account_id, _ in entries:
            currencies.add(self.account(account_id).currency)
        if len(currencies) != 1:
            raise LocalError("a posting must not mix currencies")
        self._storage.insert_posting(reference, memo, entries)

    def transfer(self, reference: str, memo: str, debit: str, credit: str, amount: int) -> None:
        if amount <= 0:
            raise LocalError("transfer amount must be positive")
        self.post(reference, memo, [(debit, Side.DEBIT * amount), (credit, Side.CREDIT * amount)])

    def apply(
        self,
        txn_type: TxnType,
        reference: str,
        parties: Mapping[Party, str],
        amount: int,
        *,
        hold_reference: str | None = None,
    ) -> None:
        """Post ``amount`` for a transaction of ``txn_type`` following :data:`POSTING_RULES`.

        ``hold_reference`` names the hold a pre-authorization places (its own message key) or the
        one a completion releases (the pre-authorization's key).
        """
        rule = POSTING_RULES[txn_type]
        if rule.debit is not None and rule.credit is not None:
            self.transfer(
                reference, txn_type.value, parties[rule.debit], parties[rule.credit], amount
            )
        if rule.hold is HoldAction.PLACE:
            self.place_hold(_need(hold_reference), parties[Party.CARDHOLDER], amount)
        elif rule.hold is HoldAction.RELEASE:
            self.release_hold(_need(hold_reference))

    def reverse(
        self, txn_type: TxnType, reference: str, parties: Mapping[Party, str], amount: int
    ) -> None:
        """Undo ``amount`` of an applied transaction: the same rule with the sides swapped.

        A pre-authorization's hold (``reference`` is its key) shrinks by ``amount`` and is
        released once nothing is left.  Reversing a completion does not bring its hold back:
        the pre-authorization is spent.
        """
        rule = POSTING_RULES[txn_type]
        if rule.debit is not None and rule.credit is not None:
            self.transfer(
                f"reversal:{reference}",
                f"reversal of {txn_type.value}",
                parties[rule.credit],
                parties[rule.debit],
                amount,
            )
        if rule.hold is HoldAction.PLACE:
            hold = self._storage.get_hold(reference)
            if hold is not None and hold.active:
                left = max(hold.amount - amount, 0)
                self._storage.update_hold(reference, left, active=left > 0)

    # -- holds --------------------------------------------------------------------------------

    def place_hold(self, reference: str, account_id: str, amount: int) -> None:
        if amount <= 0:
            raise LocalError("hold amount must be positive")
        self._storage.insert_hold(HoldRecord(reference, account_id, amount, active=True))

    def release_hold(self, reference: str) -> None:
        hold = self.hold(reference)
        if hold is None or not hold.active:
            raise LocalError(f"no active hold {reference}")
        self._storage.update_hold(reference, hold.amount, active=False)

    def hold(self, reference: str) -> HoldRecord | None:
        return self._storage.get_hold(reference)

    # -- balances -----------------------------------------------------------------------------

    def balance(self, account_id: str) -> int:
        """Ledger balance on the account's normal side."""
        kind = AccountKind(self.account(account_id).kind)
        return NORMAL_SIDE[kind] * self._storage.entry_sum(account_id)

    def held(self, account_id: str) -> int:
        return self._storage.active_hold_sum(account_id)

    def available_change(self, txn_type: TxnType, account_id: str, amount: int) -> int | None:
        """How :meth:`apply` of ``amount`` for ``txn_type`` moves the available balance of the
        cardholder party's account ``account_id`` (read off :data:`POSTING_RULES`), or
        ``None`` when that depends on more than the amount (a released hold).

        Lets a decision that has just read the available balance for its funds check know the
        balance after its posting without reading it again inside the same transaction.
        """
        rule = POSTING_RULES[txn_type]
        if rule.hold is HoldAction.RELEASE:
            return None  # what it releases is the pre-authorization's held amount
        kind = AccountKind(self.account(account_id).kind)
        change = balance_effect(txn_type, Party.CARDHOLDER, kind) * amount
        if rule.hold is HoldAction.PLACE:
            change -= amount
        return change

    def available(self, account_id: str) -> int:
        """What the holder can still spend: ledger balance minus active holds."""
        sign = _NORMAL_SIGN[self.account(account_id).kind]
        entries, held = self._storage.balance_and_holds(account_id)
        return sign * entries - held

    def trial_balance(self) -> int:
        """Sum of all entries of all accounts (debits − credits): 0 when the books are right."""
        return self._storage.entry_sum(None)

    def check_balanced(self) -> bool:
        """True when the trial balance is 0 and every single posting balances on its own."""
        return self.trial_balance() == 0 and not self._storage.unbalanced_postings()


def _need(reference: str | None) -> str:
    if reference is None:
        raise LocalError("this transaction type needs a hold reference")
    return reference
