"""The center at scale under faults, on a real PostgreSQL server and real center processes."""

from __future__ import annotations

from pathlib import Path

from swipepay.center.lab import create_lab
from swipepay.cli.harness.database_faults import database_kill_loop, worker_kill_loop
from swipepay.cli.harness.postgres import PostgresCluster


def test_database_killed_under_load_loses_and_doubles_nothing(
    tmp_path: Path, pg_private_cluster: PostgresCluster
) -> None:
    home = create_lab(tmp_path / "lab", database=pg_private_cluster.create_database()).root
    report = database_kill_loop(home, pg_private_cluster, kills=2, per_round=10)
    assert report.kills == 2
    assert report.outage_answers >= 2
    assert report.codes.get("91", 0) >= 1, report.codes  # answered while the database was down
    assert report.approvals_seen > 0
    assert (report.lost, report.unseen, report.unanswered) == (0, 0, 0), report
    assert (report.balance_mismatches, report.unbalanced) == (0, 0), report
    assert report.outage_slowest_s < 5.0, report
    assert report.ok


def test_worker_killed_under_load_others_serve_and_nothing_doubles(
    tmp_path: Path, pg_url: str
) -> None:
    """Two workers on one PostgreSQL; each round SIGKILLs one (a serving one when a terminal
    is connected to it): the supervisor restarts it, the terminals it cut retransmit to the
    survivor, every approval is on the ledger once and nothing else is."""
    home = create_lab(tmp_path / "lab", database=pg_url).root
    report = worker_kill_loop(home, kills=3, workers=2, per_round=10)
    assert (report.kills, report.restarts) == (3, 3)
    assert report.worker_pids_seen >= 2 + 3  # the two first ones and each restarted one
    assert report.approvals_seen > 0
    assert report.outage_answers > 0  # served while the killed worker was gone
    assert (report.lost, report.unseen, report.unanswered) == (0, 0, 0), report
    assert (report.balance_mismatches, report.unbalanced) == (0, 0), report
    assert report.ok
