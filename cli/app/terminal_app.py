"""The terminal application: one POS or ATM of a lab, its stored state and its transactions.

``swipepay terminal run`` (one-shot and console), ``swipepay demo``, the benchmarks and the fault
loops all run transactions through :meth:`TerminalApp.run`, so the rules of the terminal program
exist once:

* **STAN**: taken from the :class:`~drivers.store.terminal_store.TerminalStore` before the
  transaction starts, its successor on disk before any request can carry it — a terminal killed
  at any moment never sends two requests with one STAN;
* **pre-authorizations**: an approved one is remembered for its completion, an approved
  completion forgets it;
* **reversals**: the store's queue is the one the TLS host journals into, and its length before
  and after each run is part of the result;
* **the center first**: before the card is read the center must answer (an echo on a new
  connection); when it cannot be reached the run ends at once as HOST_UNAVAILABLE, nobody was
  asked anything and nothing is queued;
* **cancel**: Ctrl-C (KeyboardInterrupt) or :meth:`TerminalApp.cancel` ends the running
  transaction as :class:`TransactionCancelled`: the phone link is closed (the phone shows the
  payment as cancelled) and a request that already left is reversed.

Front-ends parse arguments and render :class:`TerminalResult`; the drivers only move bytes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from swipepay.center.lab import Lab
from swipepay.center.local_host import LocalHost
from swipepay.cli.app.phone_app import lab_phone
from swipepay.cli.app.terminal_settings import TerminalSettings, center_addresses
from swipepay.drivers.base import CardReader, DriverContext, Host, PhoneLink
from swipepay.drivers.logsetup import transaction, txn_id
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_card_reader, open_phone_link, url_options
from swipepay.drivers.runner import Observer, TxnReport, run_transaction
from swipepay.drivers.store.reversal_queue import ReversalQueue
from swipepay.drivers.store.terminal_store import TerminalStore
from swipepay.firmware_sim.errors import ConfigError, SwipepayError, TransportError
from swipepay.firmware_sim.phone import Choice
from swipepay.firmware_sim.phonelink.protocol import parse_aid
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.terminal import Ending, Order, Outcome, Terminal, TerminalConfig
from swipepay.firmware_sim.transaction import TXN_TYPES, Transaction, TxnType, parse_amount

_log = logging.getLogger("swipepay.terminal")

#: Exit code of a transaction cancelled by the operator (Ctrl-C): 128 + SIGINT, as shells do.
CANCELLED_EXIT: Final = 130

#: How long a run waits for the center's echo before it gives up (seconds, at most).
CENTER_CHECK_TIMEOUT: Final = 3.0


class TransactionCancelled(SwipepayError):
    """The operator cancelled the running transaction (Ctrl-C, or :meth:`TerminalApp.cancel`)."""

    exit_code = CANCELLED_EXIT

    def __init__(self, reversal: str | None = None) -> None:
        super().__init__("cancelled" + (f"; reversal {reversal}" if reversal else ""))
        #: What became of a request that had already left: ``sent`` / ``queued``; None if none.
        self.reversal = reversal


def order_amount(txn_type: TxnType, amount_text: str | None) -> int:
    """The amount the operator keyed for a ``txn_type``, checked before anything is touched
    (zero, negative, a comma, more than two decimals, too large: each its own message)."""
    spec = TXN_TYPES[txn_type]
    if not spec.has_amount:
        if amount_text not in (None, "0", "0.00"):
            raise ConfigError(f"a {spec.label.lower()} has no amount")
        return 0
    if amount_text is None:
        raise ConfigError(f"--amount is required for a {spec.label.lower()}")
    return parse_amount(amount_text)


def center_route(host: object) -> tuple[str | None, tuple[str, ...]]:
    """Which center answered ``host``'s last request and which were skipped since the last
    check, with why (a :class:`drivers.host_tls.TlsHost`, or a wrapper that passes them on)."""
    answered = getattr(host, "answered_by", None)
    skipped = getattr(host, "skipped", ())
    return (
        None if answered is None else str(answered),
        tuple(f"{addr} {why}" for addr, why in skipped),
    )


@runtime_checkable
class CheckedHost(Protocol):
    """A host that can tell, before a transaction, whether the center answers."""

    def check(
        self, terminal_id: str, stan: Callable[[], str], transmitted_at: str, timeout: float
    ) -> None: ...


class CenterConnection(Host, Protocol):
    """The center as a terminal run holds it: a :class:`Host` that is closed after use."""

    def close(self) -> None: ...


class _CenterInProcess(LocalHost):
    """``--center local``: the lab's center core in this process, closed with the host."""

    def close(self) -> None:
        self.center.close()


