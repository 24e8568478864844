"""The center at scale under faults, on a real PostgreSQL server and real center processes."""

from __future__ import annotations

from pathlib import Path

from swipepay.center.lab import create_lab
from swipepay.cli.harness.database_faults import database_kill_loop
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
