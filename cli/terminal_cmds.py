"""``swipepay terminal run``: the POS/ATM console (interactive, or one transaction per call).

Click and console I/O only: the transaction is :func:`drivers.runner.run_transaction` driving
:class:`firmware_sim.terminal.Terminal`; readers and links come from :mod:`drivers.registry`;
the center is :class:`drivers.host_tls.TlsHost` (mutual TLS, reversal queue on disk) or, with
``--center local``, the lab's center core in this process.  Heavy imports stay inside functions.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from swipepay.cli.main import fail
from swipepay.drivers.runner import Observer, RunEvent, StepBegan, Waiting
from swipepay.firmware_sim.errors import ConfigError, SwipepayError

if TYPE_CHECKING:
    from swipepay.center.lab import Lab
    from swipepay.drivers.runner import TxnReport
    from swipepay.firmware_sim.carddata import CardData
    from swipepay.firmware_sim.cards.spec import CardSpec
    from swipepay.firmware_sim.terminal import Order, TerminalConfig
    from swipepay.firmware_sim.transaction import Transaction

_log = logging.getLogger("swipepay.terminal")

CONFIG_FILE = "terminal.toml"
TYPES = ("purchase", "preauth", "completion", "withdrawal", "deposit", "balance")
#: ``--via`` names -> how a lab card is presented (the mock reader's ``via``).
VIAS = ("tap", "insert", "swipe")

#: Keys a terminal.toml may set -> the type of their value (specs as data).
CONFIG_KEYS: dict[str, type] = {
    "terminal_id": str,
    "merchant_id": str,
    "merchant_name": str,
    "card": str,
    "phone": str,
    "center": str,
    "card_timeout": float,
    "phone_timeout": float,
    "host_timeout": float,
    "confirm_timeout": float,
    "poll_interval_ms": int,
}
DEFAULTS: dict[str, Any] = {
    "terminal_id": "POS00001",
    "card": "mock:",
    "phone": "pcsc:Virtual PCD 00 01",
    "center": "127.0.0.1:8583",
    "card_timeout": 30.0,
    "phone_timeout": 30.0,
    "host_timeout": 15.0,
    "confirm_timeout": 60.0,
    "poll_interval_ms": 200,
}


def load_settings(home: Path, config: Path | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then ``HOME/terminal.toml`` (or ``--config``), then command-line options."""
    import tomllib

    path = config if config is not None else home / CONFIG_FILE
    from_file: dict[str, Any] = {}
    if config is not None or path.exists():
        try:
            from_file = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    settings = dict(DEFAULTS)
    for key, value in from_file.items():
        want = CONFIG_KEYS.get(key)
        if want is None:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(CONFIG_KEYS)})")
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be a {want.__name__}")
        settings[key] = value
    settings.update({k: v for k, v in given.items() if v is not None})
    return settings


# -- cards given on the command line -------------------------------------------------------


class GivenCardReader:
    """A card reader that "reads" card data already in hand (pasted tracks, --card-data)."""

    url = "given:"

    def __init__(self, card: CardData) -> None:
        self._card = card

    def read_card(self, timeout: float) -> CardData:
        return self._card

    def close(self) -> None:
        pass


def card_from_text(text: str, cards: Mapping[str, CardSpec]) -> CardData:
    """Pasted track data (``%B..?;..?`` or ``;..=..?``) or a lab card's PAN -> card data.

    A PAN alone is accepted only for a card of this lab (its tracks are then "swiped"): a real
    terminal does not authorize a bare number without expiry and service code.
    """
    from swipepay.firmware_sim.cards.spec import present
    from swipepay.firmware_sim.swipe_lines import SwipeSplitter

    text = text.strip()
    if text.isdigit():
        for spec in cards.values():
            if spec.pan == text:
                return present(spec, "swipe", {})
        raise ConfigError("that PAN is not a card of this lab; paste its track data instead")
    splitter = SwipeSplitter()
    swipes = splitter.feed(text + "\n") + splitter.end_of_swipe()
    if not swipes:
        raise ConfigError("not track data (expected %B...? and/or ;...=...?) nor a lab PAN")
    return swipes[0].card()  # SwipeError is a SwipepayError with a clear "swipe again" text


def card_choices(cards: Mapping[str, CardSpec]) -> list[tuple[str, str]]:
    """The lab's cards as (name, via) pairs, one per way each card can be presented."""
    from swipepay.firmware_sim.cards.spec import PRESENTATIONS

    return [
        (name, via)
        for name, spec in cards.items()
        for via in VIAS
        if PRESENTATIONS.get(via) in spec.interfaces
    ]


