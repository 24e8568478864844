"""``bench faults`` / ``bench soak`` commands (cli.faults_cmds), at tiny sizes."""

from __future__ import annotations

from click.testing import CliRunner

from swipepay.cli.faults_cmds import faults, soak


def test_faults_disk_only_prints_counts_and_ok() -> None:
    result = CliRunner().invoke(faults, ["--only", "disk"])
    assert result.exit_code == 0, result.output
    assert "failed commits 3, answered 96 3, half-written 0" in result.output
    assert result.output.rstrip().endswith("-> OK")


def test_faults_refuses_zero_kills() -> None:
    result = CliRunner().invoke(faults, ["--kills", "0"])
    assert result.exit_code != 0
    assert "--kills must be at least 1" in result.output


def test_soak_prints_counts_per_parser_and_unhandled_exceptions() -> None:
    result = CliRunner().invoke(
        soak, ["--examples", "40", "--parser", "tlv", "--parser", "applet", "-j", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "tlv                         40 examples  0 unhandled exceptions" in result.output
    assert "applet                     100 examples  0 unhandled exceptions" in result.output
    assert "applet APDUs in ANSWERED" in result.output
    assert "total: 2 parsers, 0 unhandled exceptions, 0 failed" in result.output
