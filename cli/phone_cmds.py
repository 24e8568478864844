"""``swipepay phone run``, ``swipepay conformance`` and ``swipepay trace``.

Click commands only: the phone program is :class:`cli.app.phone_app.PhoneApp`, the checks live in
:mod:`firmware_sim.conformance`, traces are read by :mod:`firmware_sim.trace_view`; links come
from :mod:`drivers.registry`.  Heavy imports happen inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from swipepay.cli.main import fail
from swipepay.cli.params import Seconds
from swipepay.cli.screens import wanted as _screens_wanted
from swipepay.firmware_sim.errors import ConfigError, SwipepayError

if TYPE_CHECKING:
    from swipepay.firmware_sim.phonelink.applet import PaymentShown, ResultShown


def _check_pin(pin: str, where: str) -> str:
    from swipepay.firmware_sim.pinblock import pin_well_formed

    if not pin_well_formed(pin):
        raise ConfigError(f"the PIN from {where} must be 4 to 12 digits")  # never echo it
    return pin


def pin_from_env(var: str) -> Callable[[], str]:
    """A PIN source reading ``var`` when the PIN is needed (checked once at start-up)."""
    if var not in os.environ:
        raise ConfigError(f"environment variable {var} is not set")
    _check_pin(os.environ[var], f"${var}")
    return lambda: _check_pin(os.environ.get(var, ""), f"${var}")


#: Bytes read from a PIN file at most: 4 to 12 digits and a line end, nothing near this.
PIN_FILE_LIMIT = 64


def pin_from_file(path: Path) -> Callable[[], str]:
    """A PIN source reading a file that only its owner may read (like an ssh key); the file is
    checked again (owner-only, a regular file, small, a well-formed PIN) each time it is read."""
    from swipepay.drivers.store.secretfile import read_private

    def read() -> str:
        try:
            text = read_private(path, PIN_FILE_LIMIT).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"PIN file {path} is not text") from None
        return _check_pin(text.strip(), str(path))

    read()
    return read


def _echo_result(shown: ResultShown, card: str) -> None:
    from swipepay.cli.app.phone_app import decline_reason

    reason = decline_reason(shown.response_code, card)
    verdict = "APPROVED" if reason is None else "DECLINED"
    auth = f" (auth {shown.auth_code})" if shown.auth_code else ""
    why = f": {reason}" if reason else ""
    balance = ""
    if shown.balance is not None:  # opened here from the center's sealed balance
        from swipepay.firmware_sim.transaction import format_amount

        currency = shown.currency or "978"
        balance = f"; balance {format_amount(shown.balance, currency)}"
    click.echo(f"  result: {verdict} {shown.response_code}{auth}{why}{balance}")


@click.group()
def phone() -> None:
    """The cardholder's phone (the card side of the NFC link)."""


@phone.command("run")
@click.option("--profile", "profile_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Phone profile (lab phones/).")
@click.option("--link", "url", required=True,
              help="Where to serve: vpcd:127.0.0.1:35964 (vpcd slot Virtual PCD 00 01, "
              "for a pcsc: terminal) or tcp:127.0.0.1:7000.")
@click.option("--auto-confirm", is_flag=True, help="Confirm every payment without asking.")
@click.option("--pin-env", metavar="VAR", help="With --auto-confirm: the PIN is in $VAR.")
@click.option("--pin-file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --auto-confirm: the PIN is in this file (mode 600).")
@click.option("--decline", is_flag=True, help="Decline every payment without asking.")
@click.option("--once", is_flag=True, help="Stop after the first session.")
@click.option("--timeout", default=60.0, show_default=True, type=Seconds(),
              help="Seconds the user has to act.")
@click.option("--aid", default="F0535750415901", show_default=True,
              help="The AID the phone answers to (hex; the terminal's must match).")
@click.option("--line", "line_mode", is_flag=True,
              help="Plain prompts even on a terminal (default there: the full-screen phone).")
def phone_run(
    profile_path: Path, url: str, auto_confirm: bool, pin_env: str | None,
    pin_file: Path | None, decline: bool, once: bool, timeout: float, aid: str,
    line_mode: bool,
) -> None:
    """Serve the phone applet on a link until interrupted (or one session with --once).

    The PIN is never taken from the command line (other users see it in `ps`).
    """
    try:
        _phone_run(profile_path, url, auto_confirm, pin_env, pin_file, decline, once, timeout,
                   aid, line_mode)
    except SwipepayError as exc:
        fail(exc)


