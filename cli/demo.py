"""``swipepay demo``: every transaction type and the telling failures, narrated step by step."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from swipepay.firmware_sim.transaction import TXN_TYPES, Transaction, TxnType, format_amount

if TYPE_CHECKING:
    from swipepay.cli.harness.inprocess import InProcessBench


@dataclass(frozen=True)
class Scenario:
    title: str
    terminal: str
    type: TxnType
    amount: int
    card: str | None
    phone: str | None
    expect: str
    choice: str = "confirm"
    wrong_pin: bool = False
    completes: int | None = None


POS, ATM = "POS00001", "ATM00001"

#: The demo's story, as data.  ``expect`` is a response code or an ending name; ``completes``
#: is the (1-based) number of the pre-authorization a completion refers to.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("", POS, TxnType.PURCHASE, 12_34, "alice-visa?via=tap", "alice-phone", "00"),
    Scenario("", POS, TxnType.PREAUTH, 80_00, "alice-visa?via=insert", "alice-phone", "00"),
    Scenario("", POS, TxnType.COMPLETION, 64_50, None, None, "00", completes=2),
    Scenario("", ATM, TxnType.WITHDRAWAL, 20_00, "bob-debit?via=swipe", "bob-phone", "00"),
    Scenario("", ATM, TxnType.DEPOSIT, 100_00, "carol-qvsdc?via=tap", "carol-phone", "00"),
    Scenario(
        "Balance shown on the phone, not on the ATM screen",
        ATM, TxnType.BALANCE, 0, "alice-visa?via=insert", "alice-phone", "00",
    ),
    Scenario(
        "Wrong PIN typed on the phone",
        POS, TxnType.PURCHASE, 5_00, "alice-visa?via=tap", "alice-phone", "55", wrong_pin=True,
    ),
    Scenario(
        "Phone bound to another card answers 6A88",
        POS, TxnType.PURCHASE, 5_00, "alice-visa?via=tap", "bob-phone", "NO_PHONE",
    ),
    Scenario(
        "Insufficient funds",
        POS, TxnType.PURCHASE, 500_00, "bob-debit?via=insert", "bob-phone", "51",
    ),
    Scenario(
        "User declines on the phone",
        POS, TxnType.PURCHASE, 7_50, "carol-qvsdc?via=tap", "carol-phone", "DECLINED_BY_USER",
        choice="decline",
    ),
)  # fmt: skip


def run_demo(home: Path | None, as_json: bool) -> int:
    """Run the story on ``home`` (or a temporary lab); return the process exit code."""
    from swipepay.center.lab import create_lab
    from swipepay.cli.harness.inprocess import InProcessBench

    echo = _quiet if as_json else click.echo
    with tempfile.TemporaryDirectory(prefix="swipepay-demo-") as tmp:
        root = home or Path(tmp) / "lab"
        if not (root / "lab.json").exists():
            create_lab(root)
        echo(click.style(f"swipepay demo — lab {root}", bold=True))
        results: list[dict[str, Any]] = []
        done: list[Transaction | None] = []
        with InProcessBench.open(root) as bench:
            for n, sc in enumerate(SCENARIOS, 1):
                original = done[sc.completes - 1] if sc.completes else None
                result = _scenario(bench, n, sc, original, echo)
                done.append(result.pop("_txn"))
                results.append(result)
            balanced = bench.center.check_balanced()
        good = sum(r["as_expected"] for r in results)
        echo(f"\nledger balanced: {balanced}; {good}/{len(SCENARIOS)} ended as expected")
        if as_json:
            summary = {
                "lab": str(root) if home else None,
                "ledger_balanced": balanced,
                "transactions": results,
            }
            click.echo(json.dumps(summary, indent=2))
        return 0 if good == len(SCENARIOS) and balanced else 1


def _quiet(*args: object, **kwargs: object) -> None:
    return None


def _scenario(
    bench: InProcessBench, n: int, sc: Scenario, original: Transaction | None, echo: Any
) -> dict[str, Any]:
    from swipepay.cli.harness.inprocess import PhoneSetup
    from swipepay.firmware_sim.phone import Choice
    from swipepay.firmware_sim.terminal import STEP_TEXT, Order

    label = TXN_TYPES[sc.type].label
    merchant = bench.lab.terminal_config(sc.terminal).merchant_name
    amount = f" {format_amount(sc.amount)}" if TXN_TYPES[sc.type].has_amount else ""
    what = f"{label}{amount} at {merchant} ({sc.terminal})"
    echo("\n" + click.style(f"{n}. {sc.title} — {what}" if sc.title else f"{n}. {what}", bold=True))
    card = sc.card.partition("?")[0] if sc.card else None
    if sc.card:
        echo(f"   card {card} by {sc.card.partition('?via=')[2]}; phone in the field: {sc.phone}")
    else:
        ref = original.stan if original else "?"
        echo(f"   merchant-initiated, completes the pre-authorization STAN {ref}; no phone step")

    phone = PhoneSetup(sc.phone, Choice(sc.choice), sc.wrong_pin) if sc.phone else None
    report = bench.run(
        sc.terminal,
        Order(sc.type, sc.amount, original),
        card_url=f"mock:{sc.card}" if sc.card else None,
        phone=phone,
    )
    steps = [
        {"step": int(step), "name": step.name.lower(), "text": STEP_TEXT[step], "ms": round(ms, 3)}
        for step, ms in report.steps
    ]
    shown = bench.last_user.shown if bench.last_user else []
    for s in steps:
        echo(f"   [{s['step']}] {s['text']:<68} {s['ms']:7.2f} ms")
        if s["step"] == 4 and shown:
            p = shown[-1]
            spec = TXN_TYPES[TxnType(p.txn_type)]
            money = f" {format_amount(p.amount, p.currency)}" if spec.has_amount else ""
            echo(
                f"       phone shows {p.merchant_name} ({p.terminal_id}, from its certificate):"
                f" {spec.label}{money}"
                f" — user {'confirms and types the PIN' if sc.choice == 'confirm' else 'declines'}"
            )
    out = report.outcome
    by_host = out.ending.name in ("APPROVED", "DECLINED_BY_HOST")
    got = out.response_code if by_host else out.ending.name
    ok = got == sc.expect
    verdict = f"{out.ending.name} {out.response_code or ''}".strip()
    detail = f"auth {out.auth_code}" if out.auth_code else out.message
    results = bench.last_user.results if bench.last_user else []
    if results and results[-1].balance is not None:
        detail += "; balance shown on the phone"  # the terminal's line: never the figure
    echo(
        "   -> "
        + click.style(verdict, fg="green" if out.approved else "yellow", bold=True)
        + (f" ({detail})" if detail else "")
        + f"; {report.total_ms:.2f} ms; {report.apdu_count} APDUs,"
        f" {report.bytes_to_phone} B to phone / {report.bytes_from_phone} B back"
        + ("" if ok else click.style(f"  [expected {sc.expect}]", fg="red"))
    )
    return {
        "_txn": out.txn,
        "title": sc.title or label,
        "type": sc.type.value,
        "amount": sc.amount,
        "currency": out.txn.currency if out.txn else "978",
        "terminal": sc.terminal,
        "card": card,
        "phone": sc.phone,
        "ending": out.ending.name,
        "response_code": out.response_code,
        "auth_code": out.auth_code,
        "expected": sc.expect,
        "as_expected": ok,
        "steps": steps,
        "total_ms": round(report.total_ms, 3),
        "apdu_count": report.apdu_count,
        "bytes_to_phone": report.bytes_to_phone,
        "bytes_from_phone": report.bytes_from_phone,
    }
