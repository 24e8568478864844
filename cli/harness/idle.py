"""``swipepay bench idle``: one center holding a fleet of idle terminal connections.

The real ``swipepay center serve`` (a subprocess: its memory is its own) on 127.0.0.1 with its
connection cap above the fleet, and ``terminals`` mutual-TLS connections held open by
load-generator *processes* (each holds a share; a process's open-file limit is raised to its
hard limit and must fit its share).  What is measured:

* the center's resident memory (``VmRSS`` of the serving process) before the fleet connects,
  after a warm-up payment, and while the fleet is held: the difference per connection is what
  one idle terminal costs the center; the signature verifier child is reported apart;
* the load generators' memory, the same way (what a connection costs a client);
* that every connection stays open past the center's idle timeout, kept alive the way a real
  terminal does it: a network-management echo (0800, code 301) on every connection that has
  been silent for ``keepalive`` seconds; the last round must be answered on every connection;
* that a real payment (:class:`cli.app.terminal_app.TerminalApp`, mock card and phone, over
  its own TLS connection) is approved while the fleet is held.

Connections are opened one at a time per load process (a blocking handshake each), so at most
as many handshakes are in progress as there are load processes: far below the center's
``max_handshakes``.  All connections use one lab terminal's certificate (the center keeps
nothing per certificate beyond the connection's own TLS state, so 10,000 certificates would
cost the same; making them would only slow the bench down).
"""

from __future__ import annotations

import collections
import math
import multiprocessing as mp
import os
import queue
import selectors
import shutil
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from swipepay.cli.harness.processes import free_port, start_center, stop
from swipepay.firmware_sim.errors import ConfigError

#: The lab terminal whose certificate every idle connection presents.
TERMINAL: Final = "POS00001"
#: Connections one load process holds at most (more processes for a larger fleet).
PER_PROCESS: Final = 2500
#: Connections the center may hold beyond the fleet (the payment, the warm-up).
CAP_MARGIN: Final = 16
#: Descriptors a load process needs besides its connections.
CLIENT_RESERVED: Final = 64


def rss_mb(pid: int | None = None) -> float:
    """Current resident set size (``VmRSS``) of ``pid`` (default: this process), in MB."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_file_limit(pid: int) -> int | None:
    """The soft open-file limit of process ``pid`` (Linux ``/proc``), None when unknown."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                value = line.split()[3]
                return int(value) if value.isdigit() else None
    except OSError:
        pass
    return None


# -- one load-generator process -------------------------------------------------------------------


@dataclass
class HolderStatus:
    """What one load process reports (on request, and at the end)."""

    index: int
    opened: int = 0
    failed: int = 0
    open_now: int = 0
    closed_by_center: int = 0
    echoes_sent: int = 0
    echoes_answered: int = 0
    #: Echoes sent and not answered yet.
    outstanding: int = 0
    opening_done: bool = False
    rss_before_mb: float = 0.0
    rss_mb: float = 0.0
    errors: list[str] = field(default_factory=list)


class _Conn:
    __slots__ = ("decoder", "echo", "n", "pending", "sock")

    def __init__(self, n: int, sock: ssl.SSLSocket, echo: bytes) -> None:
        from swipepay.firmware_sim.hostlink import iso8583 as codec

        self.n = n
        self.sock = sock
        self.echo = echo
        self.decoder = codec.FrameDecoder()
        self.pending = False


