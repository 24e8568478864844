"""Fault loops shared by the tests and ``swipepay bench faults``: kill, restart, check the ledger.

Each loop drives real processes (``swipepay center serve`` over TLS on 127.0.0.1, and
``swipepay terminal run`` processes as users run them) and checks, after every fault, what
hardware_notes/design.md §6 promises:

* **center SIGKILLed under load** — the ledger balances; every approval a terminal received is
  stored exactly once as approved; nothing is approved that no terminal saw (the terminal's
  retransmission after the restart resolves every request that was in flight);
* **terminal SIGKILLed mid-transaction** — the terminal journals a reversal *before* it sends a
  request (write-ahead) and drops it once the outcome is known; after a restart the queued
  reversals are sent first, so the ledger ends with only the approvals the terminal finished;
* **the center's disk failing a commit** — the request is answered 96 and nothing of it is on disk.

The checks return counts (reports), not asserts, so the bench can print them and tests can assert
on them.  Long-lived state lives in the lab directory given; use a fresh copy per run (a phone's
DUKPT counters advance).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from swipepay.center.core import Center
from swipepay.center.database import open_storage
from swipepay.center.lab import Lab
from swipepay.center.policy import MessageState
from swipepay.center.storage import MessageKey, MessageRecord, SQLiteStorage
from swipepay.cli.harness.processes import free_port, kill, spawn, start_center, wait_for
from swipepay.drivers.host_tls import TlsHost
from swipepay.drivers.store.phone_store import PhoneStore
from swipepay.drivers.store.terminal_store import TerminalStore
from swipepay.firmware_sim.confirmation import confirm_transaction
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.hostmsg import AuthRequest
from swipepay.firmware_sim.terminal import Ending
from swipepay.firmware_sim.transaction import Transaction, TxnType

POS = "POS00001"
MERCHANT = "MERCH0000000001"
#: Transmission time used by the load generators (field 7); the STAN keeps messages apart.
LOAD_AT = "1126120000"


class LabSigner:
    """Signs requests the way a lab cardholder's phone does after the user confirmed (the load
    generator skips the phone link: the center is what is being faulted)."""

    def __init__(self, lab: Lab, phone_name: str) -> None:
        store = PhoneStore(lab.phone_path(phone_name))
        profile = store.profile
        card = lab.cards()[profile.card]
        self.pan, self.expiry = card.pan, card.expiry
        self.account = lab.card_account(profile.card)
        self._key = profile.identity().signing_key
        self._dukpt = store.dukpt()
        self._pin = lab.pin(profile.card)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LabSigner({self.account})"

    def request(self, stan: str, amount: int = 1, terminal_id: str = POS) -> AuthRequest:
        txn = Transaction(
            type=TxnType.PURCHASE,
            amount=amount,
            pan=self.pan,
            expiry=self.expiry,
            terminal_id=terminal_id,
            merchant_id=MERCHANT,
            stan=stan,
            transmitted_at=LOAD_AT,
        )
        with self._lock:  # the DUKPT counter is shared by the load threads
            block, ksn, signature = confirm_transaction(txn, self._pin, self._dukpt, self._key)
        return AuthRequest(txn, block, ksn, signature)


def stored_messages(database: str | Path) -> dict[MessageKey, MessageRecord]:
    """Every request the center recorded, read through a connection of our own."""
    storage = open_storage(database)
    try:
        with storage.transaction():
            return {m.key: m for m in storage.list_messages()}
    finally:
        storage.close()


def ledger_balanced(home: Path) -> bool:
    lab = Lab(home)
    with Center.open(lab.database_url, lab.center_keys()) as center:
        return center.check_balanced()


#: States of a message whose money is (still) on the ledger.
POSTED = frozenset({MessageState.APPROVED, MessageState.COMPLETED})


# -- the center killed under load -------------------------------------------------------------


@dataclass
class CenterKillReport:
    kills: int = 0
    requests: int = 0
    approvals_seen: int = 0
    approvals_stored: int = 0
    #: Approvals a terminal received that the ledger does not hold (must be 0).
    lost: int = 0
    #: Approvals on the ledger that no terminal received (must be 0).
    unseen: int = 0
    #: Requests without a final answer after the restart (must be 0).
    unanswered: int = 0
    #: Checks after a kill where the ledger did not balance (must be 0).
    unbalanced: int = 0
    seconds: float = 0.0
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.lost, self.unseen, self.unanswered, self.unbalanced) == (0, 0, 0, 0)


def center_kill_loop(
    home: Path,
    *,
    kills: int = 20,
    per_round: int = 12,
    phones: tuple[str, ...] = ("alice-phone", "carol-phone"),
    kill_after: int = 3,
    progress: Callable[[int, CenterKillReport], None] | None = None,
) -> CenterKillReport:
    """Run ``kills`` rounds: load from one thread per phone, SIGKILL the center once the round
    has ``kill_after`` answers, restart it, let the terminals retransmit, check the ledger.

    Each load thread uses its own :class:`TlsHost` (retransmits on a new connection after the
    restart, 15 s budget per request).  Amounts are 1 minor unit, so accounts never run dry.
    """
    lab = Lab(home)
    signers = [LabSigner(lab, p) for p in phones]
    port = free_port()
    report = CenterKillReport()
    seen: dict[MessageKey, str] = {}
    lock = threading.Lock()
    t0 = time.monotonic()
    proc = start_center(home, port)
    try:
        for round_no in range(kills):
            answered = [0]

            def load(signer: LabSigner, offset: int, answered: list[int] = answered) -> None:
                host = TlsHost.for_lab(home, POS, "127.0.0.1", port, connect_timeout=1)
                try:
                    for i in range(per_round):
                        req = signer.request(f"{offset + i:06d}")
                        key = MessageKey(POS, req.txn.stan, req.txn.transmitted_at)
                        try:
                            code = host.authorize(req, 15).response_code
                            host.settle(req.txn)  # this load terminal is done at once
                        except Exception as exc:  # counted as unanswered below
                            code = f"error:{type(exc).__name__}"
                        with lock:
                            seen[key] = code
                            answered[0] += 1
                finally:
                    host.close()

            base = 100_000 + round_no * 1_000
            threads = [
                threading.Thread(target=load, args=(s, base + 100 * n), daemon=True)
                for n, s in enumerate(signers)
            ]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while answered[0] < kill_after and time.monotonic() < deadline:
                time.sleep(0.002)
            kill(proc)
            report.kills += 1
            proc = start_center(home, port)
            for t in threads:
                t.join(60)
            _check_center_round(home, seen, report)
            if progress is not None:
                progress(round_no + 1, report)
    finally:
        kill(proc)
    report.seconds = time.monotonic() - t0
    return report


def _check_center_round(
    home: Path, seen: dict[MessageKey, str], report: CenterKillReport
) -> None:
    stored = stored_messages(Lab(home).database_url)
    approved_seen = {k for k, c in seen.items() if c == "00"}
    approved_stored = {k for k, m in stored.items() if m.response_code == "00"}
    report.requests = len(seen)
    report.approvals_seen = len(approved_seen)
    report.approvals_stored = len(approved_stored)
    report.lost = len(approved_seen - approved_stored)
    report.unseen = len(approved_stored - approved_seen)
    report.unanswered = sum(1 for c in seen.values() if c.startswith("error"))
    report.codes = {}
    for c in seen.values():
        report.codes[c] = report.codes.get(c, 0) + 1
    if not ledger_balanced(home):
        report.unbalanced += 1


# -- the terminal killed mid-transaction ------------------------------------------------------

#: What ``swipepay terminal run`` logs (at info) when its transaction begins.
TXN_BEGINS = f"purchase 1 on {POS}".encode()


def terminal_argv(home: Path, port: int) -> list[str]:
    """``swipepay terminal run`` for one purchase of 0.01 at the lab's POS, alice's card on the
    mock reader and her phone in the terminal process (``mock:``), the center on ``port``."""
    return [
        "--log-level", "info", "terminal", "run", "--home", str(home), "--terminal-id", POS,
        "--card", "mock:alice-visa", "--phone", "mock:alice-phone",
        "--center", f"127.0.0.1:{port}", "--type", "purchase", "--amount", "0.01", "--json",
    ]  # fmt: skip


def start_terminal(
    home: Path, port: int, stdout: IO[bytes] | int = subprocess.DEVNULL,
    stderr: IO[bytes] | int = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """The terminal program as users run it: a ``swipepay terminal run`` process."""
    return spawn(terminal_argv(home, port), stdout=stdout, stderr=stderr)


def run_terminal(home: Path, port: int, workdir: Path, kill_after: float | None = None) -> Any:
    """One ``swipepay terminal run --json``: its JSON result, or None when it was SIGKILLed
    ``kill_after`` seconds after its transaction began, before it printed its result (a run that
    got that far is a finished one).  :class:`ConfigError` when the run failed before a
    transaction ending."""
    out_path, err_path = workdir / "terminal.out", workdir / "terminal.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = start_terminal(home, port, out, err)
    try:
        if kill_after is not None:
            wait_for(
                lambda: proc.poll() is not None or TXN_BEGINS in err_path.read_bytes(),
                60, "the terminal's transaction to begin",
            )  # fmt: skip
            if proc.poll() is None:
                time.sleep(kill_after)  # the fault: SIGKILL at this moment of the transaction
            if proc.poll() is None:
                kill(proc)
                try:
                    return json.loads(out_path.read_text(encoding="utf-8"))
                except ValueError:
                    return None
        proc.wait(60)
    finally:
        kill(proc)
    text = out_path.read_text(encoding="utf-8")
    if proc.returncode not in {e.exit_code for e in Ending} or not text.strip():
        tail = err_path.read_text(encoding="utf-8", errors="replace").strip()[-300:]
        raise ConfigError(f"terminal run exited with {proc.returncode}: {tail}")
    return json.loads(text)


def pending_reversals(home: Path, terminal_id: str = POS) -> set[int]:
    """IDs of the reversals in the terminal's queue (queued, or armed by a process that died)."""
    with TerminalStore.for_lab(home, terminal_id) as store:
        return {item for item, _ in store.reversals.pending()}


