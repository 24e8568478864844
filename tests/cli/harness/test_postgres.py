"""The throwaway PostgreSQL cluster the tests and benches use: a real server, as a real crash."""

from __future__ import annotations

import os

import psycopg
import pytest

from swipepay.cli.harness.postgres import PostgresCluster


def _count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM t").fetchone()
    assert row is not None
    return int(row[0])


def test_databases_are_fresh_and_separate(pg_cluster: PostgresCluster) -> None:
    first, second = pg_cluster.create_database(), pg_cluster.create_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert _count(first) == 1
    with psycopg.connect(second, autocommit=True) as conn, pytest.raises(psycopg.Error):
        conn.execute("SELECT count(*) FROM t")


def test_server_runs_unprivileged(pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(pg_cluster.url, autocommit=True) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None and str(row[0]).startswith(str(pg_cluster.dir))
    owner = pg_cluster.data.stat().st_uid
    assert owner != 0 or os.geteuid() != 0  # as root, the cluster belongs to `nobody`


def test_kill_is_a_crash_and_start_recovers_committed_rows(
    pg_private_cluster: PostgresCluster,
) -> None:
    url = pg_private_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
    held = psycopg.connect(url, autocommit=True)
    try:
        pg_private_cluster.kill()
        assert pg_private_cluster.pid is None
        # The backends died with the postmaster: the open session is gone, not still serving.
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    pg_private_cluster.start()
    assert _count(url) == 100


def test_close_removes_the_directory() -> None:
    cluster = PostgresCluster()
    with cluster:
        assert cluster.data.is_dir()
    assert not cluster.dir.exists()
