"""The ``swipepay`` command: click commands only; the work happens in the packages they call."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from swipepay.firmware_sim.errors import ConfigError, SwipepayError

#: Subcommands that live in their own modules: name -> "module:attribute".  They are imported
#: only when used (or listed by --help), so start-up stays fast.  Add a row per command module.
LAZY_COMMANDS: dict[str, str] = {
    "phone": "swipepay.cli.phone_cmds:phone",
    "conformance": "swipepay.cli.phone_cmds:conformance",
    "trace": "swipepay.cli.phone_cmds:trace",
    "center": "swipepay.cli.center_cmds:center",
    "readers": "swipepay.cli.reader_cmds:readers",
    "card": "swipepay.cli.reader_cmds:card",
    "bench": "swipepay.cli.bench_cmds:bench",
    "terminal": "swipepay.cli.terminal_cmds:terminal",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when the subcommand is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


def fail(exc: SwipepayError) -> None:
    """Print a SwipepayError as one clear line and exit with its exit code."""
    click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
    sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="swipepay")
@click.option("--log-json", is_flag=True, help="Log JSON lines (stderr) instead of text.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Default: info for the servers (center, phone), warning otherwise.",
)
@click.pass_context
def main(ctx: click.Context, log_json: bool, log_level: str | None) -> None:
    """swipepay: the card is read at the terminal, the payment is confirmed and the PIN typed on
    the cardholder's phone over NFC (patent CN103164911A)."""
    from swipepay.drivers.logsetup import default_level, setup_logging

    setup_logging(log_json, log_level or default_level(ctx.invoked_subcommand))


@main.command()
@click.argument("home", type=click.Path(file_okay=False, path_type=Path), default="lab")
@click.option(
    "--db",
    "database",
    default=None,
    metavar="URL",
    help="Put the center's data in this database (recorded in lab.json) instead of the lab's "
    "SQLite file: postgresql://USER@HOST/DB (password through PGPASSWORD or ~/.pgpass, never "
    "in the URL), or sqlite:///PATH.",
)
def init(home: Path, database: str | None) -> None:
    """Create a lab directory HOME: CA, keys, certificates, accounts, cards, phones, and a
    commented terminal.toml (every setting at its default)."""
    from swipepay.center.database import normalize, parse_url
    from swipepay.center.lab import create_lab
    from swipepay.cli.app.terminal_settings import CONFIG_FILE, commented_config

    try:
        lab = create_lab(home, database=None if database is None else normalize(database))
        (lab.root / CONFIG_FILE).write_text(commented_config(), encoding="utf-8")
    except SwipepayError as exc:
        fail(exc)
        return
    except OSError as exc:  # a write failing half-way (disk full, read-only file system)
        fail(ConfigError(f"cannot write the lab in {home}: {exc.strerror or exc}"))
        return
    click.echo(f"created lab in {lab.root}")
    click.echo(f"  terminals: {', '.join(lab.terminals())}")
    click.echo(f"  cards:     {', '.join(lab.cards())}")
    click.echo(f"  phones:    {', '.join(f'{p} -> {c}' for p, c in lab.phones().items())}")
    click.echo(f"  settings:  {lab.root / CONFIG_FILE} (commented; the defaults)")
    if database is not None:
        click.echo(f"  database:  {parse_url(lab.database_url)} (lab.json 'database')")
    click.echo("  secret files (keys, phone profiles, PINs) are mode 0600")


@main.command()
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Use (or create) this lab instead of a temporary one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the story.")
@click.option(
    "--real-stack",
    is_flag=True,
    help="Each part its own process over pcscd/vpcd and TLS (needs pcscd and vsmartcard-vpcd).",
)
def demo(home: Path | None, as_json: bool, real_stack: bool) -> None:
    """Run every transaction type and the telling failures in one process, step by step."""
    from swipepay.cli.demo import run_demo

    try:
        if real_stack:
            from swipepay.cli.harness.realstack import run_real_demo

            code = run_real_demo(home, as_json)
        else:
            code = run_demo(home, as_json)
    except SwipepayError as exc:
        fail(exc)
        return
    sys.exit(code)
