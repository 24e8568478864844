"""Load generators and measurements behind ``swipepay bench`` (all the I/O of the benchmarks).

* :func:`bench_center` — the real ``swipepay center serve`` (a subprocess: its own CPU share and
  its own peak RSS) on 127.0.0.1, ``terminals`` terminals on persistent mutual-TLS connections
  driven by load-generator *processes*, and in the same run, on the same disk, the baseline of one
  durable SQLite commit per transaction.  What the load generator precomputes before the timed
  region is the phones' and terminals' work, never the center's: the phone's PIN block (AES-DUKPT
  + ISO 9564 format 4) and confirmation signature (ECDSA P-256), and the ISO 8583 encoding of each
  request.  The center still decodes, verifies the signature, derives the DUKPT key, decrypts and
  checks the PIN, posts and commits every request inside the timed region.
  The center's CPU time per approval comes from the kernel's accounting
  (:func:`process_tree_cpu`), which moves much less with the machine than throughput does.
* :func:`bench_flow_inprocess` — whole transactions on mock drivers with auto-confirm.
* :func:`bench_link` — the phone link's exchanges and their ISO 14443-A air time.
* :func:`bench_startup` — ``swipepay --help`` wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from swipepay.cli.harness.processes import center_process, free_port, swipepay_command

# -- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident set size (VmHWM) of ``pid`` (default: this process), in MB."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    """Child process IDs of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _stat_cpu_s(pid: int) -> float | None:
    """CPU seconds ``pid`` and its reaped children used: utime + stime + cutime + cstime from
    ``/proc/<pid>/stat``; ``None`` if it is gone (or not Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may hold spaces: count the fields after its end.
    after = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in after[11:15])  # fields 14-17
    return (utime + stime + cutime + cstime) / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and of each of its living descendants (:func:`_stat_cpu_s`).

    Each process's reaped children are in its own figure (cutime, cstime), so the difference
    of two samples also counts a child that ended between them.
    """
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        cpu = _stat_cpu_s(p)
        if cpu is None:
            continue
        out[p] = cpu
        try:
            tasks = [t.name for t in Path(f"/proc/{p}/task").iterdir()]
        except OSError:
            tasks = []
        for tid in tasks:
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{p}/task/{tid}/children").read_text()
                todo += [int(c) for c in children.split()]
    return out


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds a process tree used between two :func:`process_tree_cpu` samples: its root
    and its descendants (helpers: the signature verifier, worker processes) apart."""

    root_s: float
    helpers_s: float

    @property
    def total_s(self) -> float:
        return self.root_s + self.helpers_s

    @classmethod
    def between(cls, root: int, before: dict[int, float], after: dict[int, float]) -> CpuSplit:
        """Per process ``after - before`` (0 before for a process that started in between)."""
        used = {p: cpu - before.get(p, 0.0) for p, cpu in after.items()}
        root_s = used.pop(root, 0.0)
        return cls(root_s, sum(used.values()))


def _os_cpu_s() -> float:
    """This process's CPU seconds (user + system, all its threads) from the kernel."""
    t = os.times()
    return t.user + t.system


# -- the center benchmark ------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchTerminal:
    """One benchmark terminal and the cardholder whose phone confirms its transactions."""

    terminal_id: str
    merchant_id: str
    kind: str
    pan: str
    expiry: str
    pin: str
    signing_key_pem: bytes
    initial_key: bytes
    ikid: bytes


#: The transaction mix each kind of terminal cycles through (completion = of the pre-auth before).
MIX: dict[str, tuple[str, ...]] = {
    "pos": ("purchase", "preauth", "completion", "purchase"),
    "atm": ("withdrawal", "deposit"),
}


