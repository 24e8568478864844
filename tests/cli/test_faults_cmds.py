"""``bench faults`` / ``bench soak`` commands (cli.faults_cmds), at tiny sizes."""

from __future__ import annotations

from click.testing import CliRunner

from swipepay.cli.faults_cmds import faults, soak


def test_faults_disk_only_prints_counts_and_ok() -> None:
    result = CliRunner().invoke(faults, ["--only", "disk"])
    assert result.exit_code == 0, result.output
    assert "failed commits 3, answered 96 3, half-written 0" in result.output
    assert result.output.rstrip().endswith("-> OK")


def test_faults_database_kills_postgresql_and_checks_the_ledger(pg_cluster: object) -> None:
    """The bench starts its own cluster (``pg_cluster`` only makes the test skip/fail where
    PostgreSQL is missing, as every PostgreSQL test does)."""
    result = CliRunner().invoke(faults, ["--only", "database", "--kills", "1"])
    assert result.exit_code == 0, result.output
    assert "database: PostgreSQL server SIGKILLed under load, 1 times" in result.output
    assert "lost 0, unseen 0, unanswered 0, balance mismatches 0, unbalanced 0" in result.output
    assert result.output.rstrip().endswith("-> OK")


def test_faults_worker_kills_one_of_two_workers(pg_cluster: object) -> None:
    result = CliRunner().invoke(faults, ["--only", "worker", "--kills", "1"])
    assert result.exit_code == 0, result.output
    assert "worker: one of 2 center workers SIGKILLed under load, 1 times" in result.output
    assert "restarts 1," in result.output
    assert "lost 0, unseen 0, unanswered 0, balance mismatches 0, unbalanced 0" in result.output
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