class _Cancel:
    """The sleep between confirmation polls, ending the run when a cancel was asked for."""

    def __init__(self, sleep: Callable[[float], None], flag: threading.Event) -> None:
        self._sleep, self._flag = sleep, flag

    def __call__(self, seconds: float) -> None:
        if self._flag.is_set():
            raise KeyboardInterrupt
        self._sleep(seconds)
        if self._flag.is_set():
            raise KeyboardInterrupt


@dataclass(frozen=True)
class TerminalResult:
    """One finished transaction: the runner's report and what the terminal knows around it."""

    order: Order
    report: TxnReport
    terminal_id: str
    txn_id: str
    currency: str
    #: Reversals waiting in the terminal's queue when the run began and when it ended.
    reversals_queued_before: int
    reversals_queued_after: int
    #: The center that gave the last answer (HOST:PORT; None in-process or when none did), and
    #: the centers skipped on the way to it ("HOST:PORT why"): failover, said to the user.
    center: str | None = None
    centers_skipped: tuple[str, ...] = ()

    @property
    def outcome(self) -> Outcome:
        return self.report.outcome


class TerminalApp:
    """A lab terminal opened with its settings; owns its :class:`TerminalStore` (close it)."""

    def __init__(self, lab: Lab, settings: TerminalSettings, store: TerminalStore) -> None:
        self.lab = lab
        self.settings = settings
        self.store = store
        tid = settings.terminal_id
        base = lab.terminal_config(tid)
        self.config: TerminalConfig = replace(
            base,
            merchant_id=settings.merchant_id or base.merchant_id,
            merchant_name=settings.merchant_name or base.merchant_name,
            poll_interval_ms=settings.poll_interval_ms,
            confirm_timeout_ms=int(settings.confirm_timeout * 1000),
            host_timeout_ms=int(settings.host_timeout * 1000),
            aid=base.aid if settings.aid is None else parse_aid(settings.aid),
        )
        self._identity = lab.terminal_link_identity(tid)
        self._cancel = threading.Event()

    @classmethod
    def open(cls, home: Path, settings: TerminalSettings | None = None) -> TerminalApp:
        """Open terminal ``settings.terminal_id`` of the lab at ``home``."""
        lab = Lab(home)
        settings = settings or TerminalSettings()
        lab.terminal_config(settings.terminal_id)  # an unknown terminal gets no store
        store = TerminalStore.for_lab(lab.root, settings.terminal_id)
        try:
            return cls(lab, settings, store)
        except BaseException:
            store.close()
            raise

    def __repr__(self) -> str:
        return f"TerminalApp({self.config.terminal_id} in {self.lab.root})"

    def __enter__(self) -> TerminalApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- what a run talks to ---------------------------------------------------------------------

    def open_center(self) -> CenterConnection:
        """The center the settings name: ``HOST:PORT`` (TLS, journalling into this terminal's
        reversal queue), several of them (tried in order: failover) or ``local`` (the lab's
        center core in this process)."""
        from swipepay.drivers.host_tls import TlsHost, lab_client_context

        settings = self.settings
        centers = center_addresses(settings.center)
        if not centers:
            from swipepay.center.core import Center

            return _CenterInProcess(Center.open(self.lab.database_url, self.lab.center_keys()))
        first, *more = centers
        context = lab_client_context(self.lab.root, settings.terminal_id)
        return TlsHost(
            first.host, first.port, context, self.store.reversals,
            reversal_timeout=min(5.0, settings.host_timeout), fallbacks=more,
        )  # fmt: skip

    def open_phone_link(self) -> PhoneLink:
        """The phone link the settings name.  ``mock:<phone>[?decline]`` is a lab phone in this
        process (a bench without NFC hardware), its user confirming with the lab PIN."""
        url = self.settings.phone
        if not url.startswith("mock:"):
            link: PhoneLink = open_phone_link(url)
            return link
        name, options = url_options(url, ("decline",))
        field = MockField()
        if name:
            choice = Choice.DECLINE if "decline" in options else Choice.CONFIRM
            lab_phone(self.lab, name, choice, aid=self.config.aid).enter(field)
        mock: PhoneLink = open_phone_link("mock:", DriverContext(field=field))
        return mock

    def open_reader(self, url: str, order: Order) -> CardReader:
        """The card reader at ``url``, told the order's amount (the EMV read's 9F02)."""
        return open_card_reader(url, DriverContext(cards=self.lab.cards(), amount=order.amount))

    # -- orders ----------------------------------------------------------------------------------

    def supported_types(self) -> list[TxnType]:
        """The transaction types the center accepts from this kind of terminal (a POS sells,
        an ATM handles cash), in menu order."""
        from swipepay.center.policy import TERMINAL_KINDS

        kind = TERMINAL_KINDS.get(self.config.kind)
        return [t for t in TxnType if kind is None or t in kind.allowed]

    def preauths(self) -> dict[str, Transaction]:
        """Approved pre-authorizations of this terminal not yet completed, by STAN."""
        return self.store.preauths()

    def order(self, type_name: str, amount_text: str | None, completes: str | None) -> Order:
        """What the operator keyed in -> an order; a completion finds its pre-authorization
        (``completes`` = its STAN, default the latest)."""
        txn_type = TxnType(type_name)
        amount = order_amount(txn_type, amount_text)
        if not TXN_TYPES[txn_type].has_amount:
            return Order(txn_type, 0)
        original = self._original(completes) if txn_type is TxnType.COMPLETION else None
        return Order(txn_type, amount, original)

    def _original(self, stan: str | None) -> Transaction:
        pending = self.store.preauths()
        tid = self.config.terminal_id
        if not pending:
            raise ConfigError(f"terminal {tid} has no approved pre-authorization to complete")
        key = stan if stan is not None else sorted(pending)[-1]
        if key not in pending:
            have = ", ".join(sorted(pending))
            raise ConfigError(f"no approved pre-authorization with STAN {key} (have: {have})")
        return pending[key]

    # -- one transaction -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the running transaction to end (from another thread; a full-screen console's
        Ctrl-C).  It ends at its next wait as :class:`TransactionCancelled`."""
        self._cancel.set()

    def _check_center(self, host: Host, now: datetime) -> None:
        if isinstance(host, CheckedHost):
            host.check(
                self.config.terminal_id,
                lambda: f"{self.store.take_stan():06d}",
                now.strftime("%m%d%H%M%S"),
                min(CENTER_CHECK_TIMEOUT, self.settings.host_timeout),
            )

    def _unreachable(
        self, host: Host, order: Order, exc: SwipepayError, before: int
    ) -> TerminalResult:
        """The run that ended before it began: the center is not there (the front-end says it;
        the log has it at INFO so a console shows it once)."""
        _log.info("%s", exc)
        tid = self.config.terminal_id
        outcome = Outcome(Ending.HOST_UNAVAILABLE, None, message=str(exc))
        return TerminalResult(
            order=order,
            report=TxnReport(outcome),
            terminal_id=tid,
            txn_id=txn_id(tid, self.store.next_stan()),
            currency=self.config.currency,
            reversals_queued_before=before,
            reversals_queued_after=len(self.store.reversals.pending()),
            centers_skipped=center_route(host)[1],
        )

    def _cancelled(
        self, host: Host, link: PhoneLink | None, key: str, now: datetime
    ) -> TransactionCancelled:
        """Clean up after a cancel: tell the phone, reverse a request that already left."""
        if link is not None:
            with contextlib.suppress(Exception):
                link.disconnect()  # the phone's session ends: it shows "Cancelled by the terminal"
        reversal = None
        queue: ReversalQueue = self.store.reversals
        from swipepay.drivers.host_tls import PROCESS_TOKEN

        item = queue.armed(PROCESS_TOKEN, key)
        if item is not None:  # the request left: its write-ahead reversal becomes due now
            queue.release(item)
            reversal = "queued"
            close = getattr(host, "close", None)
            if isinstance(host, CheckedHost) and close is not None:
                close()  # a fresh connection sends the queue first
                with contextlib.suppress(SwipepayError):
                    self._check_center(host, now)
                    if not any(i == item for i, _ in queue.pending()):
                        reversal = "sent"
        _log.info("cancelled by the operator%s", f"; reversal {reversal}" if reversal else "")
        return TransactionCancelled(reversal)

    def run(
        self,
        order: Order,
        *,
        reader: CardReader | None,
        link: PhoneLink | None,
        host: Host,
        observe: Observer | None = None,
        now: datetime | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> TerminalResult:
        """Run one transaction to its end (never raises for what a peer or a user did).

        Raises :class:`TransactionCancelled` when the operator cancels it (Ctrl-C or
        :meth:`cancel`)."""
        config = self.config
        tid = config.terminal_id
        now = now or datetime.now(UTC)
        self._cancel.clear()
        before = len(self.store.reversals.pending())  # the check below may send them
        try:
            self._check_center(host, now)
        except TransportError as exc:
            return self._unreachable(host, order, exc, before)
        except KeyboardInterrupt:
            raise TransactionCancelled() from None
        stan = self.store.take_stan()
        terminal = Terminal(config, TerminalLink(*self._identity, aid=config.aid), stan)
        ident = txn_id(tid, stan)
        key = f"{tid}/{stan % 1_000_000:06d}/{now:%m%d%H%M%S}"
        with transaction(ident):
            _log.info("%s %d on %s", order.type.value, order.amount, tid)
            try:
                report = run_transaction(
                    terminal,
                    order,
                    reader=reader,
                    link=link,
                    host=host,
                    now=now,
                    card_timeout=self.settings.card_timeout,
                    phone_timeout=self.settings.phone_timeout,
                    sleep=_Cancel(sleep, self._cancel),
                    observe=observe,
                )
            except KeyboardInterrupt:
                raise self._cancelled(host, link, key, now) from None
            out = report.outcome
            _log.info(
                "ending %s %s%s", out.ending.name, out.response_code or "-",
                f" reversal {report.reversal}" if report.reversal else "",
            )  # fmt: skip
        self._remember(order, report)
        txn = out.txn
        answered, skipped = center_route(host)
        return TerminalResult(
            order=order,
            report=report,
            terminal_id=tid,
            txn_id=txn_id(tid, txn.stan) if txn else ident,
            currency=txn.currency if txn else config.currency,
            reversals_queued_before=before,
            reversals_queued_after=len(self.store.reversals.pending()),
            center=answered,
            centers_skipped=skipped,
        )

    def _remember(self, order: Order, report: TxnReport) -> None:
        """Keep an approved pre-auth for its completion; forget a completed one."""
        out = report.outcome
        if out.txn is None or not out.approved:
            return
        if order.type is TxnType.PREAUTH:
            self.store.remember_preauth(out.txn, out.auth_code)
        elif order.type is TxnType.COMPLETION and order.original is not None:
            self.store.forget_preauth(order.original.stan)