class Holder:
    """Opens ``count`` connections one after another and keeps each alive with an echo once it
    has been silent ``keepalive`` seconds, until told to stop."""

    def __init__(self, index: int, root: Path, port: int, count: int, keepalive: float) -> None:
        from swipepay.center.fdlimit import raise_soft_limit
        from swipepay.drivers.host_tls import lab_client_context

        limit = raise_soft_limit(want=count + CLIENT_RESERVED)
        if count + CLIENT_RESERVED > limit.soft:
            raise ConfigError(
                f"a load process may open {limit.soft} files, not the {count + CLIENT_RESERVED} "
                "its share needs: use more --client-processes"
            )
        self.status = HolderStatus(index, rss_before_mb=rss_mb())
        self._ctx = lab_client_context(root, TERMINAL)
        self._port = port
        self._count = count
        self._keepalive = keepalive
        self._sel = selectors.DefaultSelector()
        self._conns: list[_Conn] = []
        #: Connections in the order their keep-alive falls due, with when it was last sent.
        self._due: collections.deque[tuple[float, _Conn]] = collections.deque()
        self._at = datetime.now(UTC).strftime("%m%d%H%M%S")

    def _open_one(self) -> None:
        from swipepay.firmware_sim.hostlink import iso8583 as codec

        n = len(self._conns) + self.status.failed
        try:
            raw = socket.create_connection(("127.0.0.1", self._port), timeout=10)
            try:
                sock = self._ctx.wrap_socket(raw)
            except BaseException:
                raw.close()
                raise
        except OSError as exc:
            self.status.failed += 1
            if len(self.status.errors) < 5:
                self.status.errors.append(f"connect: {type(exc).__name__}: {exc}")
            return
        sock.setblocking(False)
        stan = f"{(self.status.index * 100_000 + n) % 1_000_000:06d}"
        echo = codec.frame(codec.encode(codec.network_fields(TERMINAL, stan, self._at, "301")))
        conn = _Conn(n, sock, echo)
        self._conns.append(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)
        self._due.append((time.monotonic(), conn))
        self.status.opened += 1
        self.status.open_now += 1

    def _send_echo(self, conn: _Conn) -> None:
        if conn.pending:
            return
        try:
            conn.sock.send(conn.echo)
        except (OSError, ValueError) as exc:
            self._closed(conn, exc)
            return
        conn.pending = True
        self.status.echoes_sent += 1
        self.status.outstanding += 1

    def keep_alive(self, now: float) -> None:
        """An echo on every connection silent for ``keepalive`` seconds."""
        while self._due and self._due[0][0] + self._keepalive <= now:
            _, conn = self._due.popleft()
            if conn.sock.fileno() < 0:
                continue
            self._send_echo(conn)
            self._due.append((now, conn))

    def echo_all(self) -> None:
        """An echo on every open connection now (the check that they are all still open)."""
        for conn in self._conns:
            if conn.sock.fileno() >= 0:
                self._send_echo(conn)

    def _closed(self, conn: _Conn, exc: BaseException | None) -> None:
        if conn.sock.fileno() < 0:
            return
        self._sel.unregister(conn.sock)
        conn.sock.close()
        self.status.open_now -= 1
        self.status.closed_by_center += 1
        if conn.pending:
            conn.pending = False
            self.status.outstanding -= 1
        if exc is not None and len(self.status.errors) < 5:
            self.status.errors.append(f"connection {conn.n}: {type(exc).__name__}: {exc}")

    def read(self, timeout: float) -> None:
        from swipepay.firmware_sim.hostlink import iso8583 as codec

        for key, _ in self._sel.select(timeout):
            conn: _Conn = key.data
            try:
                data = conn.sock.recv(4096)
                while conn.sock.pending():
                    data += conn.sock.recv(4096)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue  # a session ticket or part of a record: nothing to answer yet
            except OSError as exc:
                self._closed(conn, exc)
                continue
            if not data:
                self._closed(conn, None)
                continue
            for body in conn.decoder.feed(data):
                fields = codec.decode(body)
                if conn.pending and fields.get("39") == "00":
                    conn.pending = False
                    self.status.outstanding -= 1
                    self.status.echoes_answered += 1

    def step(self) -> None:
        """Open the next connection (while opening), send due keep-alives, read answers."""
        opening = len(self._conns) + self.status.failed < self._count
        if opening:
            self._open_one()
        else:
            self.status.opening_done = True
        self.keep_alive(time.monotonic())
        self.read(0 if opening else 0.05)

    def close(self) -> None:
        for conn in self._conns:
            conn.sock.close()
        self._sel.close()