def resolve_card_choice(answer: str, cards: Mapping[str, CardSpec]) -> tuple[str | None, Any]:
    """A console answer -> ("mock URL", None) for a lab card, or (None, card data) for pasted
    data.  Accepts a number from the list, ``name``, ``name via``, tracks or a PAN."""
    choices = card_choices(cards)
    words = answer.split()
    if len(words) == 1 and words[0].isdigit() and 1 <= int(words[0]) <= len(choices):
        name, via = choices[int(words[0]) - 1]
        return f"mock:{name}?via={via}", None
    if words and words[0] in cards:
        via = words[1] if len(words) > 1 else cards[words[0]].default_presentation()
        if (words[0], via) not in choices:
            raise ConfigError(f"{words[0]} cannot be presented by {via!r}")
        return f"mock:{words[0]}?via={via}", None
    return None, card_from_text(answer, cards)


# -- the console's view of a running transaction ------------------------------------------


class Console:
    """Shows each step and what the terminal waits for, and for how long.

    The confirmation countdown comes every poll (200 ms): on a terminal it overwrites one line,
    elsewhere a line is printed when the wait changes or every 5 s.
    """

    def __init__(self, echo: Callable[[str], None], tty: bool) -> None:
        self.echo = echo
        self.tty = tty
        self._last_reason = ""
        self._last_at = 0.0
        self._open_line = False

    def __call__(self, event: RunEvent) -> None:
        from swipepay.firmware_sim.terminal import STEP_TEXT

        match event:
            case StepBegan(step=step):
                self._close_line()
                self.echo(f"  [{int(step)}] {STEP_TEXT[step]}")
                _log.debug("step %d %s", int(step), step.name.lower())
                self._last_reason = ""
            case Waiting(what=reason, remaining_s=remaining):
                left = "" if remaining is None else f" ({remaining:.1f} s left)"
                text = f"{reason}{left}"
                now = time.monotonic()
                if self.tty and reason == self._last_reason:
                    click.echo(f"\r      waiting for {text}   ", nl=False)
                    self._open_line = True
                elif reason != self._last_reason or now - self._last_at >= 5.0:
                    self._close_line()
                    self.echo(f"      waiting for {text}")
                    self._last_at = now
                self._last_reason = reason

    def _close_line(self) -> None:
        if self._open_line:
            click.echo("")
            self._open_line = False


def _quiet(event: RunEvent) -> None:
    return None


# -- one transaction -------------------------------------------------------------------------


@dataclass
class Bench:
    """What one terminal run talks to: its lab, config, host, phone link and card reader URL."""

    lab: Lab
    config: TerminalConfig
    settings: dict[str, Any]
    host: Any
    link: Any

    def close(self) -> None:
        for part in (self.link, self.host):
            close = getattr(part, "close", None)
            if close is not None:
                close()


def _open_bench(home: Path, settings: dict[str, Any]) -> Bench:
    from swipepay.center.lab import Lab
    from swipepay.drivers.registry import open_phone_link

    lab = Lab(home)
    tid = settings["terminal_id"]
    config = lab.terminal_config(tid)
    overrides = {k: settings[k] for k in ("merchant_id", "merchant_name") if k in settings}
    config = replace(
        config,
        poll_interval_ms=settings["poll_interval_ms"],
        confirm_timeout_ms=int(settings["confirm_timeout"] * 1000),
        host_timeout_ms=int(settings["host_timeout"] * 1000),
        **overrides,
    )
    host = _open_host(lab, tid, settings["center"], settings["host_timeout"])
    phone_url = settings["phone"]
    try:
        if phone_url.startswith("mock:"):
            link = _mock_phone_link(lab, phone_url)
        else:
            link = open_phone_link(phone_url)
    except BaseException:
        host.close()
        raise
    return Bench(lab, config, settings, host, link)


def _open_host(lab: Lab, terminal_id: str, center: str, host_timeout: float) -> Any:
    if center == "local":
        from swipepay.center.core import Center
        from swipepay.center.local_host import LocalHost

        core = Center.open(lab.db_path, lab.center_keys())
        local = LocalHost(core)
        local.close = core.close  # type: ignore[attr-defined]
        return local
    from swipepay.drivers.host_tls import TlsHost
    from swipepay.firmware_sim.address import parse_address

    host, port = parse_address(center, "--center", alternative=" or 'local'")
    return TlsHost.for_lab(
        lab.root, terminal_id, host, port, reversal_timeout=min(5.0, host_timeout)
    )