def _luhn(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def add_bench_terminals(root: Path, count: int) -> list[BenchTerminal]:
    """Register ``count`` terminals (half POS, half ATM) with TLS certificates from the lab CA,
    each with its own funded cardholder, card and phone keys (a card's KSNs must rise, so one
    card per connection keeps the load free of false replays)."""
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from swipepay.center.core import Center
    from swipepay.center.lab import Lab, _pem_key, _write_public, _x509
    from swipepay.drivers.store.secretfile import write_private
    from swipepay.firmware_sim import ecc
    from swipepay.firmware_sim.dukpt import derive_initial_key

    lab = Lab(root)
    keys = lab.center_keys()
    ca_key = lab.ca_key()
    ca_cert = x509.load_pem_x509_certificate((root / "ca" / "ca.crt").read_bytes())
    now = datetime.now(UTC)
    expiry = f"{(now.year + 3) % 100:02d}12"
    out: list[BenchTerminal] = []
    with Center.open(lab.database_url, keys) as center:
        for i in range(count):
            kind = "pos" if i % 2 == 0 else "atm"
            tid = f"B{kind.upper()}{i:04d}"
            merchant = f"BENCHMERCH{i:05d}"
            base = root / "terminals" / tid
            tls_key = ecc.generate_key()
            cert = _x509(tid, tls_key, ca_key, ca_cert.subject, now=now)
            write_private(base / "tls.key", _pem_key(tls_key))
            _write_public(base / "tls.crt", cert.public_bytes(serialization.Encoding.PEM))
            center.register_terminal(tid, merchant, f"Bench {kind} {i}", kind)
            account = f"bench-{i:04d}"
            center.open_account(account, f"Bench Holder {i}", 10**12)
            prefix = f"499999{i:09d}"
            pan = prefix + _luhn(prefix)
            pin = f"{secrets.randbelow(10_000):04d}"
            signing = ecc.generate_key()
            ikid = keys.bdk_id + secrets.token_bytes(4)
            center.enroll(
                pan=pan,
                expiry=expiry,
                account_id=account,
                phone_key=ecc.encode_point(signing.public_key()),
                ikid=ikid,
                pin=pin,
            )
            out.append(
                BenchTerminal(
                    tid,
                    merchant,
                    kind,
                    pan,
                    expiry,
                    pin,
                    _pem_key(signing),
                    derive_initial_key(keys.bdk, ikid),
                    ikid,
                )
            )
    return out


def _precompute(term: BenchTerminal, count: int, stan0: int) -> list[tuple[str, bytes]]:
    """The phone's and the terminal's work for ``count`` requests: (type, framed ISO 8583)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from swipepay.firmware_sim.confirmation import confirm_transaction
    from swipepay.firmware_sim.dukpt import DukptDevice
    from swipepay.firmware_sim.hostlink import iso8583 as codec
    from swipepay.firmware_sim.hostmsg import AuthRequest
    from swipepay.firmware_sim.transaction import TXN_TYPES, Transaction, TxnType

    key = serialization.load_pem_private_key(term.signing_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    device = DukptDevice(term.initial_key, term.ikid)
    at = datetime.now(UTC).strftime("%m%d%H%M%S")
    mix = MIX[term.kind]
    out: list[tuple[str, bytes]] = []
    last_preauth: Transaction | None = None
    for n in range(count):
        kind = TxnType(mix[n % len(mix)])
        stan = f"{(stan0 + n) % 1_000_000:06d}"
        extra: dict[str, Any] = {}
        if kind is TxnType.COMPLETION and last_preauth is not None:
            extra = {"original_stan": last_preauth.stan, "original_at": last_preauth.transmitted_at}
        txn = Transaction(
            type=kind,
            amount=1_00,
            pan=term.pan,
            expiry=term.expiry,
            terminal_id=term.terminal_id,
            merchant_id=term.merchant_id,
            stan=stan,
            transmitted_at=at,
            **extra,
        )
        if kind is TxnType.PREAUTH:
            last_preauth = txn
        if TXN_TYPES[kind].needs_phone:
            req = AuthRequest(txn, *confirm_transaction(txn, term.pin, device, key))
        else:
            req = AuthRequest(txn)
        out.append((kind.value, codec.frame(codec.encode(codec.request_fields(req)))))
    return out


@dataclass
class LoadResult:
    """What one load-generator process measured."""

    latencies_ms: list[float] = field(default_factory=list)
    #: Whole seconds since the start at which each approval arrived (for the per-second rate).
    approval_seconds: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    exhausted: int = 0  # terminals that ran out of precomputed requests before the end
    errors: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    precompute_s: float = 0.0
    #: CPU seconds (user + system) of the driving, handshakes excluded.
    cpu_s: float = 0.0


async def _drive(
    root: Path,
    port: int,
    terms: list[BenchTerminal],
    work: list[list[tuple[str, bytes]]],
    start_at: float,
    stop_at: float,
    result: LoadResult,
) -> None:
    from swipepay.drivers.host_tls import client_context
    from swipepay.firmware_sim.hostlink import iso8583 as codec

    started: list[float] = []  # CPU seconds when each terminal began (the first one counts)

    async def one(term: BenchTerminal, frames: list[tuple[str, bytes]]) -> None:
        base = root / "terminals" / term.terminal_id
        ctx = client_context(root / "ca" / "ca.crt", base / "tls.crt", base / "tls.key")
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            started.append(_os_cpu_s())
            for kind, frame in frames:
                if time.time() >= stop_at:
                    return
                t0 = time.perf_counter()
                writer.write(frame)
                head = await reader.readexactly(2)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                rc = str(codec.decode(body).get("39", "??"))
                result.codes[rc] += 1
                if rc == "00":
                    result.by_type[kind] += 1
                    result.approval_seconds[int(time.time() - start_at)] += 1
            result.exhausted += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    outcomes = await asyncio.gather(
        *(one(t, w) for t, w in zip(terms, work, strict=True)), return_exceptions=True
    )
    if started:
        result.cpu_s = _os_cpu_s() - min(started)
    result.errors += [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]


def _load_process(
    root: str,
    port: int,
    terms: list[BenchTerminal],
    per_terminal: int,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    """One load-generator process: precompute, report ready, wait for the start time, drive."""
    t0 = time.perf_counter()
    work = [_precompute(t, per_terminal, 1 + 100_000 * (i % 9)) for i, t in enumerate(terms)]
    result = LoadResult(precompute_s=time.perf_counter() - t0)
    ready.put(True)
    start_at, stop_at = go.get()
    asyncio.run(_drive(Path(root), port, terms, work, start_at, stop_at, result))
    result.peak_rss_mb = _peak_rss_mb()
    out.put(result)


def commit_baseline(directory: Path, seconds: float) -> float:
    """Durable commits per second of one SQLite row per transaction (WAL, synchronous=FULL) in
    ``directory``: what the center would reach with one commit per approval."""
    path = directory / "baseline.db"
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        n = 0
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (body) VALUES (?)", (b"x" * 200,))
            db.execute("COMMIT")
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(str(path) + suffix).unlink()


def pg_commit_baseline(url: str, seconds: float) -> float:
    """Durable commits per second of one row per transaction (``synchronous_commit = on``) on
    the PostgreSQL database at ``url``, over one connection: the cost of a commit there."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TEMPORARY TABLE swipepay_baseline (id serial, body bytea)")
        n = 0
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            with conn.transaction():
                conn.execute("INSERT INTO swipepay_baseline (body) VALUES (%s)", (b"x" * 200,))
            n += 1
        return n / (time.perf_counter() - t0)