def _phone_run(
    profile_path: Path, url: str, auto_confirm: bool, pin_env: str | None,
    pin_file: Path | None, decline: bool, once: bool, timeout: float, aid: str,
    line_mode: bool = False,
) -> None:
    from swipepay.cli.app.phone_app import PhoneApp, currency_letters
    from swipepay.cli.line_input import LineInput
    from swipepay.cli.phone_line import LinePhoneUI
    from swipepay.drivers.registry import open_phone_server
    from swipepay.drivers.store.phone_store import PhoneStore
    from swipepay.firmware_sim.phone import Choice, ScriptedUser
    from swipepay.firmware_sim.phonelink.protocol import parse_aid

    if auto_confirm and decline:
        raise ConfigError("--auto-confirm and --decline exclude each other")
    if (pin_env or pin_file) and not auto_confirm:
        raise ConfigError("--pin-env / --pin-file go with --auto-confirm")
    if auto_confirm and bool(pin_env) == bool(pin_file):
        raise ConfigError("--auto-confirm needs exactly one of --pin-env VAR or --pin-file FILE")
    selected_by = parse_aid(aid)
    store = PhoneStore(profile_path)
    if _screens_wanted(auto_confirm, decline, line_mode):
        from swipepay.cli.screens.phone_screen import run_phone_screen

        last = run_phone_screen(store, url, timeout, once, aid=selected_by)
        click.echo(f"stopped (last: {last})" if last else "stopped")
        return

    class EchoingUser(ScriptedUser):
        def on_payment(self, shown: PaymentShown) -> None:
            whole, cents = divmod(shown.amount, 100)
            click.echo(f"PAY {shown.merchant_name} ({shown.terminal_id}) {shown.txn_type} "
                       f"{whole}.{cents:02d} {currency_letters(shown.currency)} "
                       f"-> {self.choice.value}")
            super().on_payment(shown)

        def on_result(self, shown: ResultShown) -> None:
            _echo_result(shown, store.profile.card)
            super().on_result(shown)

    lines: LineInput | None = None
    app: PhoneApp[Any]
    if auto_confirm:
        source = pin_from_env(pin_env) if pin_env else pin_from_file(pin_file)  # type: ignore[arg-type]
        app = PhoneApp(store, EchoingUser(Choice.CONFIRM, source), aid=selected_by)
    elif decline:
        app = PhoneApp(store, EchoingUser(Choice.DECLINE), aid=selected_by)
    else:
        lines = LineInput(sys.stdin.fileno())
        ui = LinePhoneUI(lines)
        app = PhoneApp.attended(store, ui, timeout, aid=selected_by)
        ui.attach(app.user)
    profile = app.profile

    server = open_phone_server(url)
    where = url
    address = getattr(server, "address", None)
    if isinstance(address, tuple):
        where = f"{url.partition(':')[0]}:{address[0]}:{address[1]}"
    click.echo(f"phone {profile.name} (card {profile.card}) listening on {where}")
    try:
        app.serve(server, once=once)
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.close()
        if lines is not None:
            lines.restore()


def _conformance_context(
    home: Path, card: str | None, terminal: str | None, aid: str | None
) -> Any:
    from swipepay.center.lab import Lab
    from swipepay.firmware_sim.conformance import Context
    from swipepay.firmware_sim.phonelink.protocol import parse_aid

    lab = Lab(home)
    cards = lab.cards()
    bound = lab.phones()
    if card is None:
        card = next(iter(bound.values()), None)
        if card is None:
            raise ConfigError(f"{home} has no phone bound to a card")
    spec = cards.get(card)
    if spec is None:
        raise ConfigError(f"no card {card!r} in {home} (cards: {', '.join(cards)})")
    if terminal is None:
        terminal = next(iter(lab.terminals()), None)
        if terminal is None:
            raise ConfigError(f"{home} has no terminal")
    cert, key = lab.terminal_link_identity(terminal)
    phone_key = None
    for name, bound_card in bound.items():
        if bound_card == card:
            phone_key = lab.phone_profile(name).identity().signing_key.public_key()
    return Context(
        certificate=cert, signing_key=key, ca_key=lab.ca_key(), ca_key_index=cert.ca_key_index,
        pan=spec.pan, expiry=spec.expiry, now=int(time.time()), phone_key=phone_key,
        aid=lab.aid if aid is None else parse_aid(aid),
    )


