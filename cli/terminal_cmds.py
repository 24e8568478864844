"""``swipepay terminal run``: the POS/ATM console (interactive, or one transaction per call).

Arguments, prompts and rendering only: the terminal program is
:class:`cli.app.terminal_app.TerminalApp` (its settings in :mod:`cli.app.terminal_settings`),
which runs each transaction and keeps the terminal's state.  Heavy imports stay inside functions.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from swipepay.cli.app.terminal_settings import CONFIG_FILE, TerminalSettings, load_settings
from swipepay.cli.main import fail
from swipepay.cli.params import Seconds
from swipepay.cli.screens import wanted as _screens_wanted
from swipepay.drivers.runner import Observer, RunEvent, StepBegan, Waiting
from swipepay.firmware_sim.errors import ConfigError, SwipepayError

if TYPE_CHECKING:
    from swipepay.cli.app.terminal_app import CenterConnection, TerminalApp, TerminalResult
    from swipepay.drivers.base import CardReader, PhoneLink
    from swipepay.firmware_sim.carddata import CardData
    from swipepay.firmware_sim.cards.spec import CardSpec
    from swipepay.firmware_sim.terminal import Order

_log = logging.getLogger("swipepay.terminal")

TYPES = ("purchase", "preauth", "completion", "withdrawal", "deposit", "balance")
#: ``--via`` names -> how a lab card is presented (the mock reader's ``via``).
VIAS = ("tap", "insert", "swipe")


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

#: What the console says when a step of the method begins (hardware_notes/design.md §1), in
#: the present tense: the line is printed as the step happens, before its outcome is known.
STEP_NOW: dict[int, str] = {
    1: "reading the card (user identification)",
    2: "building the transaction",
    3: "connecting to the phone with the user-ID token; the phone verifies this terminal",
    4: "sending the encrypted payment request to the phone",
    5: "the user confirms and types the PIN on the phone (or declines)",
    6: "sending ID + transaction + confirmation to the center",
    7: "center's result received",
    8: "forwarding the result to the phone; disconnecting",
}


class Console:
    """Shows each step and what the terminal waits for, and for how long.

    The confirmation countdown comes every poll (200 ms): on a terminal it overwrites one line,
    elsewhere a line is printed when the wait changes or every 5 s.
    """

    def __init__(
        self, echo: Callable[[str], None], tty: bool, card_hint: str | None = None
    ) -> None:
        self.echo = echo
        self.tty = tty
        #: Where and how long to present the card (said when step 1 begins).
        self.card_hint = card_hint
        self._last_reason = ""
        self._last_at = 0.0
        self._open_line = False

    def __call__(self, event: RunEvent) -> None:
        from swipepay.firmware_sim.terminal import Step

        match event:
            case StepBegan(step=step):
                self._close_line()
                text = STEP_NOW[int(step)]
                if step is Step.READ_CARD and self.card_hint:
                    text = f"present the card {self.card_hint}"
                self.echo(f"  [{int(step)}] {text}")
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
class Session:
    """A terminal application with the center and the phone link its settings name."""

    app: TerminalApp
    host: CenterConnection
    link: PhoneLink

    @classmethod
    def open(cls, home: Path, settings: TerminalSettings) -> Session:
        from swipepay.cli.app.terminal_app import TerminalApp

        app = TerminalApp.open(home, settings)
        try:
            host = app.open_center()
            try:
                return cls(app, host, app.open_phone_link())
            except BaseException:
                host.close()
                raise
        except BaseException:
            app.close()
            raise

    def close(self) -> None:
        close = getattr(self.link, "close", None)  # only some links hold a device open
        if close is not None:
            close()
        self.host.close()
        self.app.close()

    def run(self, order: Order, reader: CardReader | None, observe: Observer) -> dict[str, Any]:
        """Run one transaction; return the JSON result (the demo's per-transaction fields+)."""
        result = self.app.run(order, reader=reader, link=self.link, host=self.host,
                              observe=observe)  # fmt: skip
        out = result_json(result)
        txn = result.outcome.txn
        names = [n for n, spec in self.app.lab.cards().items() if txn and spec.pan == txn.pan]
        out["card"] = names[0] if names else None
        out["home"] = str(self.app.lab.root)
        return out


def result_json(result: TerminalResult) -> dict[str, Any]:
    """The fields ``terminal run --json`` prints for one transaction."""
    from swipepay.firmware_sim.terminal import STEP_TEXT

    out, report, txn = result.outcome, result.report, result.outcome.txn
    return {
        "txn_id": result.txn_id,
        "type": result.order.type.value,
        "amount": result.order.amount,
        "currency": result.currency,
        "terminal": result.terminal_id,
        "stan": txn.stan if txn else None,
        "ending": out.ending.name,
        "exit_code": out.ending.exit_code,
        "response_code": out.response_code,
        "auth_code": out.auth_code,
        "message": out.message,
        "reversal": report.reversal,
        "reversals_queued_before": result.reversals_queued_before,
        "reversals_queued_after": result.reversals_queued_after,
        "center": result.center,
        "centers_skipped": list(result.centers_skipped),
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


def _reader(session: Session, card_data: str | None, order: Order) -> CardReader | None:
    """The one-shot reader: none for a completion, the given data, or the settings' reader."""
    from swipepay.firmware_sim.transaction import TxnType

    if order.type is TxnType.COMPLETION:
        return None
    if card_data is not None:
        return GivenCardReader(card_from_text(card_data, session.app.lab.cards()))
    card_url = session.app.settings.card
    if card_url in ("mock:", "mock"):
        raise ConfigError(
            "with a mock: reader, name the card (mock:alice-visa?via=tap) or give --card-data"
        )
    return session.app.open_reader(card_url, order)


def _render(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    from swipepay.center.response_codes import describe

    approved = result["ending"] == "APPROVED"
    code = result["response_code"]
    verdict = f"{result['ending']} {code or ''}".strip()
    if result["auth_code"]:
        detail = f"auth {result['auth_code']}"
    elif code and result["ending"] == "DECLINED_BY_HOST":
        # The table's words, never field 44 (ISO 8583 cuts it at 25 characters).
        row = describe(code)
        detail = f"{row.text[0].lower()}{row.text[1:]}"
        if code == "75":
            from swipepay.cli.app.phone_app import unblock_command

            home = str(result.get("home", "LAB"))
            detail += f"; reset the tries with `{unblock_command(result.get('card'), home)}`"
    else:
        detail = result["message"]
    if result["type"] == "balance" and approved:
        detail += "; balance shown on the phone"  # sealed for it: the terminal cannot read it
    if result["reversal"]:
        detail += f"; reversal {result['reversal']}"
    echo(
        "  -> " + click.style(verdict, fg="green" if approved else "yellow", bold=True)
        + (f" ({detail})" if detail else "")
        + f"  [{result['txn_id']}, {result['total_ms']:.0f} ms, exit code {result['exit_code']}]"
    )  # fmt: skip
    skipped = result.get("centers_skipped")
    if skipped and result.get("center"):  # failover: say where it went and what to look at
        echo(f"  center {result['center']} answered; skipped {'; '.join(skipped)} — check "
             "that center (`swipepay center serve` there), or take it out of --center")  # fmt: skip


# -- click ---------------------------------------------------------------------------------------


def _default(key: str) -> str:
    """``[default: 30]`` for a setting (click's own show_default format), from
    :class:`TerminalSettings`: options that a terminal.toml may set have no click default."""
    value = getattr(TerminalSettings(), key)
    return f"[default: {value:g}]" if isinstance(value, float) else f"[default: {value}]"


@click.group()
def terminal() -> None:
    """The payment terminal (POS or ATM): reads the card, talks to the phone and the center."""


@terminal.command("run")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default="lab",
              show_default=True, help="Lab directory (swipepay init).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help=f"TOML settings.  [default: HOME/{CONFIG_FILE} when it exists]")
@click.option("--terminal-id",
              help=f"Terminal ID (a terminal of the lab).  {_default('terminal_id')}")
@click.option("--card", "card_url", help="Card reader URL, e.g. pcsc:Virtual PCD 00 00, "
              "serial:/dev/ttyUSB0?proto=msr605, mock: (offer the lab's cards), "
              f"mock:alice-visa?via=tap.  {_default('card')}")
@click.option("--phone", "phone_url", help="Phone link URL, e.g. pcsc:Virtual PCD 00 01, "
              f"tcp:127.0.0.1:7000, nfcpy:udp:localhost:54321, mock:alice-phone.  "
              f"{_default('phone')}")
@click.option("--center", help="Center HOST:PORT (TLS); several comma-separated, tried in "
              "order (one that refuses, fails TLS or does not answer is skipped); or 'local' "
              f"(in-process).  {_default('center')}")
@click.option("--type", "type_name", type=click.Choice(TYPES), help="One transaction, no menu.")
@click.option("--line", "line_mode", is_flag=True,
              help="The menu as plain prompts even on a terminal (default there: full screen).")
@click.option("--amount", help="Amount, e.g. 12.34 (not for a balance inquiry).")
@click.option("--completes", metavar="STAN",
              help="Completion: the pre-auth STAN.  [default: the latest]")
@click.option("--card-data", help="Track data or a lab card's PAN instead of reading a card.")
@click.option("--json", "as_json", is_flag=True, help="One-shot: print the result as JSON.")
@click.option("--card-timeout", type=Seconds(),
              help=f"Seconds to wait for a card.  {_default('card_timeout')}")
@click.option("--phone-timeout", type=Seconds(),
              help=f"Seconds to wait for the phone.  {_default('phone_timeout')}")
@click.option("--host-timeout", type=Seconds(),
              help=f"Seconds to wait for the center.  {_default('host_timeout')}")
@click.option("--confirm-timeout", type=Seconds(),
              help=f"Seconds the user has on the phone.  {_default('confirm_timeout')}")
@click.option("--aid", help="Phone-link AID, hex.  [default: the lab's aid, F0535750415901]")
def terminal_run(
    home: Path, config_path: Path | None, terminal_id: str | None, card_url: str | None,
    phone_url: str | None, center: str | None, type_name: str | None, amount: str | None,
    completes: str | None, card_data: str | None, as_json: bool, card_timeout: float | None,
    phone_timeout: float | None, host_timeout: float | None, confirm_timeout: float | None,
    aid: str | None,
    line_mode: bool,
) -> None:
    """Run the terminal: a menu by default, one transaction with --type.

    The center must answer before the card is read: when it cannot be reached the run ends at
    once (HOST_UNAVAILABLE) without asking the phone.  Ctrl-C cancels the transaction (the
    phone is told; a request that already left is reversed); in the menu a second Ctrl-C quits.

    \b
    Exit codes (one-shot), one per ending:
      0  APPROVED          13  NO_PHONE (none answered, or not bound to the card)
      10 DECLINED_BY_HOST  14  PHONE_GONE (left the field; approval reversed)
      11 DECLINED_BY_USER  15  LINK_ERROR (phone-link protocol or security failure)
      12 USER_TIMEOUT      16  HOST_UNAVAILABLE (center not reachable, or no answer in time)
                           17  CARD_ERROR (no card, unreadable card)
      130 cancelled (Ctrl-C; also the menu's exit code when quit with Ctrl-C)
    Errors before a transaction starts (bad option or amount, missing lab) use the error's
    own code (3 for a bad option, 4 for a bad amount).
    """
    from swipepay.cli.app.terminal_app import CANCELLED_EXIT, order_amount
    from swipepay.firmware_sim.transaction import TxnType

    given = {
        "terminal_id": terminal_id, "card": card_url, "phone": phone_url, "center": center,
        "card_timeout": card_timeout, "phone_timeout": phone_timeout,
        "host_timeout": host_timeout, "confirm_timeout": confirm_timeout, "aid": aid,
    }  # fmt: skip
    try:
        if type_name is not None:
            order_amount(TxnType(type_name), amount)  # before any link or card is touched
        settings = load_settings(home, config_path, given)
        if type_name is None and as_json:
            raise ConfigError("--json needs --type (one-shot mode)")
        if type_name is None and _screens_wanted(line_mode):
            from swipepay.cli.screens.terminal_console import run_console

            sys.exit(run_console(home, settings))
        session = Session.open(home, settings)
    except SwipepayError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        _say_cancelled(as_json, None)
        sys.exit(CANCELLED_EXIT)
    try:
        if type_name is not None:
            code = _one_shot(session, type_name, amount, completes, card_data, as_json)
        else:
            code = _interactive(session)
    except SwipepayError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:  # between the steps of a run: nothing was left half done
        _say_cancelled(as_json, None)
        code = CANCELLED_EXIT
    finally:
        session.close()
    sys.exit(code)


def _say_cancelled(as_json: bool, reversal: str | None) -> None:
    """The one line a cancelled one-shot prints (or its JSON object)."""
    from swipepay.cli.app.terminal_app import CANCELLED_EXIT

    if as_json:
        click.echo(json.dumps({"ending": "CANCELLED", "exit_code": CANCELLED_EXIT,
                               "reversal": reversal}, indent=2))  # fmt: skip
    else:
        click.echo("cancelled" + (f" (reversal {reversal})" if reversal else ""))


def _one_shot(
    session: Session, type_name: str, amount: str | None, completes: str | None,
    card_data: str | None, as_json: bool,
) -> int:
    from swipepay.cli.app.terminal_app import TransactionCancelled

    order = session.app.order(type_name, amount, completes)
    reader = _reader(session, card_data, order)
    echo: Callable[[str], None] = (lambda s: None) if as_json else click.echo
    try:
        hint = _card_hint(session, reader)
        observe = _quiet if as_json else Console(echo, sys.stdout.isatty(), hint)
        result = session.run(order, reader, observe)
    except TransactionCancelled as exc:
        _say_cancelled(as_json, exc.reversal)
        return exc.exit_code
    finally:
        if reader is not None:
            reader.close()
    home = result.pop("home")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _render({**result, "home": home}, echo)
    return int(result["exit_code"])


def _card_hint(session: Session, reader: CardReader | None) -> str | None:
    """"to pcsc:Virtual PCD 00 00 (up to 30 s)" for a reader that waits for a card."""
    if reader is None or isinstance(reader, GivenCardReader):
        return None
    url = getattr(reader, "url", session.app.settings.card)
    return f"to {url} (up to {session.app.settings.card_timeout:.0f} s)"


def _interactive(session: Session) -> int:
    """The line console: a menu of the transaction types this terminal kind supports.

    Ctrl-C during a transaction (or its prompts) cancels it and comes back here; Ctrl-C at the
    menu quits with the cancelled exit code."""
    from swipepay.cli.app.terminal_app import CANCELLED_EXIT, TransactionCancelled

    app = session.app
    cfg, settings = app.config, app.settings
    types = app.supported_types()
    click.echo(click.style(f"{cfg.merchant_name} — terminal {cfg.terminal_id} ({cfg.kind})",
                           bold=True))
    click.echo(f"  card reader {settings.card}, phone {settings.phone}, "
               f"center {settings.center}")
    last = 0
    while True:
        click.echo("")
        for n, txn_type in enumerate(types, 1):
            click.echo(f"  {n}. {_label(txn_type)}")
        try:
            answer = click.prompt("transaction (number or name, q to quit)", default="1").strip()
        except click.Abort:
            click.echo("")
            return CANCELLED_EXIT
        if answer.lower() in ("q", "quit", "exit"):
            return last
        by_number = answer.isdigit() and 1 <= int(answer) <= len(types)
        name = types[int(answer) - 1].value if by_number else answer
        if name not in (t.value for t in types):
            click.echo(f"  no such transaction here: {answer}")
            continue
        try:
            last = _interactive_one(session, name)
        except (click.Abort, KeyboardInterrupt):
            click.echo("\n  cancelled")
        except TransactionCancelled as exc:
            click.echo(f"\n  {exc}")
            last = exc.exit_code
        except SwipepayError as exc:
            click.echo(click.style("  error: ", fg="red") + str(exc))


def _label(txn_type: Any) -> str:
    from swipepay.firmware_sim.transaction import TXN_TYPES

    return TXN_TYPES[txn_type].label


def _ask_amount(txn_type: Any) -> str | None:
    """Ask until the amount is one the terminal accepts (each mistake says what is wrong)."""
    from swipepay.cli.app.terminal_app import order_amount
    from swipepay.firmware_sim.transaction import TXN_TYPES

    if not TXN_TYPES[txn_type].has_amount:
        return None
    while True:
        text = click.prompt("amount", default="12.34")
        try:
            order_amount(txn_type, text)
        except SwipepayError as exc:
            click.echo(f"  {exc}")
            continue
        return str(text)


def _interactive_one(session: Session, name: str) -> int:
    from swipepay.firmware_sim.transaction import TxnType

    amount = _ask_amount(TxnType(name))
    completes = None
    if name == "completion":
        pending = session.app.preauths()
        click.echo("  open pre-authorizations: " + (", ".join(
            f"STAN {s} ({v.amount / 100:.2f})" for s, v in sorted(pending.items())) or "none"))
        completes = click.prompt("complete STAN", default=max(pending) if pending else "")
    order = session.app.order(name, amount, completes)
    card_url = session.app.settings.card
    reader: CardReader | None = None
    if order.type is not TxnType.COMPLETION:
        if card_url in ("mock:", "mock"):
            reader = _ask_card(session, order)
        else:
            reader = _reader(session, None, order)
    try:
        console = Console(click.echo, sys.stdout.isatty(), _card_hint(session, reader))
        result = session.run(order, reader, console)
    finally:
        if reader is not None:
            reader.close()
    _render(result, click.echo)
    return int(result["exit_code"])


def _ask_card(session: Session, order: Order) -> CardReader:
    """The mock reader's menu: swipe / insert / tap a lab card, or paste tracks or a PAN."""
    cards = session.app.lab.cards()
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
            return session.app.open_reader(url, order)
        return GivenCardReader(data)


# -- swipepay card serve (a row in the `card` group of cli/reader_cmds.py) -------------------


@click.command("serve")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default="lab",
              show_default=True, help="Lab directory.")
@click.option("--card", "name", required=True, help="Lab card name, e.g. alice-visa.")
@click.option("--via", type=click.Choice(["insert", "tap"]), default=None,
              help="Contact (insert) or contactless (tap) [default: tap when the card has it]")
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