@dataclass
class CenterBench:
    #: What was measured: the storage backend and the number of worker processes.
    configuration: str
    storage: str
    workers: int
    terminals: int
    seconds: float
    load_processes: int
    requests: int
    approvals: int
    approvals_per_s: float
    #: Approvals in the slowest whole second of the run (sustained, not just on average).
    slowest_second: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    codes: dict[str, int]
    approvals_by_type: dict[str, int]
    durable_approvals_in_db: int
    ledger_balanced: bool
    #: Durable one-row commits/s on the same storage (SQLite: the same disk; PostgreSQL: the
    #: same server), one per transaction: what one commit per approval would allow.
    baseline_commits_per_s: float
    center_peak_rss_mb: float
    #: The center's descendants (worker processes, signature verifiers), apart from its root.
    center_helper_peak_rss_mb: float
    load_peak_rss_mb: float
    precompute_s: float
    exhausted_terminals: int
    errors: list[str]
    #: The center's CPU time per approval, all its processes (:attr:`cpu_method`), in µs.
    center_cpu_us_per_approval: float
    #: ... of which the root process (one worker: the event loop: TLS, ISO 8583, decisions,
    #: commits; several: the supervisor).
    center_server_cpu_us_per_approval: float
    #: ... of which its descendants (signature verifiers; worker processes).
    center_helper_cpu_us_per_approval: float
    #: CPU seconds of all the center's processes in the timed region, and that over its wall
    #: time (cores busy on average).
    center_cpu_s: float
    center_cpu_cores: float
    #: The database server's CPU per approval (PostgreSQL postmaster and backends, when the
    #: bench started the cluster itself; 0 for SQLite, which runs inside the center).
    database_cpu_us_per_approval: float
    #: PostgreSQL only (0 for SQLite): WAL written and transactions committed per approval,
    #: from pg_stat_wal and pg_stat_database (the whole server, during the timed region).
    database_wal_bytes_per_approval: float
    database_commits_per_approval: float
    #: The load generators' CPU per request (TLS and framing of the terminals' side).
    load_cpu_us_per_request: float
    #: The machine's speed in this run (:mod:`cli.harness.reference`), measured just before and
    #: just after this configuration: CPU µs of one P-256 verification and of the fixed Python
    #: unit.  The center's CPU per approval divided by them takes out the machine's drift.
    reference_verify_us: float = 0.0
    reference_python_us: float = 0.0
    cpu_method: str = (
        "utime+stime+cutime+cstime from /proc/<pid>/stat of the center process and every "
        "descendant, sampled at the start of the timed region and after the last answer, "
        "divided by the approvals; load generators: os.times() over their driving"
    )
    precomputed: str = (
        "phone PIN blocks (AES-DUKPT, format 4), phone ECDSA signatures and ISO 8583 encoding "
        "of the requests, in the load-generator processes before the timed region"
    )