@click.command()
@click.option("--link", "url", required=True, help="Phone link, e.g. tcp:127.0.0.1:7000.")
@click.option("--home", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Lab directory (terminal certificate, CA, cards).")
@click.option("--card", help="Card the phone is bound to (default: the first bound card).")
@click.option("--terminal", "terminal_id", help="Terminal ID whose certificate is used.")
@click.option("--check", "checks", multiple=True, help="Run only this check (repeatable).")
@click.option("--connect-timeout", default=30.0, show_default=True, type=Seconds(),
              help="Seconds to wait for a phone in the field.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Record every APDU to this JSON-lines file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--aid", help="The AID to SELECT (hex) [the lab's aid, F0535750415901].")
def conformance(
    url: str, home: Path, card: str | None, terminal_id: str | None, checks: tuple[str, ...],
    connect_timeout: float, trace_path: Path | None, as_json: bool, aid: str | None,
) -> None:
    """Run the phone-link checks against whatever phone answers on LINK.

    The last check is a full purchase: the phone's user must confirm it (run the emulator
    with --auto-confirm to test unattended).
    """
    try:
        code = _conformance(url, home, card, terminal_id, list(checks), connect_timeout,
                            trace_path, as_json, aid)
    except SwipepayError as exc:
        fail(exc)
        return
    sys.exit(code)


def _conformance(
    url: str, home: Path, card: str | None, terminal_id: str | None, names: list[str],
    connect_timeout: float, trace_path: Path | None, as_json: bool, aid: str | None,
) -> int:
    from swipepay.drivers.registry import open_phone_link
    from swipepay.drivers.trace import TraceWriter, TracingLink
    from swipepay.firmware_sim.conformance import CheckResult, run_check, select_checks

    suite = select_checks(names)
    ctx = _conformance_context(home, card, terminal_id, aid)
    link = open_phone_link(url)
    trace_file = None
    if trace_path is not None:
        try:
            trace_file = trace_path.open("w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write trace {trace_path}: {exc.strerror}") from None
        link = TracingLink(link, TraceWriter(trace_file))
    results: list[CheckResult] = []
    connected = False
    try:
        for check in suite:
            if not connected:
                if not as_json:
                    click.echo(f"waiting up to {connect_timeout:.0f} s for a phone on {url}",
                               err=True)
                try:
                    link.connect(connect_timeout)
                except SwipepayError as exc:
                    if not results:
                        raise
                    results.append(CheckResult(check.name, check.sends, check.expected, "",
                                               False, f"link: {exc}", True))
                    continue
                connected = True
            if check.name == "transaction" and not as_json:
                click.echo("transaction: confirm the payment on the phone within "
                           f"{ctx.max_polls * ctx.poll_interval:.0f} s "
                           "(the emulator does it with --auto-confirm)", err=True)
            result = run_check(check, ctx, link.transmit, time.sleep)
            results.append(result)
            if result.link_broken:
                link.disconnect()
                connected = False
    finally:
        if connected:
            link.disconnect()
        if trace_file is not None:
            trace_file.close()
    failed = [r for r in results if not r.passed]
    if as_json:
        click.echo(json.dumps({
            "link": url,
            "passed": not failed,
            "checks": [r.__dict__ for r in results],
        }, indent=2))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            mark = click.style("pass", fg="green") if r.passed else click.style("FAIL", fg="red")
            click.echo(f"{mark}  {r.name:<{width}}  expected {r.expected:<10} seen {r.seen}")
            detail = f"; {r.detail}" if r.detail else ""
            click.echo(f"      {'':<{width}}  sent: {r.sends}{detail}")
        click.echo(f"{len(results) - len(failed)}/{len(results)} checks passed")
    return 1 if failed else 0


#: Largest trace read (a conformance run's is tens of KB; every line is parsed and shown).
TRACE_LIMIT = 64 << 20


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mermaid", is_flag=True, help="Print a Mermaid sequence diagram instead.")
def trace(file: Path, mermaid: bool) -> None:
    """Pretty-print an APDU trace (from `swipepay conformance --trace` or a tracing link)."""
    from swipepay.drivers.store.userfile import read_regular
    from swipepay.firmware_sim.trace_view import parse_trace, render_mermaid, render_table

    try:
        try:
            text = read_regular(file, "trace", TRACE_LIMIT).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"trace {file} is not UTF-8 text: {exc.reason}") from None
        records = parse_trace(text)
    except SwipepayError as exc:
        fail(exc)
        return
    click.echo(render_mermaid(records) if mermaid else render_table(records))
