"""Fault loops of the center at scale, shared by the tests and ``swipepay bench faults``: the
PostgreSQL server SIGKILLed under load, and one worker of ``center serve --workers N`` SIGKILLed
under load.

Both drive a real ``swipepay center serve`` on a lab whose center data is in a throwaway
PostgreSQL cluster (:class:`~cli.harness.postgres.PostgresCluster`), with load threads that
are terminals as the product has them (:class:`~drivers.host_tls.TlsHost`: retransmission on a
new connection, write-ahead reversals).  After every fault they check what
hardware_notes/center-scale.md promises:

* every approval a terminal received is on the ledger exactly once, and nothing is on the
  ledger that no terminal received (a copy whose outcome a terminal never saw is reversed by the
  reversal it keeps queued);
* each cardholder's balance is its opening balance less its posted approvals (nothing doubled);
* the ledger balances;
* **database killed**: the center answers while the database is down (91, at once, no hang)
  and decides again once it is back;
* **worker killed**: the other workers keep serving, the killed one is restarted, and the
  terminals' retransmissions are answered once.

The reports hold counts, not asserts, so the bench prints them and the tests assert on them.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.storage import MessageKey
from swipepay.cli.harness.faults import (
    LOAD_AT,
    POS,
    POSTED,
    LabSigner,
    ledger_balanced,
    stored_messages,
)
from swipepay.cli.harness.postgres import PostgresCluster
from swipepay.cli.harness.processes import (
    free_port,
    listening_pids,
    serving_pids,
    start_center,
    stop,
    wait_for,
)
from swipepay.drivers.host_tls import TlsHost

#: Longest answer a terminal may wait for while the database is down ("at once": the center
#: must not hang on a dead database; its connect timeout is 2 s).
OUTAGE_ANSWER_LIMIT = 5.0


@dataclass
class DatabaseKillReport:
    kills: int = 0
    requests: int = 0
    approvals_seen: int = 0
    approvals_posted: int = 0
    #: Answers received while the database was down, and the slowest of them (seconds).
    outage_answers: int = 0
    outage_slowest_s: float = 0.0
    #: Approvals a terminal received that the ledger does not hold (must be 0).
    lost: int = 0
    #: Approvals on the ledger that no terminal received (must be 0).
    unseen: int = 0
    #: Requests without any answer (must be 0).
    unanswered: int = 0
    #: Cardholder accounts whose balance is not opening balance less posted approvals (0).
    balance_mismatches: int = 0
    #: Checks after a kill where the ledger did not balance (must be 0).
    unbalanced: int = 0
    #: Reversals the terminals kept queued for copies whose outcome they never saw, all sent.
    reversals_sent: int = 0
    seconds: float = 0.0
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.lost, self.unseen, self.unanswered, self.balance_mismatches, self.unbalanced
        ) == (0, 0, 0, 0, 0) and self.outage_slowest_s <= OUTAGE_ANSWER_LIMIT  # fmt: skip


@dataclass
class _Answer:
    code: str
    sent_at: float
    seconds: float


def _load(
    home: Path,
    port: int,
    signer: LabSigner,
    stans: range,
    answers: dict[MessageKey, _Answer],
    lock: threading.Lock,
) -> None:
    """One terminal connection sending purchases of 1 minor unit, one after the other."""
    host = TlsHost.for_lab(home, POS, "127.0.0.1", port, connect_timeout=1)
    try:
        for n in stans:
            req = signer.request(f"{n:06d}")
            key = MessageKey(POS, req.txn.stan, req.txn.transmitted_at)
            sent = time.monotonic()
            try:
                code = host.authorize(req, 15).response_code
                if code == "00":
                    host.settle(req.txn)  # this load terminal is done at once
            except Exception as exc:  # counted as unanswered
                code = f"error:{type(exc).__name__}"
            with lock:
                answers[key] = _Answer(code, sent, time.monotonic() - sent)
    finally:
        host.close()


def _flush_reversals(home: Path, port: int, stan: str) -> int:
    """Open a new terminal connection (which sends every queued reversal first); how many were
    queued before."""
    from swipepay.cli.harness.faults import pending_reversals

    queued = len(pending_reversals(home))
    host = TlsHost.for_lab(home, POS, "127.0.0.1", port, connect_timeout=2)
    try:
        host.echo(POS, stan, LOAD_AT, 15)
    finally:
        host.close()
    return queued - len(pending_reversals(home))


def _check(
    home: Path,
    answers: dict[MessageKey, _Answer],
    opening: dict[str, int],
    signers: list[LabSigner],
    report: DatabaseKillReport,
) -> None:
    lab = Lab(home)
    stored = stored_messages(lab.database_url)
    seen = {k for k, a in answers.items() if a.code == "00"}
    posted = {k for k, m in stored.items() if m.response_code == "00" and m.state in POSTED}
    report.requests = len(answers)
    report.approvals_seen = len(seen)
    report.approvals_posted = len(posted)
    report.lost = len(seen - posted)
    report.unseen = len(posted - seen)
    report.unanswered = sum(1 for a in answers.values() if a.code.startswith("error"))
    report.codes = {}
    for a in answers.values():
        report.codes[a.code] = report.codes.get(a.code, 0) + 1
    mismatches = 0
    with Center.open(lab.database_url, lab.center_keys()) as center:
        for s in signers:
            spent = sum(
                m.amount - m.reversed_amount
                for k in posted
                if (m := stored[k]).pan == s.pan
            )
            if center.ledger_balance(s.account) != opening[s.account] - spent:
                mismatches += 1
        if not center.check_balanced():
            report.unbalanced += 1
    report.balance_mismatches = mismatches
    if not ledger_balanced(home):
        report.unbalanced += 1


def _answered_since(answers: dict[MessageKey, _Answer], before: int, count: int) -> bool:
    return len(answers) - before >= count


def _outage_answers(
    threads: list[threading.Thread],
    answers: dict[MessageKey, _Answer],
    lock: threading.Lock,
    killed_at: float,
) -> list[_Answer]:
    """Wait until every terminal thread sent a request after ``killed_at`` and got its answer
    (or finished): the answers given while the database was down."""

    def since() -> list[_Answer]:
        with lock:
            return [a for a in answers.values() if a.sent_at > killed_at]

    wait_for(
        lambda: len(since()) >= len(threads) or not any(t.is_alive() for t in threads),
        30, "answers while the database is down",
    )  # fmt: skip
    return since()


def _restarted(port: int, victim: int, supervisor: set[int], workers: int) -> bool:
    listening = listening_pids(port) - supervisor
    return victim not in listening and len(listening) >= workers


@dataclass
class _Load:
    """The load both kill loops drive and check: one terminal thread per phone, each round
    ``per_round`` purchases per thread, the answers as the terminals saw them, and each
    cardholder's balance before the first round."""

    home: Path
    port: int
    signers: list[LabSigner]
    per_round: int
    opening: dict[str, int]
    answers: dict[MessageKey, _Answer] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_phones(cls, home: Path, port: int, phones: tuple[str, ...], per_round: int) -> _Load:
        lab = Lab(home)
        signers = [LabSigner(lab, p) for p in phones]
        with Center.open(lab.database_url, lab.center_keys()) as center:
            opening = {s.account: center.ledger_balance(s.account) for s in signers}
        return cls(home, port, signers, per_round, opening)

    def start_round(self, round_no: int, kill_after: int) -> list[threading.Thread]:
        """Start the round's threads; return once ``kill_after`` of its answers came in."""
        base = 100_000 + round_no * 1_000
        before = len(self.answers)
        threads = [
            threading.Thread(
                target=_load,
                args=(self.home, self.port, s,
                      range(base + 100 * n, base + 100 * n + self.per_round),
                      self.answers, self.lock),
                daemon=True,
            )
            for n, s in enumerate(self.signers)
        ]  # fmt: skip
        for t in threads:
            t.start()
        wait_for(
            functools.partial(_answered_since, self.answers, before, kill_after),
            60, "answers before the kill",
        )  # fmt: skip
        return threads

    def settle(self, round_no: int, report: DatabaseKillReport) -> None:
        """After the round's threads ended: send the reversals the terminals kept, check."""
        report.reversals_sent += _flush_reversals(self.home, self.port, f"{900_000 + round_no:06d}")
        _check(self.home, self.answers, self.opening, self.signers, report)