def _pg_counters(url: str | None) -> tuple[int, int]:
    """(WAL bytes written, transactions committed) by the PostgreSQL server of ``url`` so far;
    (0, 0) for SQLite."""
    if url is None or not url.startswith("postgres"):
        return 0, 0
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT wal_bytes FROM pg_stat_wal)::bigint, "
            "(SELECT SUM(xact_commit) FROM pg_stat_database)::bigint"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _storage_name(database: str | None) -> str:
    return "SQLite" if database is None or not database.startswith("postgres") else "PostgreSQL"


def bench_center(
    terminals: int = 16,
    seconds: float = 30.0,
    *,
    load_processes: int = 2,
    rate_cap: float = 4000.0,
    baseline_seconds: float = 2.0,
    workdir: Path | None = None,
    database: str | None = None,
    workers: int = 1,
    database_pid: int | None = None,
) -> CenterBench:
    """Run the center benchmark on one configuration: a fresh lab whose center data is in
    ``database`` (an empty database's URL; default the lab's SQLite file), served by
    ``center serve --workers WORKERS``.  ``rate_cap`` sizes the precomputed requests
    (approvals/s); ``database_pid`` is the database server's root process, whose CPU is
    counted apart."""
    from swipepay.center.core import Center
    from swipepay.center.database import open_storage
    from swipepay.center.lab import Lab, create_lab
    from swipepay.cli.harness import reference

    reference_before = reference.measure()
    tmp = Path(tempfile.mkdtemp(prefix="swipepay-bench-", dir=workdir))
    try:
        root = create_lab(tmp / "lab", database=database).root
        url = Lab(root).database_url
        terms = add_bench_terminals(root, terminals)
        if database is None:
            baseline = commit_baseline(tmp, baseline_seconds)
        else:
            baseline = pg_commit_baseline(url, baseline_seconds)
        per_terminal = math.ceil(seconds * rate_cap / max(1, terminals)) + 10
        procs = max(1, min(load_processes, terminals))
        port = free_port()
        ctx = mp.get_context("spawn")
        ready, go, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
        results: list[LoadResult] = []
        args = ["--max-connections", "256"]
        if workers > 1:
            args += ["--workers", str(workers)]
        with center_process(root, port, *args) as server:
            loaders = [
                ctx.Process(
                    target=_load_process,
                    args=(str(root), port, terms[i::procs], per_terminal, ready, go, out),
                    daemon=True,
                )
                for i in range(procs)
            ]
            for w in loaders:
                w.start()
            try:
                for _ in loaders:
                    ready.get(timeout=600)
                start_at = time.time() + 1.0  # time to open the TLS connections
                for _ in loaders:
                    go.put((start_at, start_at + seconds))
                time.sleep(max(0.0, start_at - time.time()))
                wal_before, commits_before = _pg_counters(database)
                cpu_before = process_tree_cpu(server.pid)
                db_before = process_tree_cpu(database_pid) if database_pid else {}
                t_before = time.perf_counter()
                for _ in loaders:
                    results.append(out.get(timeout=seconds + 120))
                cpu_after = process_tree_cpu(server.pid)
                db_after = process_tree_cpu(database_pid) if database_pid else {}
                wall = time.perf_counter() - t_before
                wal_after, commits_after = _pg_counters(database)
                center_rss = _peak_rss_mb(server.pid)
                helper_rss = sum(_peak_rss_mb(p) for p in cpu_after if p != server.pid)
            finally:
                for w in loaders:
                    w.join(10)
                    if w.is_alive():
                        w.kill()
        merged = LoadResult()
        for r in results:
            merged.latencies_ms += r.latencies_ms
            merged.approval_seconds.update(r.approval_seconds)
            merged.codes.update(r.codes)
            merged.by_type.update(r.by_type)
            merged.exhausted += r.exhausted
            merged.errors += r.errors
        storage = open_storage(url)
        try:
            with storage.transaction():
                durable = sum(
                    1
                    for m in storage.list_messages()
                    if m.response_code == "00" and m.key.terminal_id.startswith("B")
                )
        finally:
            storage.close()
        with Center.open(url, Lab(root).center_keys()) as center:
            balanced = center.check_balanced()
        machine = reference.MachineReference.mean(reference_before, reference.measure())
        approvals = merged.codes.get("00", 0)
        cpu = CpuSplit.between(server.pid, cpu_before, cpu_after)
        db_cpu = CpuSplit.between(database_pid or 0, db_before, db_after)
        requests = len(merged.latencies_ms)

        def per(cpu_s: float, count: int) -> float:
            return cpu_s * 1e6 / count if count else 0.0

        storage_name = _storage_name(database)
        return CenterBench(
            configuration=f"{storage_name} x {workers}",
            storage=storage_name,
            workers=workers,
            terminals=terminals,
            seconds=seconds,
            load_processes=procs,
            requests=requests,
            approvals=approvals,
            approvals_per_s=approvals / seconds,
            slowest_second=min(
                (merged.approval_seconds.get(n, 0) for n in range(int(seconds))), default=0
            ),
            p50_ms=percentile(merged.latencies_ms, 50),
            p95_ms=percentile(merged.latencies_ms, 95),
            p99_ms=percentile(merged.latencies_ms, 99),
            codes=dict(merged.codes),
            approvals_by_type=dict(merged.by_type),
            durable_approvals_in_db=durable,
            ledger_balanced=balanced,
            baseline_commits_per_s=baseline,
            center_peak_rss_mb=center_rss,
            center_helper_peak_rss_mb=helper_rss,
            load_peak_rss_mb=max((r.peak_rss_mb for r in results), default=0.0),
            precompute_s=max((r.precompute_s for r in results), default=0.0),
            exhausted_terminals=merged.exhausted,
            errors=merged.errors[:5],
            center_cpu_us_per_approval=per(cpu.total_s, approvals),
            center_server_cpu_us_per_approval=per(cpu.root_s, approvals),
            center_helper_cpu_us_per_approval=per(cpu.helpers_s, approvals),
            center_cpu_s=cpu.total_s,
            center_cpu_cores=cpu.total_s / wall if wall > 0 else 0.0,
            database_cpu_us_per_approval=per(db_cpu.total_s, approvals),
            database_wal_bytes_per_approval=(
                (wal_after - wal_before) / approvals if approvals else 0
            ),
            database_commits_per_approval=(
                (commits_after - commits_before) / approvals if approvals else 0
            ),
            load_cpu_us_per_request=per(sum(r.cpu_s for r in results), requests),
            reference_verify_us=machine.verify_us,
            reference_python_us=machine.python_us,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: The configurations ``bench center`` runs by default, in order: (name, PostgreSQL?, workers).
CONFIGURATIONS: dict[str, tuple[bool, int]] = {
    "sqlite": (False, 1),
    "postgresql": (True, 1),
    "postgresql-workers": (True, 2),
}


@dataclass
class CenterSuite:
    """``bench center``: every configuration measured in one run, on the same machine."""

    runs: list[CenterBench]
    #: Where the PostgreSQL configurations ran: "throwaway cluster" or the server given.
    postgresql: str
    #: Configurations not run, and why (e.g. no PostgreSQL server binaries).
    skipped: dict[str, str] = field(default_factory=dict)
    #: Runs of each configuration, interleaved (round 1 of every configuration, then round 2 ...).
    repeat: int = 1

    def by_configuration(self) -> dict[str, list[CenterBench]]:
        """The runs of each configuration, in the order they ran."""
        out: dict[str, list[CenterBench]] = {}
        for run in self.runs:
            out.setdefault(run.configuration, []).append(run)
        return out


T = TypeVar("T")


def lower_median(ordered: Sequence[T]) -> T:
    """The middle item of a sorted sequence, the lower one of the middle two: always one of
    the items (a run, a figure), never an average of two."""
    return ordered[(len(ordered) - 1) // 2]


def median_run(runs: Sequence[CenterBench]) -> CenterBench:
    """The run whose center CPU per approval is the median (:func:`lower_median`): a whole
    run, so every figure shown beside it comes from the same run."""
    return lower_median(sorted(runs, key=lambda r: r.center_cpu_us_per_approval))


def bench_center_suite(
    configurations: Sequence[str] = tuple(CONFIGURATIONS),
    *,
    postgresql_url: str | None = None,
    pg_workers: int = 2,
    progress: Any = None,
    repeat: int = 1,
    **kwargs: Any,
) -> CenterSuite:
    """Run :func:`bench_center` on each of ``configurations`` (names of :data:`CONFIGURATIONS`),
    ``repeat`` times each, interleaved: on a shared machine one run moves by ±20 %, so compare
    medians (:func:`median_run`).

    The PostgreSQL ones each get a new database: in ``postgresql_url``'s server (its role
    needs CREATEDB; the databases are dropped afterwards), else in a throwaway cluster started
    here (:class:`~cli.harness.postgres.PostgresCluster`), whose CPU is then measured too.
    """
    from swipepay.cli.harness.postgres import PostgresCluster, missing

    runs: list[CenterBench] = []
    skipped: dict[str, str] = {}
    cluster: PostgresCluster | None = None
    where = "none"
    wanted_pg = [c for c in configurations if CONFIGURATIONS[c][0]]
    if wanted_pg and postgresql_url is None:
        reason = missing()
        if reason is not None:
            skipped = dict.fromkeys(wanted_pg, reason)
        else:
            cluster = PostgresCluster()
            where = "throwaway cluster (initdb in a temporary directory, Unix socket)"
    elif wanted_pg:
        where = _redact(postgresql_url or "")
    try:
        if cluster is not None:
            cluster.start()
        rounds = [(n, c) for n in range(1, repeat + 1) for c in configurations]
        for round_no, name in rounds:
            is_pg, workers = CONFIGURATIONS[name]
            if name in skipped:
                continue
            if is_pg and workers > 1:
                workers = pg_workers
            if progress is not None:
                progress(name)
            database = None
            if is_pg:
                if cluster is not None:
                    database = cluster.create_database(
                        f"swipepay_bench_{name.replace('-', '_')}_{round_no}"
                    )
                else:
                    database = _create_database(postgresql_url or "", name)
            try:
                runs.append(
                    bench_center(
                        database=database,
                        workers=workers,
                        database_pid=cluster.pid if cluster is not None else None,
                        **kwargs,
                    )
                )
            finally:
                if database is not None and cluster is None:
                    _drop_database(postgresql_url or "", database)
    finally:
        if cluster is not None:
            cluster.close()
    return CenterSuite(runs, where, skipped, repeat)


def _redact(url: str) -> str:
    """``url`` without a password (``user:secret@`` → ``user@``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _bench_database_name(name: str) -> str:
    return f"swipepay_bench_{name.replace('-', '_')}_{os.getpid()}"


def _create_database(server_url: str, name: str) -> str:
    """A new database for configuration ``name`` on the server of ``server_url``; its URL."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    db = _bench_database_name(name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{db}"))