def _mock_phone_link(lab: Lab, url: str) -> Any:
    """``mock:<phone>``: the lab's phone in this process, its user confirming with the lab PIN
    (a bench without NFC hardware; the PIN comes from the lab's secrets, never a command line)."""
    from swipepay.drivers.base import DriverContext
    from swipepay.drivers.mock_phone import MockField
    from swipepay.drivers.registry import open_phone_link
    from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
    from swipepay.firmware_sim.phonelink.applet import PhoneApplet

    name, _, query = url.partition(":")[2].partition("?")
    field = MockField()
    if name:
        profile = lab.phone_profile(name)
        applet = PhoneApplet(profile.identity(), profile.dukpt())
        choice = Choice.DECLINE if "decline" in query else Choice.CONFIRM
        card = profile.card

        def pin() -> str:
            return lab.pins()[card]

        saved = [profile.counter]

        class PersistingPhone(Phone):
            """Writes the DUKPT counter back at once: a counter must never be used twice."""

            def process(self, apdu: bytes) -> bytes:
                response = super().process(apdu)
                counter = self.applet.dukpt.counter
                if counter != saved[0] and profile.path is not None:
                    profile.with_counter(counter).save(profile.path)
                    saved[0] = counter
                return response

        field.place(PersistingPhone(applet, ScriptedUser(choice, pin), time.time))
    return open_phone_link("mock:", DriverContext(field=field))


def _preauth_path(lab: Lab, terminal_id: str) -> Path:
    return lab.root / "terminals" / terminal_id / "preauths.json"


def load_preauths(lab: Lab, terminal_id: str) -> dict[str, dict[str, Any]]:
    """Approved pre-authorizations not yet completed, by STAN (the terminal's own record)."""
    path = _preauth_path(lab, terminal_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} is malformed") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is malformed")
    return data


def _save_preauths(lab: Lab, terminal_id: str, data: dict[str, dict[str, Any]]) -> None:
    import os

    path = _preauth_path(lab, terminal_id)
    tmp = path.with_suffix(".tmp")
    # It holds PANs (needed to complete): owner-only, like the lab's other secret files.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    tmp.replace(path)


def _original(lab: Lab, terminal_id: str, stan: str | None) -> Transaction:
    from swipepay.firmware_sim.transaction import Transaction, TxnType

    pending = load_preauths(lab, terminal_id)
    if not pending:
        raise ConfigError(f"terminal {terminal_id} has no approved pre-authorization to complete")
    key = stan if stan is not None else sorted(pending)[-1]
    if key not in pending:
        have = ", ".join(sorted(pending))
        raise ConfigError(f"no approved pre-authorization with STAN {key} (have: {have})")
    fields = dict(pending[key])
    fields["type"] = TxnType(fields["type"])
    return Transaction(**fields)


def _remember(lab: Lab, order: Order, report: TxnReport) -> None:
    """Keep approved pre-auths for a later completion; forget a completed one."""
    from swipepay.firmware_sim.transaction import TxnType

    txn = report.outcome.txn
    if txn is None or not report.outcome.approved:
        return
    pending = load_preauths(lab, txn.terminal_id)
    if order.type is TxnType.PREAUTH:
        pending[txn.stan] = {
            "type": txn.type.value, "amount": txn.amount, "pan": txn.pan, "expiry": txn.expiry,
            "terminal_id": txn.terminal_id, "merchant_id": txn.merchant_id, "stan": txn.stan,
            "transmitted_at": txn.transmitted_at, "currency": txn.currency,
            "entry_mode": txn.entry_mode, "auth_code": report.outcome.auth_code,
        }  # fmt: skip
    elif order.type is TxnType.COMPLETION and order.original is not None:
        pending.pop(order.original.stan, None)
    else:
        return
    _save_preauths(lab, txn.terminal_id, pending)


