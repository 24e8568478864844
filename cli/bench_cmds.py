"""``swipepay bench``: benchmarks that print figures (click only; the work is in drivers/)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from swipepay.cli.params import Seconds

_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
_WORKDIR = click.option(
    "--workdir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Directory for the temporary lab and database (the disk being measured).",
)


def _emit(result: Any, as_json: bool, table: list[tuple[str, str]], notes: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), sort_keys=True))
        return
    width = max(len(k) for k, _ in table)
    for key, value in table:
        click.echo(f"{key.ljust(width)}  {value}")
    for note in notes:
        click.echo(note)


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


@click.group()
def bench() -> None:
    """Benchmarks: center throughput, whole-transaction latency, phone-link cost, start-up."""


def _spread(values: list[float], unit: str) -> str:
    """``min–median–max`` of several runs' figures."""
    if not values:
        return "-"
    from swipepay.cli.harness.benchmarks import lower_median

    ordered = sorted(values)
    mid = lower_median(ordered)
    fmt = "{:.0f}" if unit else "{:.2f}"
    text = "–".join(fmt.format(v) for v in (ordered[0], mid, ordered[-1]))
    return f"{text} {unit}".rstrip()


def _ratio(value: float, unit: float) -> str:
    """``value`` in units of ``unit`` (a machine reference), or "-" when it was not measured."""
    return f"{value / unit:.2f}" if unit > 0 else "-"


