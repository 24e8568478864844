"""The center's authorization policy as tables: what each terminal kind may do, message states.

Kept apart from :mod:`center.core` so that the rules can be read (and reviewed by someone who is
not a programmer) without reading the control flow that applies them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from swipepay.center.ledger import AccountKind
from swipepay.firmware_sim.transaction import TxnType, is_decimal


@dataclass(frozen=True)
class TerminalKind:
    """One kind of terminal: which transaction types it may send, and what its account is."""

    allowed: frozenset[TxnType]
    account_kind: AccountKind
    account_prefix: str


#: An ATM handles cash; a POS sells goods (hardware_notes/design.md §6).  Anything else: 58.
TERMINAL_KINDS: dict[str, TerminalKind] = {
    "pos": TerminalKind(
        frozenset({TxnType.PURCHASE, TxnType.PREAUTH, TxnType.COMPLETION}),
        AccountKind.MERCHANT,
        "settlement-",
    ),
    "atm": TerminalKind(
        frozenset({TxnType.WITHDRAWAL, TxnType.DEPOSIT, TxnType.BALANCE}),
        AccountKind.ATM_CASH,
        "atm-cash-",
    ),
}


class MessageState(StrEnum):
    """Life of a stored authorization request."""

    DECLINED = "declined"
    APPROVED = "approved"
    PARTIALLY_REVERSED = "partially_reversed"
    REVERSED = "reversed"
    COMPLETED = "completed"  # a pre-authorization whose completion has been posted


#: States in which a pre-authorization can still be completed.
COMPLETABLE: frozenset[MessageState] = frozenset(
    {MessageState.APPROVED, MessageState.PARTIALLY_REVERSED}
)


@functools.lru_cache(maxsize=4096)
def parse_expiry(yymm: str) -> tuple[int, int] | None:
    """``(year, month)`` of a YYMM expiry date, or ``None`` if it is not one.

    Remembered for the last few thousand texts (a pure function of a short string): every
    decision parses the card's enrolled expiry and the presented one.
    """
    if len(yymm) != 4 or not is_decimal(yymm) or not 1 <= int(yymm[2:]) <= 12:
        return None
    return 2000 + int(yymm[:2]), int(yymm[2:])


def is_expired(yymm: str, now: datetime) -> bool:
    """A card is valid through the last day of its expiry month (ISO/IEC 7813)."""
    expiry = parse_expiry(yymm)
    if expiry is None:
        raise ValueError("expiry must be YYMM")
    return expiry < (now.year, now.month)
