"""The ``swipepay`` command: click commands only; the work happens in the packages they call."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from firmware_sim.errors import SwipepayError


def _fail(exc: SwipepayError) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
    sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="swipepay")
def main() -> None:
    """swipepay: the card is read at the terminal, the payment is confirmed and the PIN typed on
    the cardholder's phone over NFC (patent CN103164911A)."""


@main.command()
@click.argument("home", type=click.Path(file_okay=False, path_type=Path), default="lab")
def init(home: Path) -> None:
    """Create a lab directory HOME: CA, keys, certificates, accounts, cards, phones."""
    from center.lab import create_lab

    try:
        lab = create_lab(home)
    except SwipepayError as exc:
        _fail(exc)
        return
    click.echo(f"created lab in {lab.root}")
    click.echo(f"  terminals: {', '.join(lab.terminals())}")
    click.echo(f"  cards:     {', '.join(lab.cards())}")
    click.echo(f"  phones:    {', '.join(f'{p} -> {c}' for p, c in lab.phones().items())}")
    click.echo("  secret files (keys, phone profiles, PINs) are mode 0600")


@main.command()
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Use (or create) this lab instead of a temporary one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the story.")
def demo(home: Path | None, as_json: bool) -> None:
    """Run every transaction type and the telling failures in one process, step by step."""
    from cli.demo import run_demo

    try:
        code = run_demo(home, as_json)
    except SwipepayError as exc:
        _fail(exc)
        return
    sys.exit(code)