def database_kill_loop(
    home: Path,
    cluster: PostgresCluster,
    *,
    kills: int = 5,
    per_round: int = 12,
    phones: tuple[str, ...] = ("alice-phone", "carol-phone"),
    kill_after: int = 4,
    center_args: tuple[str, ...] = (),
    progress: Callable[[int, DatabaseKillReport], None] | None = None,
) -> DatabaseKillReport:
    """Run ``kills`` rounds: load from one terminal thread per phone; once the round has
    ``kill_after`` answers SIGKILL the PostgreSQL server (postmaster and backends); once every
    thread had an answer during the outage, start it again; let the round finish, send the
    reversals the terminals kept, check.

    ``home`` is a lab whose database is in ``cluster`` (``create_lab(..., database=URL)``).
    """
    load = _Load.for_phones(home, free_port(), phones, per_round)
    report = DatabaseKillReport()
    t0 = time.monotonic()
    proc = start_center(home, load.port, *center_args)
    try:
        for round_no in range(kills):
            threads = load.start_round(round_no, kill_after)
            cluster.kill()
            report.kills += 1
            during = _outage_answers(threads, load.answers, load.lock, time.monotonic())
            report.outage_answers += len(during)
            report.outage_slowest_s = max(
                [report.outage_slowest_s, *(a.seconds for a in during)]
            )
            cluster.start()
            for t in threads:
                t.join(120)
            load.settle(round_no, report)
            if progress is not None:
                progress(round_no + 1, report)
    finally:
        stop(proc)
    report.seconds = time.monotonic() - t0
    return report



