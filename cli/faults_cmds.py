"""``swipepay bench faults`` and ``swipepay bench soak``: fault loops and parser soaks that print
counts.  They are benchmarks, not tests: the CI suite runs the same code at a few iterations.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from swipepay.cli.main import fail
from swipepay.firmware_sim.errors import ConfigError, SwipepayError

ROOT = Path(__file__).resolve().parents[1]

#: Every parser the soak covers (the names on the tests' ``@pytest.mark.soak`` marks).
SOAK_PARSERS = (
    "apdu-command",
    "apdu-response",
    "tlv",
    "certificate",
    "secure-channel",
    "phonelink-bodies",
    "track1",
    "track2",
    "track2-equivalent",
    "msr605-stream",
    "msr605-reply",
    "iso8583-body",
    "iso8583-frames",
    "applet",
)

FAULTS = ("center", "terminal", "disk", "database", "worker")


@click.command()
@click.option("--kills", default=20, show_default=True, help="SIGKILLs per process kind.")
@click.option(
    "--only", "only", multiple=True, type=click.Choice(FAULTS), help="Run only these faults."
)
@click.option("--seed", default=7, show_default=True, help="Seed of the terminal kill times.")
def faults(kills: int, only: tuple[str, ...], seed: int) -> None:
    """Kill the center under load and the terminal mid-transaction KILLS times each, fail the
    center's disk, SIGKILL the center's PostgreSQL server and one of its worker processes under
    load; print what the ledger
    holds after each.  Runs on fresh temporary labs (and a throwaway PostgreSQL cluster)."""
    from swipepay.center.lab import create_lab
    from swipepay.cli.harness import faults as f

    if kills < 1:
        fail(ConfigError("--kills must be at least 1"))
        return
    logging.getLogger("center").addHandler(logging.NullHandler())  # the 96s are expected
    chosen = only or FAULTS
    ok = True
    with tempfile.TemporaryDirectory(prefix="swipepay-faults-") as tmp:
        try:
            if "center" in chosen:
                click.echo(f"center: SIGKILL under load, {kills} times")
                c = f.center_kill_loop(
                    create_lab(Path(tmp) / "center").root,
                    kills=kills,
                    progress=lambda n, r: click.echo(
                        f"  kill {n:2d}: {r.requests} requests, {r.approvals_seen} approvals "
                        f"seen, {r.approvals_stored} stored, lost {r.lost}, unseen {r.unseen}, "
                        f"unbalanced {r.unbalanced}"
                    ),
                )
                click.echo(
                    f"  total: kills {c.kills}, requests {c.requests}, approvals seen "
                    f"{c.approvals_seen} / stored {c.approvals_stored}, lost {c.lost}, "
                    f"unseen {c.unseen}, unanswered {c.unanswered}, unbalanced {c.unbalanced}, "
                    f"codes {c.codes}, {c.seconds:.1f} s -> {'OK' if c.ok else 'FAILED'}"
                )
                ok &= c.ok
            if "terminal" in chosen:
                click.echo(f"terminal: SIGKILL mid-transaction, {kills} times")
                t = f.terminal_kill_loop(
                    create_lab(Path(tmp) / "terminal").root, kills=kills, seed=seed
                )
                click.echo(
                    f"  total: kills {t.kills}, transactions finished {t.finished} {t.codes}, "
                    f"reversals queued at restart and sent {t.reversals_sent}, left in queue "
                    f"{t.left_in_queue}, approvals logged {t.approvals_logged} / on ledger "
                    f"{t.approvals_on_ledger}, lost {t.lost}, unlogged {t.unlogged}, unbalanced "
                    f"{t.unbalanced}, {t.seconds:.1f} s -> {'OK' if t.ok else 'FAILED'}"
                )
                ok &= t.ok
            if "disk" in chosen:
                click.echo("disk: commits failing under the TLS server")
                d = f.disk_fault_check(create_lab(Path(tmp) / "disk").root)
                click.echo(
                    f"  failed commits {d.failed_commits}, answered 96 {d.answered_96}, "
                    f"half-written {d.half_written}, balance {d.balance_before} -> "
                    f"{d.balance_after_fault}, retry after recovery {d.retry_code}, unbalanced "
                    f"{d.unbalanced} -> {'OK' if d.ok else 'FAILED'}"
                )
                ok &= d.ok
            if "database" in chosen:
                ok &= _database_fault(Path(tmp), kills)
            if "worker" in chosen:
                ok &= _worker_fault(Path(tmp), kills)
        except SwipepayError as exc:
            fail(exc)
            return
    sys.exit(0 if ok else 1)


def _database_fault(tmp: Path, kills: int) -> bool:
    """The PostgreSQL server SIGKILLed under load ``kills`` times (a throwaway cluster)."""
    from swipepay.center.lab import create_lab
    from swipepay.cli.harness.database_faults import database_kill_loop
    from swipepay.cli.harness.postgres import PostgresCluster

    click.echo(f"database: PostgreSQL server SIGKILLed under load, {kills} times")
    with PostgresCluster() as cluster:
        home = create_lab(tmp / "database", database=cluster.create_database()).root
        r = database_kill_loop(
            home,
            cluster,
            kills=kills,
            progress=lambda n, r: click.echo(
                f"  kill {n:2d}: {r.requests} requests, {r.approvals_seen} approvals seen, "
                f"{r.approvals_posted} posted, answered while down {r.outage_answers} "
                f"(slowest {r.outage_slowest_s:.2f} s), lost {r.lost}, unseen {r.unseen}"
            ),
        )
    click.echo(
        f"  total: kills {r.kills}, requests {r.requests}, approvals seen {r.approvals_seen} / "
        f"posted {r.approvals_posted}, lost {r.lost}, unseen {r.unseen}, unanswered "
        f"{r.unanswered}, balance mismatches {r.balance_mismatches}, unbalanced {r.unbalanced}, "
        f"answered while down {r.outage_answers} (slowest {r.outage_slowest_s:.2f} s), "
        f"reversals sent {r.reversals_sent}, codes {r.codes}, {r.seconds:.1f} s "
        f"-> {'OK' if r.ok else 'FAILED'}"
    )
    return r.ok


def _worker_fault(tmp: Path, kills: int) -> bool:
    """One worker of ``center serve --workers 2`` SIGKILLed under load ``kills`` times."""
    from swipepay.center.lab import create_lab
    from swipepay.cli.harness.database_faults import worker_kill_loop
    from swipepay.cli.harness.postgres import PostgresCluster

    click.echo(f"worker: one of 2 center workers SIGKILLed under load, {kills} times")
    with PostgresCluster() as cluster:
        home = create_lab(tmp / "worker", database=cluster.create_database()).root
        r = worker_kill_loop(
            home,
            kills=kills,
            progress=lambda n, r: click.echo(
                f"  kill {n:2d}: {r.requests} requests, {r.approvals_seen} approvals seen, "
                f"{r.approvals_posted} posted, answered while it was gone {r.outage_answers}, "
                f"restarted {r.restarts}, lost {r.lost}, unseen {r.unseen}"
            ),
        )
    click.echo(
        f"  total: kills {r.kills} ({r.kills_with_connections} of a worker serving terminals), "
        f"restarts {r.restarts}, requests {r.requests}, approvals seen {r.approvals_seen} / "
        f"posted {r.approvals_posted}, lost {r.lost}, unseen {r.unseen}, unanswered "
        f"{r.unanswered}, balance mismatches {r.balance_mismatches}, unbalanced {r.unbalanced}, "
        f"reversals sent {r.reversals_sent}, codes {r.codes}, {r.seconds:.1f} s "
        f"-> {'OK' if r.ok else 'FAILED'}"
    )
    return r.ok


def _soak_one(parser: str, examples: int, out: Path) -> tuple[str, int, dict[str, Any], str]:
    report = out / f"{parser}.json"
    proc = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--soak",
            "--soak-examples", str(examples), "--soak-parser", parser,
            "--soak-report", str(report), "tests",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    data: dict[str, Any] = {}
    if report.exists():
        data = json.loads(report.read_text(encoding="utf-8"))
    tail = "\n".join(proc.stdout.splitlines()[-15:])
    return parser, proc.returncode, data, tail


@click.command()
@click.option("--examples", default=100_000, show_default=True, help="Examples per parser.")
@click.option(
    "--parser", "parsers", multiple=True, type=click.Choice(SOAK_PARSERS),
    help="Only these parsers (repeatable).",
)
@click.option("-j", "--jobs", default=os.cpu_count() or 1, show_default=True,
              help="Parsers soaked in parallel (one pytest process each).")
def soak(examples: int, parsers: tuple[str, ...], jobs: int) -> None:
    """Run the parsers' property tests with EXAMPLES examples each (the applet: 2.5x, counted
    as APDUs per applet state) and print the counts and unhandled exceptions."""
    if not (ROOT / "tests" / "conftest.py").exists():
        fail(ConfigError(f"the soak runs the test suite: no tests/ under {ROOT}"))
        return
    if examples < 1 or jobs < 1:
        fail(ConfigError("--examples and --jobs must be at least 1"))
        return
    chosen = parsers or SOAK_PARSERS
    out = Path(tempfile.mkdtemp(prefix="swipepay-soak-"))
    started = time.monotonic()
    failed = 0
    unhandled = 0
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for parser, rc, data, tail in pool.map(
                lambda p: _soak_one(p, examples, out), chosen
            ):
                rows = data.get("parsers", {})
                if rc != 0 or parser not in rows:
                    failed += 1
                    click.echo(f"{parser:<20} FAILED (pytest exit {rc})\n{tail}")
                    continue
                row = rows[parser]
                unhandled += int(row["unhandled_exceptions"])
                click.echo(
                    f"{parser:<20} {row['examples']:>9,} examples  "
                    f"{row['unhandled_exceptions']} unhandled exceptions  {row['seconds']:>7.1f} s"
                )
                for unit, n in data.get("units", {}).items():
                    click.echo(f"  {unit:<34} {n:>9,}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    click.echo(
        f"total: {len(chosen)} parsers, {unhandled} unhandled exceptions, {failed} failed, "
        f"{time.monotonic() - started:.0f} s"
    )
    sys.exit(1 if failed or unhandled else 0)