def run_one(
    bench: Bench,
    order: Order,
    reader: Any,
    observe: Observer,
) -> dict[str, Any]:
    """Run one transaction; return the JSON result (the demo's per-transaction fields+)."""
    from swipepay.drivers.logsetup import transaction, txn_id
    from swipepay.drivers.runner import run_transaction
    from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
    from swipepay.firmware_sim.terminal import STEP_TEXT, Terminal

    lab, config = bench.lab, bench.config
    tid = config.terminal_id
    cert, key = lab.terminal_link_identity(tid)
    terminal = Terminal(config, TerminalLink(cert, key), lab.next_stan(tid))
    ident = txn_id(tid, terminal.next_stan % 1_000_000)
    queue = getattr(bench.host, "queue", None)
    queued_before = len(queue.pending()) if queue is not None else 0
    with transaction(ident):
        _log.info("%s %d on %s", order.type.value, order.amount, tid)
        try:
            report = run_transaction(
                terminal,
                order,
                reader=reader,
                link=bench.link,
                host=bench.host,
                now=datetime.now(UTC),
                card_timeout=bench.settings["card_timeout"],
                phone_timeout=bench.settings["phone_timeout"],
                observe=observe,
            )
        finally:
            lab.save_next_stan(tid, terminal.next_stan)
        out = report.outcome
        _log.info(
            "ending %s %s%s", out.ending.name, out.response_code or "-",
            f" reversal {report.reversal}" if report.reversal else "",
        )  # fmt: skip
    _remember(lab, order, report)
    txn = out.txn
    return {
        "txn_id": txn_id(tid, txn.stan) if txn else ident,
        "type": order.type.value,
        "amount": order.amount,
        "currency": txn.currency if txn else config.currency,
        "terminal": tid,
        "stan": txn.stan if txn else None,
        "ending": out.ending.name,
        "exit_code": out.ending.exit_code,
        "response_code": out.response_code,
        "auth_code": out.auth_code,
        "message": out.message,
        "available_balance": out.available_balance,
        "reversal": report.reversal,
        "reversals_queued_before": queued_before,
        "reversals_queued_after": len(queue.pending()) if queue is not None else 0,
        "polls": out.polls,
        "steps": [
            {"step": int(s), "name": s.name.lower(), "text": STEP_TEXT[s], "ms": round(ms, 3)}
            for s, ms in report.steps
        ],
        "total_ms": round(report.total_ms, 3),
        "apdu_count": report.apdu_count,
        "bytes_to_phone": report.bytes_to_phone,
        "bytes_from_phone": report.bytes_from_phone,
    }


def _order(
    lab: Lab, tid: str, type_name: str, amount_text: str | None, completes: str | None
) -> Order:
    from swipepay.firmware_sim.terminal import Order
    from swipepay.firmware_sim.transaction import TXN_TYPES, TxnType, parse_amount

    txn_type = TxnType(type_name)
    spec = TXN_TYPES[txn_type]
    if not spec.has_amount:
        if amount_text not in (None, "0", "0.00"):
            raise ConfigError(f"a {spec.label.lower()} has no amount")
        return Order(txn_type, 0)
    if amount_text is None:
        raise ConfigError(f"--amount is required for a {spec.label.lower()}")
    amount = parse_amount(amount_text)
    original = _original(lab, tid, completes) if txn_type is TxnType.COMPLETION else None
    return Order(txn_type, amount, original)


def _reader(bench: Bench, card_url: str, card_data: str | None, order: Order) -> Any:
    from swipepay.drivers.base import DriverContext
    from swipepay.drivers.registry import open_card_reader
    from swipepay.firmware_sim.transaction import TxnType

    if order.type is TxnType.COMPLETION:
        return None
    cards = bench.lab.cards()
    if card_data is not None:
        return GivenCardReader(card_from_text(card_data, cards))
    if card_url in ("mock:", "mock"):
        raise ConfigError(
            "with a mock: reader, name the card (mock:alice-visa?via=tap) or give --card-data"
        )
    reader = open_card_reader(card_url, DriverContext(cards=cards))
    if hasattr(reader, "amount"):
        reader.amount = order.amount
    return reader