@dataclass
class WorkerKillReport(DatabaseKillReport):
    """:class:`DatabaseKillReport`'s ledger counts, for one worker SIGKILLed per round;
    ``outage_answers`` are the answers given while it was gone."""

    workers: int = 0
    #: Times the supervisor had all ``workers`` listening again after a kill.
    restarts: int = 0
    #: Distinct worker processes seen listening (by PID, the restarted ones included).
    worker_pids_seen: int = 0
    #: Kills of a worker that was serving terminal connections at that moment (the others
    #: found every connection on the other worker: nothing to retransmit).
    kills_with_connections: int = 0

    @property
    def ok(self) -> bool:
        return super().ok and self.restarts == self.kills


def worker_kill_loop(
    home: Path,
    *,
    kills: int = 5,
    workers: int = 2,
    per_round: int = 12,
    phones: tuple[str, ...] = ("alice-phone", "bob-phone", "carol-phone"),
    kill_after: int = 4,
    seed: int = 7,
    progress: Callable[[int, WorkerKillReport], None] | None = None,
) -> WorkerKillReport:
    """Run ``kills`` rounds on ``center serve --workers WORKERS`` (a lab whose database is
    PostgreSQL): load from one terminal thread per entry of ``phones`` (each its own
    connection, spread over the workers by the kernel); once the round has ``kill_after``
    answers SIGKILL one worker (one serving connections, chosen at random); the terminals
    whose connection it held retransmit on a new one, which a surviving worker answers
    (exactly-once: from the stored answer when the dead worker had committed it).  Wait for
    the supervisor to restart it, let the round finish, send the kept reversals, check the
    ledger."""
    load = _Load.for_phones(home, free_port(), phones, per_round)
    port = load.port
    rng = random.Random(seed)
    report = WorkerKillReport(workers=workers)
    seen_pids: set[int] = set()
    t0 = time.monotonic()
    proc = start_center(home, port, "--workers", str(workers))
    try:
        for round_no in range(kills):
            threads = load.start_round(round_no, kill_after)
            alive = sorted(listening_pids(port) - {proc.pid})
            seen_pids.update(alive)
            busy = sorted(serving_pids(port) & set(alive))
            victim = rng.choice(busy or alive)
            report.kills_with_connections += bool(busy)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            report.kills += 1
            wait_for(
                functools.partial(_restarted, port, victim, {proc.pid}, workers),
                60, "the supervisor to restart the killed worker",
            )  # fmt: skip
            report.restarts += 1
            for t in threads:
                t.join(120)
            with load.lock:
                report.outage_answers += sum(
                    1 for a in load.answers.values() if a.sent_at > killed_at
                )
            seen_pids.update(listening_pids(port) - {proc.pid})
            load.settle(round_no, report)
            if progress is not None:
                progress(round_no + 1, report)
    finally:
        stop(proc)
    report.worker_pids_seen = len(seen_pids)
    report.seconds = time.monotonic() - t0
    return report
