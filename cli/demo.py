"""``swipepay demo``: every transaction type and the telling failures, narrated step by step."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from firmware_sim.transaction import TXN_TYPES, Transaction, TxnType, format_amount


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


#: The demo's story, as data.  ``expect`` is a response code or an ending name.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("Purchase", "POS00001", TxnType.PURCHASE, 12_34, "alice-visa?via=tap", "alice-phone", "00"),
    Scenario("Pre-authorization", "POS00001", TxnType.PREAUTH, 80_00, "alice-visa?via=insert", "alice-phone", "00"),
    Scenario("Pre-auth completion", "POS00001", TxnType.COMPLETION, 64_50, None, None, "00", completes=1),
    Scenario("Cash withdrawal", "ATM00001", TxnType.WITHDRAWAL, 20_00, "bob-debit?via=swipe", "bob-phone", "00"),
    Scenario("Deposit", "ATM00001", TxnType.DEPOSIT, 100_00, "carol-qvsdc?via=tap", "carol-phone", "00"),
    Scenario("Wrong PIN typed on the phone", "POS00001", TxnType.PURCHASE, 5_00, "alice-visa?via=tap", "alice-phone", "55", wrong_pin=True),
    Scenario("Phone bound to another card stays silent", "POS00001", TxnType.PURCHASE, 5_00, "alice-visa?via=tap", "bob-phone", "NO_PHONE"),
    Scenario("Insufficient funds", "POS00001", TxnType.PURCHASE, 500_00, "bob-debit?via=insert", "bob-phone", "51"),
    Scenario("User declines on the phone", "POS00001", TxnType.PURCHASE, 7_50, "carol-qvsdc?via=tap", "carol-phone", "DECLINED_BY_USER", choice="decline"),
)


def run_demo(home: Path | None, as_json: bool) -> int:
    from center.lab import create_lab
    from drivers.inprocess import InProcessBench, PhoneSetup
    from firmware_sim.phone import Choice
    from firmware_sim.terminal import STEP_TEXT, Order, Step

    with tempfile.TemporaryDirectory(prefix="swipepay-demo-") as tmp:
        root = home or Path(tmp) / "lab"
        if not (root / "lab.json").exists():
            create_lab(root)
        results: list[dict[str, Any]] = []
        done: list[Transaction | None] = []
        failures = 0
        echo = (lambda *a, **k: None) if as_json else click.echo
        echo(click.style(f"swipepay demo — lab {root}", bold=True))
        with InProcessBench.open(root) as bench:
            for n, sc in enumerate(SCENARIOS, 1):
                original = done[sc.completes - 1] if sc.completes else None
                order = Order(sc.type, sc.amount, original)
                merchant = bench.lab.terminal_config(sc.terminal).merchant_name
                head = f"{n}. {sc.title}: {TXN_TYPES[sc.type].label} {format_amount(sc.amount)} at {merchant} ({sc.terminal})"
                echo("\n" + click.style(head, bold=True))
                if sc.card:
                    card, _, via = sc.card.partition("?via=")
                    echo(f"   card {card} by {via}; phone in the field: {sc.phone}")
                else:
                    echo(f"   merchant-initiated, refers to STAN {original.stan if original else '?'}; no phone step")
                phone = (
                    PhoneSetup(sc.phone, Choice(sc.choice), sc.wrong_pin) if sc.phone else None
                )
                report = bench.run(
                    sc.terminal,
                    order,
                    card_url=f"mock:{sc.card}" if sc.card else None,
                    phone=phone,
                )
                done.append(report.outcome.txn)
                steps = [
                    {"step": int(step), "name": step.name.lower(), "text": STEP_TEXT[step], "ms": round(ms, 3)}
                    for step, ms in report.steps
                ]
                for s in steps:
                    echo(f"   [{s['step']}] {s['text']:<64} {s['ms']:8.2f} ms")
                out = report.outcome
                got = out.response_code if out.response_code and out.ending.name in ("APPROVED", "DECLINED_BY_HOST") else out.ending.name
                ok = got == sc.expect
                failures += 0 if ok else 1
                verdict = f"{out.ending.name} {out.response_code or ''}".strip()
                detail = f"auth {out.auth_code}" if out.auth_code else out.message
                echo(
                    "   -> "
                    + click.style(verdict, fg="green" if out.approved else "yellow", bold=True)
                    + (f" ({detail})" if detail else "")
                    + f"; {report.total_ms:.2f} ms; {report.apdu_count} APDUs,"
                    f" {report.bytes_to_phone} B to phone / {report.bytes_from_phone} B back"
                    + ("" if ok else click.style(f"  [expected {sc.expect}]", fg="red"))
                )
                results.append(
                    {
                        "title": sc.title,
                        "type": sc.type.value,
                        "amount": sc.amount,
                        "currency": "978",
                        "terminal": sc.terminal,
                        "card": sc.card.split("?")[0] if sc.card else None,
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
                )
            balanced = bench.center.check_balanced()
        echo(f"\nledger balanced: {balanced}; {len(SCENARIOS) - failures}/{len(SCENARIOS)} as expected")
        if as_json:
            click.echo(
                json.dumps(
                    {"lab": str(root) if home else None, "ledger_balanced": balanced, "transactions": results},
                    indent=2,
                )
            )
        return 0 if failures == 0 and balanced else 1