def _holder_process(
    index: int, root: str, port: int, count: int, keepalive: float, control: Any, report: Any
) -> None:
    """One load process: hold connections; answer ``status``/``echo``/``stop`` commands."""
    try:
        holder = Holder(index, Path(root), port, count, keepalive)
    except Exception as exc:  # reported, not raised: the parent says what went wrong
        failed = HolderStatus(index, errors=[f"{type(exc).__name__}: {exc}"], opening_done=True)
        while True:  # answer every command with it, until told to stop
            command = control.get()
            report.put(failed)
            if command == "stop":
                return
    try:
        while True:
            holder.step()
            try:
                command = control.get_nowait()
            except queue.Empty:
                continue
            if command == "echo":
                holder.echo_all()
            holder.status.rss_mb = rss_mb()
            report.put(holder.status)
            if command == "stop":
                return
    finally:
        holder.close()


# -- the bench ---------------------------------------------------------------------------------


@dataclass
class IdleBench:
    terminals: int
    client_processes: int
    idle_timeout_s: float
    keepalive_s: float
    held_s: float
    opened: int
    failed: int
    open_after_hold: int
    closed_by_center: int
    echoes_answered: int
    #: Every held connection answered the last echo round (after the hold).
    all_answered: bool
    connect_s: float
    handshakes_per_s: float
    payment: str
    payment_approved: bool
    payment_ms: float
    center_rss_before_mb: float
    center_rss_held_mb: float
    center_rss_per_connection_kb: float
    center_verifier_rss_mb: float
    center_open_file_limit: int | None
    load_rss_before_mb: float
    load_rss_held_mb: float
    load_rss_per_connection_kb: float
    errors: list[str]


def _payment(root: Path, port: int) -> tuple[str, bool, float]:
    """One real purchase (lab terminal POS00001, mock card and phone) over its own connection:
    its ending and response code, whether approved, and how long it took."""
    from swipepay.cli.app.terminal_app import TerminalApp
    from swipepay.cli.app.terminal_settings import TerminalSettings

    settings = TerminalSettings(center=f"127.0.0.1:{port}", phone="mock:alice-phone")
    with TerminalApp.open(root, settings) as app:
        order = app.order("purchase", "1.00", None)
        host = app.open_center()
        try:
            t0 = time.perf_counter()
            result = app.run(order, reader=app.open_reader("mock:alice-visa?via=tap", order),
                             link=app.open_phone_link(), host=host)  # fmt: skip
            ms = (time.perf_counter() - t0) * 1000
        finally:
            host.close()
    out = result.outcome
    return f"{out.ending.name} {out.response_code or '-'}", out.approved, ms