@dataclass
class TerminalKillReport:
    kills: int = 0
    finished: int = 0
    approvals_logged: int = 0
    approvals_on_ledger: int = 0
    #: Reversals found queued when a terminal restarted (each sent by a later process).
    reversals_sent: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    #: Reversals still queued after the final restart (must be 0).
    left_in_queue: int = 0
    #: Approvals a finished terminal run reported that are not on the ledger (must be 0).
    lost: int = 0
    #: Approvals on the ledger no terminal run reported: killed after the transaction was
    #: finished (its write-ahead reversal dropped), before the result was printed; at most one
    #: per kill.
    unlogged: int = 0
    unbalanced: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.left_in_queue == 0
            and self.lost == 0
            and self.unbalanced == 0
            and self.unlogged <= self.kills
        )


def terminal_kill_loop(
    home: Path,
    *,
    kills: int = 20,
    seed: int = 7,
    window: tuple[float, float] = (0.0, 0.08),
    progress: Callable[[int, TerminalKillReport], None] | None = None,
) -> TerminalKillReport:
    """Run ``swipepay terminal run`` processes one after the other against a real center and
    SIGKILL one ``kills`` times, at a random moment in ``window`` seconds after its transaction
    began (runs that finish first are counted and the next one is tried); then run it once to
    its end (which sends the queue first) and check the ledger against what the runs printed."""
    rng = random.Random(seed)
    lab = Lab(home)
    port = free_port()
    report = TerminalKillReport()
    results: list[dict[str, Any]] = []
    queued: set[int] = set()
    t0 = time.monotonic()
    center = start_center(home, port)
    workdir = Path(tempfile.mkdtemp(prefix="swipepay-kills-"))
    try:
        while report.kills < kills:
            queued |= pending_reversals(home)
            result = run_terminal(home, port, workdir, rng.uniform(*window))
            if result is None:
                report.kills += 1
                if progress is not None:
                    progress(report.kills, report)
            else:
                results.append(result)
        queued |= pending_reversals(home)
        results.append(run_terminal(home, port, workdir))
        report.reversals_sent = len(queued)
        report.left_in_queue = len(pending_reversals(home))
    finally:
        kill(center)
        shutil.rmtree(workdir, ignore_errors=True)
    logged = {r["stan"] for r in results if r["ending"] == "APPROVED"}
    stored = stored_messages(lab.database_url)
    posted = {k.stan for k, m in stored.items() if k.terminal_id == POS and m.state in POSTED}
    report.finished = len(results)
    for r in results:
        code = r["response_code"] or ""
        report.codes[code] = report.codes.get(code, 0) + 1
    report.approvals_logged = len(logged)
    report.approvals_on_ledger = len(posted)
    report.lost = len(logged - posted)
    report.unlogged = len(posted - logged)
    report.unbalanced = 0 if ledger_balanced(home) else 1
    report.seconds = time.monotonic() - t0
    return report