def _drop_database(server_url: str, database_url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg
    from psycopg import sql

    db = urlsplit(database_url).path.lstrip("/")
    with contextlib.suppress(psycopg.Error), psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


# -- whole transactions in one process ----------------------------------------------------------


@dataclass
class StepFigures:
    step: str
    p50_ms: float
    p99_ms: float


@dataclass
class FlowBench:
    mode: str
    transactions: int
    approved: int
    steps: list[StepFigures]
    total_p50_ms: float
    total_p99_ms: float


def _flow_figures(
    mode: str, runs: Sequence[tuple[bool, Sequence[tuple[Any, float]], float]]
) -> FlowBench:
    """Figures from (approved, [(step, ms)], total ms) per transaction."""
    from swipepay.firmware_sim.terminal import Step

    per_step: dict[Step, list[float]] = {}
    for _, steps, _ in runs:
        for step, ms in steps:
            per_step.setdefault(Step(step), []).append(ms)
    totals = [total for _, _, total in runs]
    return FlowBench(
        mode=mode,
        transactions=len(runs),
        approved=sum(1 for ok, _, _ in runs if ok),
        steps=[
            StepFigures(
                f"{s.value} {s.name.lower().replace('_', ' ')}",
                percentile(v, 50),
                percentile(v, 99),
            )
            for s, v in sorted(per_step.items())
        ],
        total_p50_ms=percentile(totals, 50),
        total_p99_ms=percentile(totals, 99),
    )


def inprocess_reports(transactions: int, workdir: Path | None = None) -> list[Any]:
    """Run ``transactions`` whole transactions (purchases at the POS, withdrawals at the ATM,
    alternating; the phone's user confirms at once) on a fresh lab with mock drivers."""
    from swipepay.center.lab import create_lab
    from swipepay.cli.harness.inprocess import InProcessBench, PhoneSetup
    from swipepay.firmware_sim.terminal import Order
    from swipepay.firmware_sim.transaction import TxnType

    plan = (
        ("POS00001", TxnType.PURCHASE, "mock:alice-visa"),
        ("ATM00001", TxnType.WITHDRAWAL, "mock:alice-visa"),
    )
    tmp = Path(tempfile.mkdtemp(prefix="swipepay-flow-", dir=workdir))
    try:
        root = create_lab(tmp / "lab").root
        reports = []
        with InProcessBench.open(root) as bench:
            for n in range(transactions):
                terminal, kind, card = plan[n % len(plan)]
                reports.append(
                    bench.run(
                        terminal, Order(kind, 1_00), card_url=card, phone=PhoneSetup("alice-phone")
                    )
                )
        return reports
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_flow_inprocess(transactions: int = 200, workdir: Path | None = None) -> FlowBench:
    runs = [
        (r.outcome.approved, r.steps, r.total_ms) for r in inprocess_reports(transactions, workdir)
    ]
    return _flow_figures("one process, mock drivers", runs)


def bench_flow_processes(transactions: int = 20, workdir: Path | None = None) -> FlowBench:
    """Whole purchases across three processes: ``swipepay center serve`` (TLS), a virtual card
    and ``swipepay phone run --auto-confirm`` on pcscd's vpcd slots, and one
    ``swipepay terminal run --json`` per transaction (its own step timings; the terminal
    process's start-up is not part of the transaction)."""
    from swipepay.center.lab import create_lab
    from swipepay.cli.harness.pcscd import missing_stack
    from swipepay.cli.harness.realstack import Stack
    from swipepay.firmware_sim.errors import ConfigError

    why = missing_stack()
    if why is not None:
        raise ConfigError(f"bench flow --processes needs the PC/SC stack: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="swipepay-flow-", dir=workdir))
    runs: list[tuple[bool, Sequence[tuple[Any, float]], float]] = []
    try:
        lab = create_lab(tmp / "lab")
        with Stack.open(lab.root) as stack:
            stack.start_center()
            stack.start_card("alice-visa")
            stack.start_phone("alice-phone", pin=lab.pin("alice-visa"))
            for _ in range(transactions):
                _, result = stack.terminal(
                    "--terminal-id", "POS00001", "--type", "purchase", "--amount", "1.00",
                    "--phone-timeout", "10", "--card-timeout", "10",
                )  # fmt: skip
                if "steps" not in result:
                    raise ConfigError(f"terminal failed: {result.get('error', result)}")
                runs.append(
                    (
                        result.get("response_code") == "00",
                        [(s["step"], float(s["ms"])) for s in result["steps"]],
                        float(result["total_ms"]),
                    )
                )
        return _flow_figures("three processes: pcscd/vpcd and TLS", runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the phone link ------------------------------------------------------------------------------


@dataclass
class LinkBench:
    exchanges: list[dict[str, Any]]
    commands: int
    commands_excluding_polls: int
    bytes_to_phone: int
    bytes_from_phone: int
    bytes_total: int
    air_frames: int
    air_ms: float
    air_ms_emvco_gaps: float
    formula: str


def bench_link(workdir: Path | None = None) -> LinkBench:
    """The exchanges of one approved purchase (user confirms at once) and their air time."""
    from swipepay.firmware_sim.airtime import EMVCO, ISO_106, air_time

    report = next(r for r in inprocess_reports(1, workdir) if r.outcome.approved)
    pairs = [(e.sent, e.received) for e in report.exchanges]
    polls = sum(1 for e in report.exchanges if e.ins == "GET_CONFIRMATION")
    air = air_time(pairs, ISO_106)
    return LinkBench(
        exchanges=[
            {"ins": e.ins, "sent": e.sent, "received": e.received, "sw": f"{e.sw:04X}"}
            for e in report.exchanges
        ],
        commands=len(pairs),
        commands_excluding_polls=len(pairs) - max(0, polls - 1),
        bytes_to_phone=report.bytes_to_phone,
        bytes_from_phone=report.bytes_from_phone,
        bytes_total=report.bytes_to_phone + report.bytes_from_phone,
        air_frames=air.frames,
        air_ms=air.ms,
        air_ms_emvco_gaps=air_time(pairs, EMVCO).ms,
        formula=ISO_106.describe(),
    )


# -- start-up ------------------------------------------------------------------------------------


@dataclass
class StartupBench:
    help_runs: int
    help_median_ms: float
    help_max_ms: float
    command: list[str]


def bench_startup(runs: int = 5) -> StartupBench:
    """Wall time of ``swipepay --help`` (a fresh interpreter each run)."""
    command = [*swipepay_command(), "--help"]
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        subprocess.run(  # noqa: S603 - the installed swipepay script
            command, check=True, stdout=subprocess.DEVNULL, timeout=60
        )
        times.append((time.perf_counter() - t0) * 1000)
    return StartupBench(runs, statistics.median(times), max(times), command)