class _Fleet:
    """The load processes and their command/report queues."""

    def __init__(self, root: Path, port: int, terminals: int, processes: int, keepalive: float):
        ctx = mp.get_context("spawn")
        self.report: Any = ctx.Queue()
        self.controls: list[Any] = [ctx.Queue() for _ in range(processes)]
        shares = [terminals // processes + (1 if i < terminals % processes else 0)
                  for i in range(processes)]  # fmt: skip
        self.procs = [
            ctx.Process(
                target=_holder_process,
                args=(i, str(root), port, shares[i], keepalive, self.controls[i], self.report),
                daemon=True,
            )
            for i in range(processes)
        ]
        for p in self.procs:
            p.start()

    def ask(self, command: str, timeout: float = 60.0) -> list[HolderStatus]:
        """Send ``command`` to every load process; their reports, in process order."""
        for c in self.controls:
            c.put(command)
        got: dict[int, HolderStatus] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfigError(f"load processes did not report within {timeout:.0f} s")
            try:
                status: HolderStatus = self.report.get(timeout=left)
            except queue.Empty:
                continue
            got[status.index] = status
        return [got[i] for i in range(len(self.procs))]

    def wait(self, done: Any, timeout: float, what: str) -> list[HolderStatus]:
        """Ask for the status until ``done(statuses)``; ConfigError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.ask("status")
            if done(statuses) or any(s.opening_done and s.opened == 0 for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                raise ConfigError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)

    def close(self) -> list[HolderStatus]:
        try:
            return self.ask("stop", 30)
        finally:
            for p in self.procs:
                p.join(10)
                if p.is_alive():
                    p.kill()


def bench_idle(
    terminals: int = 10_000,
    *,
    idle_timeout: float = 30.0,
    keepalive: float | None = None,
    hold: float | None = None,
    client_processes: int | None = None,
    workdir: Path | None = None,
) -> IdleBench:
    """Hold ``terminals`` idle connections on one center for ``hold`` s (default: the idle
    timeout and one keep-alive more, so every connection lives past it), keeping each alive
    with an echo once silent ``keepalive`` s (default: 0.6 of the idle timeout: each echo is
    a request the center answers, 10,000 terminals at 18 s make 560 a second)."""
    from swipepay.center.lab import create_lab

    keepalive = keepalive if keepalive is not None else idle_timeout * 0.6
    if keepalive >= idle_timeout:
        raise ConfigError("--keepalive must be shorter than --idle-timeout (else the center "
                          "closes the connections before their echo)")  # fmt: skip
    hold = hold if hold is not None else idle_timeout + keepalive
    processes = client_processes or max(1, math.ceil(terminals / PER_PROCESS))
    processes = min(processes, terminals)
    tmp = Path(tempfile.mkdtemp(prefix="swipepay-idle-", dir=workdir))
    errors: list[str] = []
    try:
        root = create_lab(tmp / "lab").root
        port = free_port()
        server = start_center(
            root, port, "--max-connections", str(terminals + CAP_MARGIN),
            "--idle-timeout", f"{idle_timeout:g}", timeout=30,
        )  # fmt: skip
        try:
            _payment(root, port)  # warm-up: the decision path loaded before "before"
            center_before = rss_mb(server.pid)
            fleet = _Fleet(root, port, terminals, processes, keepalive)
            try:
                t0 = time.monotonic()
                opened = fleet.wait(
                    lambda ss: all(s.opening_done for s in ss), 60 + terminals / 20,
                    f"{terminals} connections to open",
                )  # fmt: skip
                connect_s = time.monotonic() - t0
                held_from = time.monotonic()
                payment, approved, payment_ms = _payment(root, port)
                while time.monotonic() - held_from < hold:
                    time.sleep(min(1.0, hold - (time.monotonic() - held_from)))
                    fleet.ask("status")
                center_held = rss_mb(server.pid)
                fleet.ask("echo")
                final = fleet.wait(
                    lambda ss: all(s.outstanding == 0 for s in ss), 60,
                    "the last echo round to be answered",
                )  # fmt: skip
                held_s = time.monotonic() - held_from
            finally:
                last = fleet.close()
            verifier = sum(rss_mb(int(c)) for c in _child_pids(server.pid))
            nofile = open_file_limit(server.pid)
        finally:
            stop(server)
        for s in last:
            errors += s.errors
        ok = sum(s.opened for s in opened)
        open_after = sum(s.open_now for s in final)
        load_before = sum(s.rss_before_mb for s in last)
        load_held = sum(s.rss_mb for s in final)
        return IdleBench(
            terminals=terminals,
            client_processes=processes,
            idle_timeout_s=idle_timeout,
            keepalive_s=keepalive,
            held_s=held_s,
            opened=ok,
            failed=sum(s.failed for s in opened),
            open_after_hold=open_after,
            closed_by_center=sum(s.closed_by_center for s in final),
            echoes_answered=sum(s.echoes_answered for s in final),
            all_answered=open_after == terminals and all(s.outstanding == 0 for s in final),
            connect_s=connect_s,
            handshakes_per_s=ok / connect_s if connect_s > 0 else 0.0,
            payment=payment,
            payment_approved=approved,
            payment_ms=payment_ms,
            center_rss_before_mb=center_before,
            center_rss_held_mb=center_held,
            center_rss_per_connection_kb=(center_held - center_before) * 1024 / max(1, ok),
            center_verifier_rss_mb=verifier,
            center_open_file_limit=nofile,
            load_rss_before_mb=load_before,
            load_rss_held_mb=load_held,
            load_rss_per_connection_kb=(load_held - load_before) * 1024 / max(1, ok),
            errors=errors[:5],
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _child_pids(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