def _render(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    from swipepay.firmware_sim.transaction import format_amount

    approved = result["ending"] == "APPROVED"
    verdict = f"{result['ending']} {result['response_code'] or ''}".strip()
    detail = f"auth {result['auth_code']}" if result["auth_code"] else result["message"]
    if result["type"] == "balance" and result["available_balance"] is not None:
        detail += f"; balance shown on the phone: {format_amount(result['available_balance'])}"
    if result["reversal"]:
        detail += f"; reversal {result['reversal']}"
    echo(
        "  -> " + click.style(verdict, fg="green" if approved else "yellow", bold=True)
        + (f" ({detail})" if detail else "")
        + f"  [{result['txn_id']}, {result['total_ms']:.0f} ms, exit code {result['exit_code']}]"
    )  # fmt: skip


# -- click ---------------------------------------------------------------------------------------


@click.group()
def terminal() -> None:
    """The payment terminal (POS or ATM): reads the card, talks to the phone and the center."""


@terminal.command("run")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default="lab",
              show_default=True, help="Lab directory (swipepay init).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help=f"TOML settings (default: HOME/{CONFIG_FILE} when it exists).")
@click.option("--terminal-id", help="Terminal ID (a terminal of the lab) [POS00001].")
@click.option("--card", "card_url", help="Card reader URL, e.g. pcsc:Virtual PCD 00 00, "
              "serial:/dev/ttyUSB0?proto=msr605, mock: (offer the lab's cards) [mock:].")
@click.option("--phone", "phone_url", help="Phone link URL, e.g. pcsc:Virtual PCD 00 01, "
              "nfcpy:udp:localhost:54321, mock:alice-phone [pcsc:Virtual PCD 00 01].")
@click.option("--center", help="Center HOST:PORT (TLS), or 'local' (in-process) [127.0.0.1:8583].")
@click.option("--type", "type_name", type=click.Choice(TYPES), help="One transaction, no menu.")
@click.option("--amount", help="Amount, e.g. 12.34 (not for a balance inquiry).")
@click.option("--completes", metavar="STAN", help="Completion: the pre-auth STAN [latest].")
@click.option("--card-data", help="Track data or a lab card's PAN instead of reading a card.")
@click.option("--json", "as_json", is_flag=True, help="One-shot: print the result as JSON.")
@click.option("--card-timeout", type=float, help="Seconds to wait for a card [30].")
@click.option("--phone-timeout", type=float, help="Seconds to wait for the phone [30].")
@click.option("--host-timeout", type=float, help="Seconds to wait for the center [15].")
@click.option("--confirm-timeout", type=float, help="Seconds the user has on the phone [60].")
def terminal_run(
    home: Path, config_path: Path | None, terminal_id: str | None, card_url: str | None,
    phone_url: str | None, center: str | None, type_name: str | None, amount: str | None,
    completes: str | None, card_data: str | None, as_json: bool, card_timeout: float | None,
    phone_timeout: float | None, host_timeout: float | None, confirm_timeout: float | None,
) -> None:
    """Run the terminal: a menu by default, one transaction with --type.

    \b
    Exit codes (one-shot), one per ending:
      0  APPROVED          13  NO_PHONE (none, or not bound to the card)
      10 DECLINED_BY_HOST  14  PHONE_GONE (left the field; approval reversed)
      11 DECLINED_BY_USER  15  LINK_ERROR (phone-link protocol or security failure)
      12 USER_TIMEOUT      16  HOST_UNAVAILABLE (reversal queued, sent on next connect)
                           17  CARD_ERROR (no card, unreadable card)
    Errors before a transaction starts (bad option, missing lab) use the error's own code.
    """
    given = {
        "terminal_id": terminal_id, "card": card_url, "phone": phone_url, "center": center,
        "card_timeout": card_timeout, "phone_timeout": phone_timeout,
        "host_timeout": host_timeout, "confirm_timeout": confirm_timeout,
    }  # fmt: skip
    try:
        settings = load_settings(home, config_path, given)
        if type_name is None and as_json:
            raise ConfigError("--json needs --type (one-shot mode)")
        bench = _open_bench(home, settings)
    except SwipepayError as exc:
        fail(exc)
        return
    try:
        if type_name is not None:
            code = _one_shot(bench, type_name, amount, completes, card_data, as_json)
        else:
            code = _interactive(bench)
    except SwipepayError as exc:
        fail(exc)
        return
    finally:
        bench.close()
    sys.exit(code)


def _one_shot(
    bench: Bench, type_name: str, amount: str | None, completes: str | None,
    card_data: str | None, as_json: bool,
) -> int:
    tid = bench.config.terminal_id
    order = _order(bench.lab, tid, type_name, amount, completes)
    reader = _reader(bench, bench.settings["card"], card_data, order)
    echo: Callable[[str], None] = (lambda s: None) if as_json else click.echo
    try:
        observe = _quiet if as_json else Console(echo, sys.stdout.isatty())
        result = run_one(bench, order, reader, observe)
    finally:
        if reader is not None:
            reader.close()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _render(result, echo)
    return int(result["exit_code"])


def _interactive(bench: Bench) -> int:
    from swipepay.firmware_sim.transaction import TXN_TYPES, TxnType

    cfg = bench.config
    click.echo(click.style(f"{cfg.merchant_name} — terminal {cfg.terminal_id} ({cfg.kind})",
                           bold=True))
    click.echo(f"  card reader {bench.settings['card']}, phone {bench.settings['phone']}, "
               f"center {bench.settings['center']}")
    last = 0
    while True:
        click.echo("")
        for n, name in enumerate(TYPES, 1):
            click.echo(f"  {n}. {TXN_TYPES[TxnType(name)].label}")
        try:
            answer = click.prompt("transaction (number or name, q to quit)", default="1").strip()
        except click.Abort:
            return last
        if answer.lower() in ("q", "quit", "exit"):
            return last
        by_number = answer.isdigit() and 1 <= int(answer) <= len(TYPES)
        name = TYPES[int(answer) - 1] if by_number else answer
        if name not in TYPES:
            click.echo(f"  no such transaction: {answer}")
            continue
        try:
            last = _interactive_one(bench, name)
        except click.Abort:
            return last
        except SwipepayError as exc:
            click.echo(click.style("  error: ", fg="red") + str(exc))


def _interactive_one(bench: Bench, name: str) -> int:
    from swipepay.firmware_sim.transaction import TXN_TYPES, TxnType

    spec = TXN_TYPES[TxnType(name)]
    amount = click.prompt("amount", default="12.34") if spec.has_amount else None
    completes = None
    if name == "completion":
        pending = load_preauths(bench.lab, bench.config.terminal_id)
        click.echo("  open pre-authorizations: " + (", ".join(
            f"STAN {s} ({v['amount'] / 100:.2f})" for s, v in sorted(pending.items())) or "none"))
        completes = click.prompt("complete STAN", default=max(pending) if pending else "")
    order = _order(bench.lab, bench.config.terminal_id, name, amount, completes)
    card_url = bench.settings["card"]
    reader: Any = None
    if order.type is not TxnType.COMPLETION:
        if card_url in ("mock:", "mock"):
            reader = _ask_card(bench)
        else:
            reader = _reader(bench, card_url, None, order)
            wait = bench.settings["card_timeout"]
            click.echo(f"  present the card to {card_url} (up to {wait:.0f} s)")
    if reader is not None and hasattr(reader, "amount"):
        reader.amount = order.amount
    try:
        result = run_one(bench, order, reader, Console(click.echo, sys.stdout.isatty()))
    finally:
        if reader is not None:
            reader.close()
    _render(result, click.echo)
    return int(result["exit_code"])


def _ask_card(bench: Bench) -> Any:
    """The mock reader's menu: swipe / insert / tap a lab card, or paste tracks or a PAN."""
    from swipepay.drivers.base import DriverContext
    from swipepay.drivers.registry import open_card_reader

    cards = bench.lab.cards()
    for n, (name, via) in enumerate(card_choices(cards), 1):
        click.echo(f"  {n:2}. {via:<6} {name}")
    while True:
        answer = click.prompt("card (number, name [tap|insert|swipe], track data or PAN)")
        try:
            url, data = resolve_card_choice(answer, cards)
        except SwipepayError as exc:
            click.echo(f"  {exc}")
            continue
        if url is not None:
            return open_card_reader(url, DriverContext(cards=cards))
        return GivenCardReader(data)


# -- swipepay card serve (a row in the `card` group of cli/reader_cmds.py) -------------------


@click.command("serve")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default="lab",
              show_default=True, help="Lab directory.")
