"""``swipepay center serve`` and ``swipepay center report`` (click only; work in center/)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from swipepay.cli.main import fail
from swipepay.cli.params import Seconds
from swipepay.firmware_sim.errors import ConfigError, SwipepayError

if TYPE_CHECKING:
    from swipepay.center.storage import Storage

_HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default="lab",
    show_default=True,
    help="Lab directory (swipepay init).",
)
_DB = click.option(
    "--db",
    "database",
    default=None,
    metavar="URL",
    help="The center's database instead of the lab's (lab.json 'database', else its SQLite "
    "file): sqlite:///PATH, sqlite:RELATIVE, a file path, or postgresql://USER@HOST/DB "
    "(password through PGPASSWORD or ~/.pgpass).",
)


def _database(home: Path, database: str | None) -> str:
    """The database a command uses: ``--db`` (relative paths from here), else the lab's."""
    from swipepay.center.database import normalize
    from swipepay.center.lab import Lab

    return Lab(home).database_url if database is None else normalize(database)


def _open(home: Path, database: str | None) -> Storage:
    from swipepay.center.database import open_storage

    return open_storage(_database(home, database))


@click.group()
def center() -> None:
    """The payment center: ISO 8583 server over mutual TLS, settlement report, PIN unblock."""


@center.command()
@_HOME
@_DB
@click.option("--listen", default="127.0.0.1:8583", show_default=True,
              help="HOST:PORT to listen on (port 0: any free port).")
@click.option("--max-connections", type=click.IntRange(min=1), default=None, metavar="N",
              help="Terminal connections served at once; more are closed.  The open-file "
              "limit is raised to fit it (refused when it cannot).  [default: 10000, or what "
              "the open-file limit allows]")
@click.option("--idle-timeout", default=30.0, show_default=True, type=Seconds(),
              help="Seconds a terminal connection may stay silent before it is closed.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="N",
              help="Worker processes serving the address (SO_REUSEPORT), each with its own "
              "event loop, signature verifier and database connection; a worker that dies is "
              "started again.  Above 1 needs PostgreSQL (--db postgresql://...).")
@click.option("--metrics", "metrics_at", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (summed over the "
              "workers) and a health check at /healthz.")
def serve(
    home: Path, database: str | None, listen: str, max_connections: int | None,
    idle_timeout: float, workers: int, metrics_at: str | None,
) -> None:
    """Serve ISO 8583 over TLS 1.3 with required client certificates from the lab CA."""
    import asyncio
    import logging

    from swipepay.center.fdlimit import fit_connection_cap
    from swipepay.center.server import ServerLimits, new_event_loop
    from swipepay.center.workers import serve_center
    from swipepay.firmware_sim.address import parse_address

    try:
        host, port = parse_address(listen, "--listen", any_port=True)
        metrics_address = (
            None if metrics_at is None else parse_address(metrics_at, "--metrics", any_port=True)
        )
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        defaults = ServerLimits()
        max_connections = fit_connection_cap(
            max_connections, defaults.max_connections, defaults.max_handshakes
        )
        limits = ServerLimits(idle_timeout=idle_timeout, max_connections=max_connections)
        url = _database(home, database)

        def ready(port: int) -> None:
            each = " each" if workers > 1 else ""
            click.echo(
                f"center listening on {host}:{port} (TLS 1.3, client cert required, "
                f"{workers} worker{'s' if workers > 1 else ''}, up to {max_connections} "
                f"terminals{each})",
                err=True,
            )

        def metrics_ready(port: int) -> None:
            assert metrics_address is not None
            click.echo(f"metrics on http://{metrics_address[0]}:{port}/metrics", err=True)

        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve_center(home, url, host, port, limits, workers=workers,
                                    metrics_at=metrics_address, on_ready=ready,
                                    on_metrics=metrics_ready))  # fmt: skip
    except SwipepayError as exc:
        fail(exc)
    except OSError as exc:
        if exc.filename is not None:  # a file or directory it needs, not the address
            fail(ConfigError(f"center serve: {exc.filename}: {exc.strerror or exc}"))
        else:
            fail(ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}"))
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


@center.command()
@_HOME
@_DB
@click.option("--date", "day", default=None, metavar="YYYY-MM-DD",
              help="Only messages received on this day (UTC).  Default: every day, and the "
              "totals are checked against the ledger.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True,
              help="table: for people (major units, e.g. 12.34 EUR); csv, json: for programs "
              "(minor units, cents).")
def report(home: Path, database: str | None, day: str | None, fmt: str) -> None:
    """Settlement totals per merchant and terminal, reversals netted, checked against the ledger."""
    import datetime as dt

    if day is not None:
        try:
            day = dt.date.fromisoformat(day).isoformat()
        except ValueError:
            fail(ConfigError(f"--date must be a day as YYYY-MM-DD, not {day!r}"))
            return
    from swipepay.center import report as rep

    try:
        storage = _open(home, database)
        try:
            rows = rep.settlement(storage, day)
            mismatch = rep.reconcile(storage, rows) if day is None else {}
        finally:
            storage.close()
    except SwipepayError as exc:
        fail(exc)
        return
    render = {"table": rep.as_table, "csv": rep.as_csv, "json": rep.as_json}[fmt]
    click.echo(render(rows))
    if mismatch:
        for tid, (want, got) in mismatch.items():
            click.echo(f"MISMATCH {tid}: report {want}, ledger {got}", err=True)
        raise SystemExit(2)


@center.command()
@_HOME
@_DB
@click.option("--card", "name", required=True, help="Lab card name, e.g. alice-visa.")
def unblock(home: Path, database: str | None, name: str) -> None:
    """Reset a card's wrong-PIN counter after it reached the limit (response code 75).

    The limit itself stays: three wrong PINs in a row block the card again.  Run it while the
    center serves or not (the change is one database transaction).
    """
    from swipepay.center.lab import Lab

    try:
        lab = Lab(home)
        cards = lab.cards()
        if name not in cards:
            raise ConfigError(f"no card named {name!r} (lab cards: {', '.join(cards)})")
        storage = _open(home, database)
        try:
            with storage.transaction():
                record = storage.get_card(cards[name].pan)
                if record is None:
                    raise ConfigError(f"card {name} is not enrolled at the center of {home}")
                storage.update_card_security(record.pan, record.last_ksn_counter, 0)
        finally:
            storage.close()
    except SwipepayError as exc:
        fail(exc)
        return
    was = record.pin_tries
    click.echo(f"card {name}: PIN tries reset ({was} wrong before)")
