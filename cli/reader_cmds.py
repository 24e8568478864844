"""``swipepay readers`` and ``swipepay card read``: what card readers this machine has, and what the
terminal would get from a card in one of them.  Heavy stacks are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from swipepay.cli.main import fail
from swipepay.cli.params import Seconds
from swipepay.firmware_sim.errors import ConfigError, SwipepayError


@click.command()
def readers() -> None:
    """List PC/SC readers (card present or not), serial ports and nfcpy devices."""
    from swipepay.drivers.discovery import discover

    for family in discover():
        click.echo(click.style(family.title, bold=True))
        if family.problem is not None:
            click.echo(f"  {family.problem}")
        elif not family.devices:
            click.echo(f"  ({family.empty})")
        for device in family.devices:
            click.echo(f"  {device.url}  ({device.detail})")


@click.group()
def card() -> None:
    """Read user cards (`card read`) and serve lab cards on a vpcd slot (`card serve`)."""


def _mask(text: str, pan: str, show_pan: bool) -> str:
    from swipepay.firmware_sim.carddata import mask_pan

    if show_pan or not pan:
        return text
    return text.replace(pan, mask_pan(pan))


@card.command("read")
@click.option("--reader", "url", required=True, help="Card reader URL, e.g. pcsc:ACR122.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--show-pan", is_flag=True, help="Print the full PAN (masked 6+4 by default).")
@click.option("--trace", is_flag=True, help="Print the APDU exchanges (PC/SC readers).")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Lab whose cards mock: URLs use.",
)
@click.option(
    "--timeout", default=30.0, show_default=True, type=Seconds(), help="Seconds to wait for a card."
)
def card_read(
    url: str, as_json: bool, show_pan: bool, trace: bool, home: Path | None, timeout: float
) -> None:
    """Wait for a card and print what the terminal would use from it."""
    try:
        _card_read(url, as_json, show_pan, trace, home, timeout)
    except SwipepayError as exc:
        fail(exc)


def _card_read(
    url: str, as_json: bool, show_pan: bool, trace: bool, home: Path | None, timeout: float
) -> None:
    from swipepay.drivers.base import DriverContext
    from swipepay.drivers.registry import open_card_reader

    context = DriverContext()
    if home is not None:
        from swipepay.center.lab import Lab

        context = DriverContext(cards=Lab(home).cards())
    elif url.startswith("mock:"):
        raise ConfigError("mock: card URLs need --home LAB (the lab's cards)")
    reader = open_card_reader(url, context)
    if not as_json:
        click.echo(f"waiting for a card on {url} (up to {timeout:.0f} s)...", err=True)
    try:
        data = reader.read_card(timeout)
    finally:
        reader.close()
    last = getattr(reader, "last", None)
    exchanges: list[tuple[bytes, bytes]] = list(getattr(last, "trace", []) or [])
    out: dict[str, Any] = {
        "pan": data.pan if show_pan else (data.masked_pan if data.pan else ""),
        "expiry": data.expiry,
        "name": data.name,
        "service_code": data.service_code,
        "source": data.source,
        "entry_mode": data.entry_mode,
        "aid": data.aid.hex().upper() if data.aid else None,
        "uid": data.uid.hex().upper() if data.uid else None,
        "card_id": _mask(data.card_id.decode("ascii"), data.pan, show_pan),
    }
    if last is not None:
        out["atr"] = last.atr.hex().upper()
        out["mode"] = last.mode
    if trace:
        out["trace"] = [
            {
                "command": _mask(c.hex().upper(), data.pan, show_pan),
                "response": _mask(r.hex().upper(), data.pan, show_pan),
            }
            for c, r in exchanges
        ]
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if trace:
        if not exchanges:
            click.echo("(this driver gives no APDU trace)")
        for item in out["trace"]:
            click.echo(f">> {item['command']}")
            click.echo(f"<< {item['response']}")
    for key, value in out.items():
        if key != "trace" and value not in (None, ""):
            click.echo(f"{key:>12}: {value}")


def _add_card_serve() -> None:
    """``swipepay card serve`` lives with the terminal console (cli/terminal_cmds.py)."""
    from swipepay.cli.terminal_cmds import card_serve

    card.add_command(card_serve)


_add_card_serve()