@click.option("--card", "name", required=True, help="Lab card name, e.g. alice-visa.")
@click.option("--via", type=click.Choice(["insert", "tap"]), default=None,
              help="Contact (insert) or contactless (tap) [tap when the card has it].")
@click.option("--vpcd", "address", default="127.0.0.1:35963", show_default=True,
              help="vpcd slot HOST:PORT (35963 = Virtual PCD 00 00).")
def card_serve(home: Path, name: str, via: str | None, address: str) -> None:
    """Put a lab card on a vpcd slot (inserted while this runs; removed on exit or SIGTERM)."""
    import signal
    import threading

    from swipepay.center.lab import Lab
    from swipepay.drivers.virtual_cards import serve_card
    from swipepay.drivers.vpcd import slot_address

    try:
        cards = Lab(home).cards()
        if name not in cards:
            raise ConfigError(f"no card named {name!r} (lab cards: {', '.join(cards)})")
        host, port = slot_address(address)
        interface = {"insert": "contact", "tap": "contactless", None: None}[via]
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        click.echo(f"card {name} on vpcd {host}:{port} ({via or 'default interface'})", err=True)
        serve_card(cards[name], host, port, stop, interface=interface)
    except SwipepayError as exc:
        fail(exc)
    except KeyboardInterrupt:
        pass
