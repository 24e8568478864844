"""``swipepay center unblock`` and ``center report``'s table and options."""

from __future__ import annotations

from click.testing import CliRunner

from swipepay.center.lab import Lab
from swipepay.center.storage import SQLiteStorage
from swipepay.cli.main import main


def tries(lab: Lab, card: str, set_to: int | None = None) -> int:
    storage = SQLiteStorage(lab.db_path)
    try:
        with storage.transaction():
            record = storage.get_card(lab.cards()[card].pan)
            assert record is not None
            if set_to is not None:
                storage.update_card_security(record.pan, record.last_ksn_counter, set_to)
            return record.pin_tries if set_to is None else set_to
    finally:
        storage.close()


def test_unblock_resets_the_pin_tries_of_one_card(lab: Lab) -> None:
    tries(lab, "alice-visa", set_to=3)
    out = CliRunner().invoke(main, ["center", "unblock", "--home", str(lab.root),
                                    "--card", "alice-visa"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "PIN tries reset (3 wrong before)" in out.output
    assert tries(lab, "alice-visa") == 0
    out = CliRunner().invoke(main, ["center", "unblock", "--home", str(lab.root),
                                    "--card", "nobody"])  # fmt: skip
    assert out.exit_code == 3 and "lab cards:" in out.output


def test_report_date_is_validated(lab: Lab) -> None:
    out = CliRunner().invoke(main, ["center", "report", "--home", str(lab.root),
                                    "--date", "yesterday"])  # fmt: skip
    assert out.exit_code == 3 and "YYYY-MM-DD" in out.output
    out = CliRunner().invoke(main, ["center", "report", "--home", str(lab.root),
                                    "--date", "2026-12-01"])  # fmt: skip
    assert out.exit_code == 0 and "no approved transactions" in out.output


def test_report_table_is_aligned_in_major_units(lab: Lab) -> None:
    from swipepay.center.report import ReportRow, as_table

    table = as_table([
        ReportRow("MERCH0000000001", "POS00001", "purchase", 2, 12_34, 0, 12_34),
        ReportRow("M2", "ATM00001", "withdrawal", 1, 100_000_00, 1_00, 99_999_00),
    ])  # fmt: skip
    lines = table.splitlines()
    assert "12.34 EUR" in table and "99999.00 EUR" in table
    assert len({len(line) for line in lines}) == 1  # every column padded to its widest cell
    assert lines[1].index("POS00001") == lines[2].index("ATM00001")


def test_every_center_option_has_help() -> None:
    for command in ("serve", "report", "unblock"):
        out = CliRunner().invoke(main, ["center", command, "--help"])
        assert out.exit_code == 0
        options = [line for line in out.output.splitlines() if line.strip().startswith("--")]
        assert options and all(len(line.split(None, 1)) == 2 for line in options), out.output
