"""Settlement report: totals per merchant/terminal/type, reversals netted, reconciled."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from click.testing import CliRunner

from swipepay.center import report
from swipepay.center.lab import Lab
from swipepay.center.storage import SQLiteStorage
from swipepay.cli.main import main
from swipepay.firmware_sim.hostmsg import AuthRequest
from swipepay.firmware_sim.transaction import TxnType
from tests.support.lab_center import ATM, BANK, MERCHANT, POS, cardholder, ledger, signed, txn

NOW = datetime.now(UTC)


def _load(lab: Lab) -> None:
    alice = cardholder(lab, "alice-phone")
    bob = cardholder(lab, "bob-phone")
    with ledger(lab) as c:
        assert c.authorize(signed(alice, TxnType.PURCHASE, 10_00, "000001"), NOW).approved
        assert c.authorize(signed(alice, TxnType.PURCHASE, 5_00, "000002"), NOW).approved
        assert (
            c.authorize(signed(bob, TxnType.PURCHASE, 99_00, "000003"), NOW).response_code == "51"
        )
        pre = signed(alice, TxnType.PREAUTH, 30_00, "000004")
        assert c.authorize(pre, NOW).approved
        comp = txn(
            alice,
            TxnType.COMPLETION,
            25_00,
            "000005",
            original_stan="000004",
            original_at=pre.txn.transmitted_at,
        )
        assert c.authorize(AuthRequest(comp), NOW).approved
        assert c.authorize(signed(alice, TxnType.WITHDRAWAL, 20_00, "000006"), NOW).approved
        assert c.authorize(signed(alice, TxnType.DEPOSIT, 50_00, "000007"), NOW).approved
        inquiry = c.authorize(signed(alice, TxnType.BALANCE, 0, "000008"), NOW)
        assert inquiry.approved and inquiry.sealed_balance is not None
        assert c.reverse(POS, "000002", "1126120000").approved  # full
        assert c.reverse(ATM, "000007", "1126120000", 20_00).approved  # partial
        assert c.reverse(ATM, "000008", "1126120000").approved  # an inquiry: nothing moves


def test_totals_net_reversals_and_reconcile(lab: Lab) -> None:
    _load(lab)
    storage = SQLiteStorage(lab.db_path)
    try:
        rows = report.settlement(storage)
        assert report.reconcile(storage, rows) == {}
        assert report.settlement(storage, "1999-01-01") == []
        assert report.settlement(storage, NOW.date().isoformat()) == rows
    finally:
        storage.close()
    by = {(r.terminal_id, r.txn_type): r for r in rows}
    assert by[(POS, "purchase")] == report.ReportRow(
        MERCHANT, POS, "purchase", 2, 15_00, 5_00, 10_00
    )
    assert by[(POS, "completion")].net == 25_00
    assert by[(POS, "preauth")].count == 1
    assert by[(ATM, "withdrawal")].net == 20_00
    assert by[(ATM, "deposit")] == report.ReportRow(BANK, ATM, "deposit", 1, 50_00, 20_00, 30_00)
    assert all(r.txn_type != "purchase" or r.count == 2 for r in rows)  # the 51 is not counted
    assert by[(ATM, "balance")] == report.ReportRow(BANK, ATM, "balance", 1, 0, 0, 0)


def test_every_transaction_type_goes_through_the_report(lab: Lab) -> None:
    """A lab that ran every type: the report has a row for each, reconciles to the ledger, and
    renders as table, CSV and JSON (``center report`` exits 0, no MISMATCH line)."""
    _load(lab)
    storage = SQLiteStorage(lab.db_path)
    try:
        rows = report.settlement(storage)
        assert report.reconcile(storage, rows) == {}
    finally:
        storage.close()
    assert {r.txn_type for r in rows} == {t.value for t in TxnType}
    runner = CliRunner()
    home = ["--home", str(lab.root)]
    outputs = {}
    for fmt in ("table", "csv", "json"):
        out = runner.invoke(main, ["center", "report", *home, "--format", fmt])
        assert out.exit_code == 0, out.output
        assert "MISMATCH" not in out.output
        outputs[fmt] = out.output
    assert {d["txn_type"] for d in json.loads(outputs["json"])} == {t.value for t in TxnType}
    csv_types = {row["txn_type"] for row in csv.DictReader(io.StringIO(outputs["csv"]))}
    assert csv_types == {t.value for t in TxnType}
    table_types = {line.split()[2] for line in outputs["table"].splitlines()[1:]}
    assert table_types == {t.value for t in TxnType}


def test_cli_report_formats(lab: Lab) -> None:
    _load(lab)
    runner = CliRunner()
    out = runner.invoke(main, ["center", "report", "--home", str(lab.root), "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert {(d["terminal_id"], d["txn_type"]) for d in data} >= {
        (POS, "purchase"),
        (ATM, "deposit"),
    }
    csv_out = runner.invoke(main, ["center", "report", "--home", str(lab.root), "--format", "csv"])
    assert (
        csv_out.output.splitlines()[0]
        == "merchant_id,terminal_id,txn_type,count,gross,reversed,net"
    )
    table = runner.invoke(main, ["center", "report", "--home", str(lab.root)])
    assert table.exit_code == 0 and "purchase" in table.output


def test_cli_report_on_a_missing_lab_is_one_line(tmp_path: object) -> None:
    out = CliRunner().invoke(main, ["center", "report", "--home", "/nonexistent/lab"])
    assert out.exit_code == 3 and "not a swipepay lab" in out.output
