"""Smoke tests of `swipepay bench`: tiny runs, output shape and numbers (no timed assertions)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from swipepay.cli.harness.realstack import missing_stack
from swipepay.cli.main import main


def _json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data, dict)
    return data


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _center_runs(*args: str) -> list[dict[str, Any]]:
    r = _json("center", "--terminals", "2", "--seconds", "0.5", "--load-processes", "1",
              "--baseline-seconds", "0.1", *args)  # fmt: skip
    assert r["skipped"] == {}
    runs = r["runs"]
    assert isinstance(runs, list)
    return runs


def _check_run(r: dict[str, Any]) -> None:
    for key in ("approvals_per_s", "p50_ms", "p95_ms", "p99_ms", "baseline_commits_per_s",
                "center_peak_rss_mb", "load_peak_rss_mb", "slowest_second",
                "center_cpu_s", "center_cpu_cores", "load_cpu_us_per_request",
                "database_cpu_us_per_approval"):  # fmt: skip
        assert _number(r[key]), key
    assert r["center_cpu_us_per_approval"] > 0
    assert r["center_cpu_us_per_approval"] == pytest.approx(
        r["center_server_cpu_us_per_approval"] + r["center_helper_cpu_us_per_approval"]
    )
    assert "/proc/<pid>/stat" in r["cpu_method"]
    # the machine's speed, measured in the same run (cli/harness/reference.py)
    assert r["reference_verify_us"] > 0 and r["reference_python_us"] > 0
    # the center's children (signature verifier; workers) are counted apart from its root
    assert r["center_helper_peak_rss_mb"] > 0
    assert r["errors"] == []
    assert r["approvals"] > 0
    assert r["approvals"] == r["durable_approvals_in_db"] and r["ledger_balanced"] is True
    assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    assert set(r["codes"]) <= {"00"}


def test_bench_center_tiny_run() -> None:
    (r,) = _center_runs("--only", "sqlite")
    _check_run(r)
    assert (r["configuration"], r["storage"], r["workers"]) == ("SQLite x 1", "SQLite", 1)
    assert r["center_server_cpu_us_per_approval"] > 0
    assert r["database_cpu_us_per_approval"] == 0  # SQLite runs inside the center
    assert r["database_wal_bytes_per_approval"] == 0


def test_bench_center_on_postgresql_one_and_two_workers(pg_url: str) -> None:
    """Both PostgreSQL configurations in a throwaway cluster the bench starts itself; with two
    workers the CPU is the workers' (children of the supervisor)."""
    one, two = _center_runs("--only", "postgresql", "--only", "postgresql-workers")
    for r in (one, two):
        _check_run(r)
        assert r["storage"] == "PostgreSQL"
        assert r["database_cpu_us_per_approval"] > 0  # the cluster's backends, measured apart
        assert r["database_wal_bytes_per_approval"] > 0
        assert 0 < r["database_commits_per_approval"] <= 1.5  # group commit: often < 1
    assert (one["workers"], two["workers"]) == (1, 2)
    assert two["center_helper_cpu_us_per_approval"] > two["center_server_cpu_us_per_approval"]


def test_bench_center_on_a_given_postgresql_server(pg_url: str) -> None:
    """--db names a server: the bench makes its own database there and drops it afterwards."""
    import psycopg

    (r,) = _center_runs("--only", "postgresql", "--db", pg_url)
    _check_run(r)
    with psycopg.connect(pg_url) as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
    assert not [n for n in names if n.startswith("swipepay_bench_")]


def test_bench_center_repeat_interleaves_runs_and_shows_the_median() -> None:
    r = _json("center", "--only", "sqlite", "--terminals", "1", "--seconds", "0.3",
              "--baseline-seconds", "0.1", "--repeat", "2")  # fmt: skip
    assert r["repeat"] == 2 and len(r["runs"]) == 2
    for run in r["runs"]:
        _check_run(run)
    result = CliRunner().invoke(
        main,
        ["bench", "center", "--only", "sqlite", "--terminals", "1", "--seconds", "0.3",
         "--baseline-seconds", "0.1", "--repeat", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3, the median shown" in result.output
    spread = next(line for line in result.output.splitlines() if "CPU/approval spread" in line)
    low, mid, high = (int(v) for v in spread.split()[-2].split("–"))
    assert low <= mid <= high


def test_bench_center_table() -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "center", "--only", "sqlite", "--terminals", "1", "--seconds", "0.3",
         "--baseline-seconds", "0.1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for label in ("configuration", "SQLite x 1", "approvals/s", "latency p99", "baseline",
                  "center peak RSS", "precomputed:", "center CPU/approval",
                  "load CPU/request", "CPU time:", "ledger balanced", "in P-256 verifies",
                  "in Python units", "machine reference, this run:"):  # fmt: skip
        assert label in result.output


def test_bench_flow_in_process() -> None:
    r = _json("flow", "--transactions", "3", "--process-transactions", "0")
    flow = r["inprocess"]
    assert flow["transactions"] == 3 and flow["approved"] == 3
    assert [s["step"].split()[0] for s in flow["steps"]] == [str(n) for n in range(1, 9)]
    assert all(_number(s["p50_ms"]) and _number(s["p99_ms"]) for s in flow["steps"])
    assert _number(flow["total_p50_ms"]) and "processes" not in r


def test_bench_flow_across_processes() -> None:
    why = missing_stack()
    if why is not None and not os.environ.get("CI"):
        pytest.skip(why)
    r = _json("flow", "--transactions", "1", "--process-transactions", "1")
    assert r["processes"]["approved"] == 1
    assert _number(r["processes"]["total_p99_ms"])


def test_bench_link() -> None:
    r = _json("link")
    assert [e["ins"] for e in r["exchanges"]][:2] == ["SELECT", "CONNECT"]
    assert r["bytes_total"] == r["bytes_to_phone"] + r["bytes_from_phone"]
    assert r["commands_excluding_polls"] <= r["commands"]
    assert _number(r["air_ms"]) and "106 kbit/s" in r["formula"]
    table = CliRunner().invoke(main, ["bench", "link"])
    assert "air time" in table.output and "formula:" in table.output


def test_bench_startup() -> None:
    r = _json("startup", "--runs", "1", "--center-seconds", "0.3")
    assert _number(r["startup"]["help_median_ms"])
    assert _number(r["center_peak_rss_mb"]) and _number(r["terminal_peak_rss_mb"])


@pytest.mark.parametrize("args", [["center", "--terminals", "0"], ["center", "--seconds", "x"],
                                  ["flow", "--transactions", "-1"]])  # fmt: skip
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