@bench.command()
@click.option("--terminals", default=16, show_default=True, type=click.IntRange(1, 200))
@click.option("--seconds", default=30.0, show_default=True, type=Seconds(0.1, 3600, low_open=False))
@click.option(
    "--load-processes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Load-generator processes sharing the terminals.",
)
@click.option(
    "--baseline-seconds",
    default=2.0,
    show_default=True,
    type=Seconds(0.1, 600, low_open=False),
    help="How long to measure one-commit-per-transaction on the same disk.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(["sqlite", "postgresql", "postgresql-workers"]),
    help="Run only these configurations (repeatable).  [default: all three]",
)
@click.option(
    "--db",
    "postgresql_url",
    default=None,
    metavar="URL",
    help="A PostgreSQL server (postgresql://USER@HOST/DB, a role with CREATEDB) for the "
    "PostgreSQL configurations; each gets a new database, dropped afterwards.  [default: a "
    "throwaway cluster started for the run]",
)
@click.option(
    "--workers",
    "pg_workers",
    default=2,
    show_default=True,
    type=click.IntRange(2, 64),
    help="Worker processes of the postgresql-workers configuration.",
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Runs of each configuration, interleaved; the table shows each configuration's "
    "median run (by CPU per approval) and the spread.  One run on a shared machine moves by "
    "±20 %.",
)
@_WORKDIR
@_JSON
def center(
    terminals: int,
    seconds: float,
    load_processes: int,
    baseline_seconds: float,
    only: tuple[str, ...],
    postgresql_url: str | None,
    pg_workers: int,
    repeat: int,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """The real TLS center under TERMINALS persistent mutual-TLS terminals for SECONDS, in
    three configurations measured in one run: SQLite with one process, PostgreSQL with one,
    PostgreSQL with --workers processes.

    Prints, per configuration, throughput, latency, and the center's CPU time per approval
    from the kernel's accounting (utime + stime of the center process and all its
    descendants, from /proc/<pid>/stat, before and after the timed region): the figure that
    moves least with the machine.  The PostgreSQL server's own CPU per approval is shown apart
    (when the bench started it), and every configuration counts its durable approvals in its
    database and checks its ledger."""
    from swipepay.cli.harness.benchmarks import CONFIGURATIONS, bench_center_suite, median_run
    from swipepay.cli.main import fail
    from swipepay.firmware_sim.errors import SwipepayError

    chosen = [c for c in CONFIGURATIONS if not only or c in only]
    try:
        suite = bench_center_suite(
            chosen,
            postgresql_url=postgresql_url,
            pg_workers=pg_workers,
            repeat=repeat,
            progress=None if as_json else lambda n: click.echo(f"measuring {n} ...", err=True),
            terminals=terminals,
            seconds=seconds,
            load_processes=load_processes,
            baseline_seconds=baseline_seconds,
            workdir=workdir,
        )
    except SwipepayError as exc:
        fail(exc)
        return
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(suite), sort_keys=True))
        _exit_on_failure(suite.runs)
        return
    groups = list(suite.by_configuration().values())
    runs = [median_run(g) for g in groups]
    rows: list[tuple[str, list[str]]] = [
        ("configuration", [r.configuration for r in runs]),
        ("terminals", [f"{r.terminals} ({r.load_processes} load procs)" for r in runs]),
        ("duration", [f"{r.seconds:g} s" for r in runs]),
        ("requests", [str(r.requests) for r in runs]),
        ("approvals", [str(r.approvals) for r in runs]),
        ("approvals/s", [f"{r.approvals_per_s:.0f}" for r in runs]),
        ("slowest second", [str(r.slowest_second) for r in runs]),
        ("latency p50", [_ms(r.p50_ms) for r in runs]),
        ("latency p95", [_ms(r.p95_ms) for r in runs]),
        ("latency p99", [_ms(r.p99_ms) for r in runs]),
        ("center CPU/approval", [f"{r.center_cpu_us_per_approval:.0f} us" for r in runs]),
        (
            "  of which",
            [
                f"root {r.center_server_cpu_us_per_approval:.0f} + children "
                f"{r.center_helper_cpu_us_per_approval:.0f}"
                for r in runs
            ],
        ),
        (
            "  in P-256 verifies",
            [_ratio(r.center_cpu_us_per_approval, r.reference_verify_us) for r in runs],
        ),
        (
            "  in Python units",
            [_ratio(r.center_cpu_us_per_approval, r.reference_python_us) for r in runs],
        ),
        ("center cores busy", [f"{r.center_cpu_cores:.2f}" for r in runs]),
    ]
    if suite.repeat > 1:
        rows.insert(1, ("runs", [f"{len(g)}, the median shown" for g in groups]))
        rows += [
            (
                "  CPU/approval spread",
                [_spread([r.center_cpu_us_per_approval for r in g], "us") for g in groups],
            ),
            (
                "  verifies spread",
                [
                    _spread(
                        [
                            r.center_cpu_us_per_approval / r.reference_verify_us
                            for r in g
                            if r.reference_verify_us > 0
                        ],
                        "",
                    )
                    for g in groups
                ],
            ),
        ]
    rows += [
        (
            "database CPU/approval",
            [
                f"{r.database_cpu_us_per_approval:.0f} us" if r.storage == "PostgreSQL" else "-"
                for r in runs
            ],
        ),
        (
            "database WAL/approval",
            [
                f"{r.database_wal_bytes_per_approval:.0f} B" if r.storage == "PostgreSQL" else "-"
                for r in runs
            ],
        ),
        (
            "commits/approval",
            [
                f"{r.database_commits_per_approval:.2f}" if r.storage == "PostgreSQL" else "-"
                for r in runs
            ],
        ),
        ("load CPU/request", [f"{r.load_cpu_us_per_request:.0f} us" for r in runs]),
        (
            "response codes",
            [", ".join(f"{k}: {v}" for k, v in sorted(r.codes.items())) for r in runs],
        ),
        ("durable approvals", [f"{r.durable_approvals_in_db} in the db" for r in runs]),
        ("ledger balanced", ["yes" if r.ledger_balanced else "NO" for r in runs]),
        ("baseline", [f"{r.baseline_commits_per_s:.0f} commits/s" for r in runs]),
        (
            "center peak RSS",
            [f"{r.center_peak_rss_mb + r.center_helper_peak_rss_mb:.1f} MB" for r in runs],
        ),
        ("load process RSS", [f"{r.load_peak_rss_mb:.1f} MB" for r in runs]),
    ]
    width = max(len(k) for k, _ in rows)
    cols = [max(len(v[i]) for _, v in rows) for i in range(len(runs))]
    for key, values in rows:
        cells = "  ".join(v.ljust(w) for v, w in zip(values, cols, strict=True))
        click.echo(f"{key.ljust(width)}  {cells}".rstrip())
    if runs:
        slowest = max(r.precompute_s for r in runs)
        click.echo(f"precomputed: {runs[0].precomputed} ({slowest:.1f} s)")
        click.echo(f"CPU time: {runs[0].cpu_method}")
        click.echo(
            "machine reference, this run: "
            + "; ".join(
                f"{r.configuration}: P-256 verify {r.reference_verify_us:.1f} us, Python unit "
                f"{r.reference_python_us:.1f} us"
                for r in runs
            )
            + " (CPU per approval divided by these takes out the machine's drift between runs,"
            " not the contention inside one)"
        )
        click.echo(
            "baseline: durable one-row commits/s, one per transaction (SQLite: same disk, WAL, "
            "synchronous=FULL; PostgreSQL: same server, synchronous_commit=on)"
        )
    if any(r.storage == "PostgreSQL" for r in runs):
        click.echo(f"PostgreSQL: {suite.postgresql}")
    for name, reason in suite.skipped.items():
        click.echo(f"skipped {name}: {reason}")
    for r in runs:
        if r.exhausted_terminals:
            click.echo(f"warning: {r.configuration}: {r.exhausted_terminals} terminals ran out")
        for e in r.errors:
            click.echo(f"error: {r.configuration}: {e}")
    _exit_on_failure(suite.runs)