# -- the center's disk failing a commit -------------------------------------------------------


class FailingCommits:
    """Wraps a sqlite3 connection: the next ``fail`` COMMITs roll back and raise the error a
    failing disk gives (SQLite rolls a transaction back when its journal cannot be written)."""

    def __init__(self, db: sqlite3.Connection, fail: int = 1) -> None:
        self._db = db
        self.fail = fail
        self.failed = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.strip().upper() == "COMMIT" and self.fail > 0:
            self.fail -= 1
            self.failed += 1
            self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@dataclass
class DiskFaultReport:
    failed_commits: int = 0
    answered_96: int = 0
    #: Rows of the failed requests found on disk afterwards (must be 0).
    half_written: int = 0
    balance_before: int = 0
    balance_after_fault: int = 0
    #: The same request retransmitted after the disk recovered.
    retry_code: str = ""
    unbalanced: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.failed_commits > 0
            and self.answered_96 == self.failed_commits
            and self.half_written == 0
            and self.balance_before == self.balance_after_fault
            and self.retry_code == "00"
            and self.unbalanced == 0
        )


@contextlib.contextmanager
def _server_thread(home: Path, faulty: list[FailingCommits]) -> Iterator[int]:
    """The real TLS server in a thread of this process, its storage wrapped by FailingCommits."""
    from swipepay.center.server import CenterServer, server_context

    lab = Lab(home)
    keys = lab.center_keys()

    def open_center() -> Center:
        center = Center.open(lab.db_path, keys)
        storage = center._storage
        assert isinstance(storage, SQLiteStorage)
        wrapper = FailingCommits(storage._db, fail=0)
        storage._db = wrapper  # type: ignore[assignment]
        faulty.append(wrapper)
        return center

    ctx = server_context(
        home / "ca" / "ca.crt", home / "center" / "center.crt", home / "center" / "center.key"
    )
    server = CenterServer(open_center, ctx)
    loop = asyncio.new_event_loop()
    ports: list[int] = []
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        ports.append(loop.run_until_complete(server.start("127.0.0.1", 0)))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not started.wait(15):
        raise RuntimeError("center thread did not start")
    try:
        yield ports[0]
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def disk_fault_check(home: Path, failures: int = 3) -> DiskFaultReport:
    """Purchases through the TLS server while the disk fails ``failures`` commits: each is
    answered 96 and leaves nothing on disk; the terminal's retransmission after the disk
    recovered is decided afresh (approved once)."""
    lab = Lab(home)
    signer = LabSigner(lab, "alice-phone")
    report = DiskFaultReport()
    with Center.open(lab.db_path, lab.center_keys()) as center:
        report.balance_before = center.ledger_balance(signer.account)
    faulty: list[FailingCommits] = []
    with _server_thread(home, faulty) as port:
        host = TlsHost.for_lab(home, POS, "127.0.0.1", port, connect_timeout=2)
        try:
            wrapper = faulty[0]
            failed: list[AuthRequest] = []
            for i in range(failures):
                req = signer.request(f"{900_000 + i:06d}", amount=7_00)
                wrapper.fail = 1
                code = host.authorize(req, 10).response_code
                report.answered_96 += code == "96"
                failed.append(req)
            report.failed_commits = wrapper.failed
            stored = stored_messages(lab.database_url)
            report.half_written = sum(
                1
                for r in failed
                if MessageKey(POS, r.txn.stan, r.txn.transmitted_at) in stored
            )
            with Center.open(lab.database_url, lab.center_keys()) as center:
                report.balance_after_fault = center.ledger_balance(signer.account)
                report.unbalanced += not center.check_balanced()
            report.retry_code = host.authorize(failed[-1], 10).response_code
        finally:
            host.close()
    report.unbalanced += not ledger_balanced(home)
    return report
