"""Settlement report: totals per merchant, terminal and transaction type, reversals netted.

Read from the stored messages only (approved ones, in every later state), so the report and the
ledger are two independent records of the same day; :func:`reconcile` checks they agree: for
every terminal, the net money moved by its messages equals its account's ledger balance.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

from swipepay.center.ledger import AccountKind, Ledger, Party, balance_effect
from swipepay.center.policy import MessageState
from swipepay.center.storage import Storage
from swipepay.firmware_sim.transaction import TxnType

#: States in which the money (or the hold) of a message was really moved.
_APPROVED_STATES = frozenset(
    {
        MessageState.APPROVED,
        MessageState.PARTIALLY_REVERSED,
        MessageState.REVERSED,
        MessageState.COMPLETED,
    }
)


@dataclass(frozen=True)
class ReportRow:
    merchant_id: str
    terminal_id: str
    txn_type: str
    count: int
    gross: int
    reversed: int
    net: int


def settlement(storage: Storage, day: str | None = None) -> list[ReportRow]:
    """Rows per (merchant, terminal, type); ``day`` is ``YYYY-MM-DD`` of receipt, or all."""
    with storage.transaction():
        terminals = {t.terminal_id: t for t in storage.list_terminals()}
        messages = storage.list_messages(day)
    totals: dict[tuple[str, str, str], list[int]] = {}
    for m in messages:
        if m.state not in _APPROVED_STATES:
            continue
        terminal = terminals.get(m.key.terminal_id)
        merchant = terminal.merchant_id if terminal else "?"
        t = totals.setdefault((merchant, m.key.terminal_id, m.txn_type), [0, 0, 0])
        t[0] += 1
        t[1] += m.amount
        t[2] += m.reversed_amount
    return [
        ReportRow(k[0], k[1], k[2], v[0], v[1], v[2], v[1] - v[2])
        for k, v in sorted(totals.items())
    ]


def reconcile(storage: Storage, rows: list[ReportRow]) -> dict[str, tuple[int, int]]:
    """Terminals whose report total differs from the ledger: id -> (report, ledger).

    Each row's net counts with the sign its type's posting rule gives the terminal's account
    (:func:`center.ledger.balance_effect`; 0 for types that move no money).  Only meaningful
    for a report over all days (``day=None``).
    """
    by_terminal: dict[str, list[ReportRow]] = {}
    for r in rows:
        by_terminal.setdefault(r.terminal_id, []).append(r)
    ledger = Ledger(storage)
    out: dict[str, tuple[int, int]] = {}
    with storage.transaction():
        for t in storage.list_terminals():
            kind = AccountKind(ledger.account(t.account_id).kind)
            want = sum(
                balance_effect(TxnType(r.txn_type), Party.TERMINAL, kind) * r.net
                for r in by_terminal.get(t.terminal_id, ())
            )
            balance = ledger.balance(t.account_id)
            if balance != want:
                out[t.terminal_id] = (want, balance)
    return out


_HEADER = ("merchant_id", "terminal_id", "txn_type", "count", "gross", "reversed", "net")


def as_table(rows: list[ReportRow], currency: str = "978") -> str:
    """The report for people: amounts in major units with the currency's letters, every
    column as wide as its widest cell (CSV and JSON keep minor units, for programs)."""
    from swipepay.firmware_sim.transaction import format_amount

    header = ("merchant", "terminal", "type", "count", "gross", "reversed", "net")
    cells = [
        (r.merchant_id, r.terminal_id, r.txn_type, str(r.count),
         *(format_amount(v, currency) for v in (r.gross, r.reversed, r.net)))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    left = 3  # merchant, terminal and type are text: left-aligned; the numbers right-aligned
    lines = [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in
                  enumerate(zip(row, widths, strict=True))).rstrip()
        for row in [header, *cells]
    ]  # fmt: skip
    if not rows:
        lines.append("(no approved transactions)")
    return "\n".join(lines)


def as_csv(rows: list[ReportRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_HEADER)
    for r in rows:
        w.writerow([getattr(r, h) for h in _HEADER])
    return buf.getvalue()


def as_json(rows: list[ReportRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