def _exit_on_failure(runs: list[Any]) -> None:
    """Exit 1 when a configuration lost approvals, unbalanced its ledger or failed requests."""
    if any(
        r.errors or not r.ledger_balanced or r.durable_approvals_in_db != r.approvals
        for r in runs
    ):
        raise SystemExit(1)


@bench.command()
@click.option("--transactions", default=200, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--process-transactions",
    default=20,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Transactions across three processes over pcscd/vpcd and TLS (0: skip).",
)
@_WORKDIR
@_JSON
def flow(transactions: int, process_transactions: int, workdir: Path | None, as_json: bool) -> None:
    """Whole transactions, user confirming at once: p50/p99 per step of the method and in total,
    in one process on mock drivers and across three processes."""
    from swipepay.cli.harness.benchmarks import (
        FlowBench,
        bench_flow_inprocess,
        bench_flow_processes,
    )
    from swipepay.firmware_sim.errors import SwipepayError

    results: dict[str, Any] = {}
    runs: list[FlowBench] = [bench_flow_inprocess(transactions, workdir)]
    results["inprocess"] = dataclasses.asdict(runs[0])
    skipped = None
    if process_transactions:
        try:
            runs.append(bench_flow_processes(process_transactions, workdir))
            results["processes"] = dataclasses.asdict(runs[1])
        except SwipepayError as exc:
            skipped = str(exc)
            results["processes"] = {"skipped": skipped}
    if as_json:
        click.echo(json.dumps(results, sort_keys=True))
        return
    for r in runs:
        rows = [("mode", r.mode), ("transactions", f"{r.transactions} ({r.approved} approved)")]
        rows += [(s.step, f"p50 {_ms(s.p50_ms)}  p99 {_ms(s.p99_ms)}") for s in r.steps]
        rows.append(("total", f"p50 {_ms(r.total_p50_ms)}  p99 {_ms(r.total_p99_ms)}"))
        _emit(r, False, rows, [""])
    if skipped:
        click.echo(f"three processes: skipped ({skipped})")


@bench.command()
@_WORKDIR
@_JSON
def link(workdir: Path | None, as_json: bool) -> None:
    """The phone link of one purchase: exchanges, bytes each way, ISO 14443-A air time."""
    from swipepay.cli.harness.benchmarks import bench_link

    r = bench_link(workdir)
    rows = [
        (e["ins"], f"{e['sent']:>4} B out {e['received']:>4} B back  SW {e['sw']}")
        for e in r.exchanges
    ]
    rows += [
        ("commands", f"{r.commands} ({r.commands_excluding_polls} excluding confirmation polls)"),
        ("bytes", f"{r.bytes_to_phone} to phone + {r.bytes_from_phone} back = {r.bytes_total}"),
        (
            "air time",
            f"{r.air_ms:.1f} ms in {r.air_frames} frames "
            f"({r.air_ms_emvco_gaps:.1f} ms with 500 us EMVCo gaps)",
        ),
    ]
    _emit(r, as_json, rows, [f"formula: {r.formula}"])


@bench.command()
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--center-seconds",
    default=5.0,
    show_default=True,
    type=Seconds(0, 600, low_open=False),
    help="Length of the center benchmark run for peak RSS (0: skip).",
)
@_WORKDIR
@_JSON
def startup(runs: int, center_seconds: float, workdir: Path | None, as_json: bool) -> None:
    """`swipepay --help` wall time; peak RSS of the center and the terminals under load."""
    from swipepay.cli.harness.benchmarks import bench_center, bench_startup

    s = bench_startup(runs)
    result: dict[str, Any] = {"startup": dataclasses.asdict(s)}
    rows = [
        (
            "swipepay --help",
            f"median {_ms(s.help_median_ms)}, max {_ms(s.help_max_ms)} over {s.help_runs} runs",
        )
    ]
    if center_seconds > 0:
        c = bench_center(16, center_seconds, baseline_seconds=0.2, workdir=workdir)
        center_total = c.center_peak_rss_mb + c.center_helper_peak_rss_mb
        result["center_peak_rss_mb"] = center_total
        result["center_server_peak_rss_mb"] = c.center_peak_rss_mb
        result["center_verifier_peak_rss_mb"] = c.center_helper_peak_rss_mb
        result["terminal_peak_rss_mb"] = c.load_peak_rss_mb
        rows += [
            (
                "center peak RSS",
                f"{center_total:.1f} MB (server {c.center_peak_rss_mb:.1f} + signature verifier "
                f"{c.center_helper_peak_rss_mb:.1f}; 16 terminals, {center_seconds:g} s)",
            ),
            (
                "terminal peak RSS",
                f"{c.load_peak_rss_mb:.1f} MB (a load process driving 8 terminals)",
            ),
        ]
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        _emit(s, False, rows, [])


@bench.command()
@click.option("--terminals", default=10_000, show_default=True, type=click.IntRange(1, 25_000),
              help="Idle mutual-TLS terminal connections to hold (from 127.0.0.1: the "
              "loopback has about 28,000 client ports).")
@click.option("--idle-timeout", default=30.0, show_default=True,
              type=Seconds(1, 3600, low_open=False),
              help="The center's --idle-timeout (the keep-alives must beat it).")
@click.option("--keepalive", type=Seconds(0.1, 3600, low_open=False), default=None,
              help="Seconds of silence after which a connection sends an echo (0800).  "
              "[default: 0.6 of --idle-timeout]")
@click.option("--hold", type=Seconds(0, 3600, low_open=False), default=None,
              help="Seconds to hold the fleet once connected.  [default: the idle timeout and "
              "one keep-alive more]")
@click.option("--client-processes", type=click.IntRange(1, 64), default=None,
              help="Load processes holding the connections.  [default: one per 2500]")
@_WORKDIR
@_JSON
def idle(terminals: int, idle_timeout: float, keepalive: float | None, hold: float | None,
         client_processes: int | None, workdir: Path | None, as_json: bool) -> None:
    """One center holding TERMINALS idle mutual-TLS connections past its idle timeout (echo
    keep-alives), a payment approved meanwhile; RSS per connection, center and clients."""
    from swipepay.cli.harness.idle import bench_idle
    from swipepay.cli.main import fail
    from swipepay.firmware_sim.errors import SwipepayError

    try:
        r = bench_idle(terminals, idle_timeout=idle_timeout, keepalive=keepalive, hold=hold,
                       client_processes=client_processes, workdir=workdir)  # fmt: skip
    except SwipepayError as exc:
        fail(exc)
        return
    _emit(r, as_json, [
        ("terminals", f"{r.opened} of {r.terminals} connected ({r.failed} failed) by "
                      f"{r.client_processes} load processes in {r.connect_s:.1f} s "
                      f"({r.handshakes_per_s:.0f} handshakes/s)"),
        ("held", f"{r.held_s:.1f} s (center idle timeout {r.idle_timeout_s:g} s, echo after "
                 f"{r.keepalive_s:g} s of silence)"),
        ("still open", f"{r.open_after_hold} ({r.closed_by_center} closed by the center); last "
                       f"echo round answered on all: {'yes' if r.all_answered else 'NO'}"),
        ("payment meanwhile", f"{r.payment} in {r.payment_ms:.0f} ms"),
        ("center RSS", f"{r.center_rss_before_mb:.1f} MB before, {r.center_rss_held_mb:.1f} MB "
                       f"held (signature verifier {r.center_verifier_rss_mb:.1f} MB apart)"),
        ("center per connection", f"{r.center_rss_per_connection_kb:.1f} KB"),
        ("load RSS", f"{r.load_rss_before_mb:.1f} MB before, {r.load_rss_held_mb:.1f} MB held "
                     f"({r.load_rss_per_connection_kb:.1f} KB per connection)"),
        ("center open files", str(r.center_open_file_limit or "unknown")),
    ], [f"error: {e}" for e in r.errors])  # fmt: skip
    if not (r.all_answered and r.payment_approved):
        raise SystemExit(1)


# Fault loops and parser soaks (cli/faults_cmds.py).
from swipepay.cli.faults_cmds import faults, soak  # noqa: E402

bench.add_command(faults)
bench.add_command(soak)
