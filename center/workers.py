"""``center serve --workers N``: one listen address served by N worker processes.

Why processes: the center's decision work is Python and holds the GIL, so the way past one core
is more interpreters.  Each worker is a whole :class:`~swipepay.center.server.CenterServer`
(its own event loop, signature-verifier child and database connection) listening on the same
address with ``SO_REUSEPORT``: the kernel spreads new connections over the workers, and a
terminal's connection stays with the worker that accepted it.

* Only a storage that several processes may write at once can be shared: PostgreSQL (row locks
  keep exactly-once, no-overdraft and balanced ledger true across workers; see
  ``center/pg_storage.py``).  SQLite has one writer per file, so ``--workers`` above 1 on it
  is refused (:func:`check_storage`).
* The supervisor binds the address first with ``SO_REUSEPORT`` and never listens on it: the
  port is reserved (``--listen HOST:0`` picks one, which every worker then joins) and no other
  user's process can join the group, since Linux admits only the same user to it.  A socket
  that does not listen is never given a connection.
* Workers are ``python -m swipepay.center.workers``; their settings arrive as one JSON object
  on stdin (no secrets in it: the worker reads the lab's keys itself) and each answers
  ``ready PORT`` on stdout once it listens.  A worker that exits is started again after a
  pause that doubles from 0.5 s to 30 s while it keeps failing (a database that refuses every
  start is not hammered), back to 0.5 s once a worker has served for a minute.  Each worker
  asks the kernel to SIGTERM it if the supervisor dies (``PR_SET_PDEATHSIG``), so a killed
  supervisor leaves no orphans holding the port.
* SIGTERM or SIGINT (Ctrl-C) to the supervisor stops every worker (SIGTERM: each closes its
  connections and its database) and then the supervisor.
* With ``--metrics``, workers write their Prometheus values into a directory the supervisor
  owns (prometheus_client's multiprocess mode) and the supervisor serves the sum of all of
  them, plus ``/healthz`` (healthy while every worker is ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swipepay.center.database import parse_url
from swipepay.center.metrics import MULTIPROC_ENV
from swipepay.firmware_sim.errors import ConfigError

if TYPE_CHECKING:
    from swipepay.center.server import ServerLimits

_log = logging.getLogger(__name__)

#: First pause before a failed worker is started again, and the longest (seconds).
RESTART_FIRST = 0.5
RESTART_LONGEST = 30.0
#: A worker that served this long before it exited is restarted after the first pause again.
_STABLE_AFTER = 60.0
#: How long a new worker may take to open its database and listen before it counts as failed.
_READY_TIMEOUT = 60.0
#: How long stopping workers get to close their connections before they are killed.
_STOP_GRACE = 10.0


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to serve: sent as JSON on its stdin."""

    home: str
    database: str
    host: str
    port: int
    idle_timeout: float
    max_connections: int
    supervisor: int  # the supervisor's pid (the worker stops when it is gone)
    index: int  # 1..N, for its log lines

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> WorkerSettings:
        try:
            fields: dict[str, Any] = json.loads(data)
            return cls(**fields)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"bad worker settings on stdin: {exc}") from None


def check_storage(database: str, workers: int) -> None:
    """Refuse ``workers`` > 1 on a storage only one process may write (SQLite)."""
    if workers > 1 and parse_url(database).kind == "sqlite":
        raise ConfigError(
            f"--workers {workers} needs PostgreSQL: a SQLite file has one writer at a time; "
            "use --db postgresql://USER@HOST/DB (swipepay init --db ...), or --workers 1"
        )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT`` and never listening: holds the
    port for the workers (``port`` 0: the kernel picks one)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers needs SO_REUSEPORT (Linux, BSD); use --workers 1")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    if port != 0:
        # Without SO_REUSEPORT first: a bind that fails here means another program (another
        # center of this user's included, which SO_REUSEPORT would silently join) has the port.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _Slot:
    """One worker position: its current process and its restart pause."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False
        self.pause = RESTART_FIRST


class Supervisor:
    """Runs ``workers`` worker processes on one address and keeps them running.

    ``on_ready(port)`` is called once, when every worker listens.  ``metrics_dir`` (prometheus
    multiprocess directory) is passed to the workers' environment, and every worker process that
    ended is marked dead in it, so its gauges leave the sums.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        workers: int,
        *,
        metrics_dir: Path | None = None,
    ) -> None:
        self._settings = settings
        self._slots = [_Slot(n + 1) for n in range(workers)]
        self._metrics_dir = metrics_dir
        self._stopping = False
        self._all_ready = asyncio.Event()

    @property
    def workers(self) -> int:
        return len(self._slots)

    def ready_count(self) -> int:
        return sum(1 for s in self._slots if s.ready)

    def health(self) -> tuple[bool, str]:
        """Healthy while every worker is ready (``/healthz``)."""
        ready = self.ready_count()
        text = f"{ready}/{self.workers} workers ready"
        return ready == self.workers and not self._stopping, text

    async def run(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Start the workers and keep them running until cancelled; then stop them all."""
        tasks = [asyncio.create_task(self._keep(slot)) for slot in self._slots]
        try:
            await self._wait_first_ready(tasks)
            if on_ready is not None:
                on_ready(self._settings.port)
            await asyncio.gather(*tasks)
        finally:
            self._stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_all()

    async def _wait_first_ready(self, tasks: list[asyncio.Task[None]]) -> None:
        ready = asyncio.create_task(self._all_ready.wait())
        try:
            done, _ = await asyncio.wait([ready, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        for task in done:
            if task is not ready:
                task.result()  # a slot that gave up: its error

    def _check_all_ready(self) -> None:
        if self.ready_count() == self.workers:
            self._all_ready.set()

    async def _keep(self, slot: _Slot) -> None:
        """Run the slot's worker, and again whenever it ends (with a growing pause)."""
        while not self._stopping:
            started = time.monotonic()
            await self._run_once(slot)
            if self._stopping:
                return
            if not self._all_ready.is_set():
                raise ConfigError(
                    f"worker {slot.index} exited before it listened (see its error above)"
                )
            if time.monotonic() - started >= _STABLE_AFTER:
                slot.pause = RESTART_FIRST
            _log.warning("worker %d exited; starting it again in %.1f s", slot.index, slot.pause)
            await asyncio.sleep(slot.pause)
            slot.pause = min(slot.pause * 2, RESTART_LONGEST)

    async def _run_once(self, slot: _Slot) -> None:
        settings = replace(self._settings, index=slot.index)
        env = dict(os.environ)
        if self._metrics_dir is not None:
            env[MULTIPROC_ENV] = str(self._metrics_dir)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "swipepay.center.workers",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        slot.proc = proc
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(settings.to_json())
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            proc.stdin.close()
            try:
                async with asyncio.timeout(_READY_TIMEOUT):
                    line = await proc.stdout.readline()
            except TimeoutError:
                _log.error("worker %d not ready after %.0f s; killed", slot.index, _READY_TIMEOUT)
                proc.kill()
                line = b""
            if line.startswith(b"ready "):
                slot.ready = True
                _log.info("worker %d (pid %d) listening", slot.index, proc.pid)
                self._check_all_ready()
            await proc.wait()
        finally:
            slot.ready = False
            if proc.returncode is not None:  # else cancelled: _stop_all stops it
                slot.proc = None
                self._exited(proc.pid)

    def _exited(self, pid: int) -> None:
        if self._metrics_dir is not None:
            from swipepay.center.metrics import worker_exited

            worker_exited(self._metrics_dir, pid)

    async def _stop_all(self) -> None:
        procs = [s.proc for s in self._slots if s.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in procs:
            try:
                async with asyncio.timeout(_STOP_GRACE):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            self._exited(proc.pid)
        for slot in self._slots:
            slot.proc = None


_METRICS_PREFIX = "swipepay-metrics-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def metrics_directory(parent: Path | None = None) -> Any:
    """A private directory for prometheus_client's per-process files, removed at the end.

    Its name carries the supervisor's pid; directories left by a supervisor that was killed
    (its pid gone) are removed first, so SIGKILLed centers do not pile up files."""
    base = Path(tempfile.gettempdir()) if parent is None else parent
    for stale in base.glob(f"{_METRICS_PREFIX}*-*"):
        pid = stale.name[len(_METRICS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and stale.stat().st_uid == os.getuid():
            shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def supervise(
    settings: WorkerSettings,
    workers: int,
    *,
    metrics_at: tuple[str, int] | None = None,
    on_ready: Callable[[int], None] | None = None,
    on_metrics: Callable[[int], None] | None = None,
) -> None:
    """Run the supervisor until SIGTERM or cancellation (Ctrl-C); every worker is stopped
    before this returns.  ``metrics_at``: serve the workers' summed metrics and ``/healthz``
    there (``on_metrics(port)`` once it listens).  A worker that cannot start at all (the
    database refuses it, the port is taken) is a :class:`ConfigError`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.ExitStack() as stack:
        reserved = stack.enter_context(reserve_port(settings.host, settings.port))
        settings = replace(settings, port=int(reserved.getsockname()[1]))
        metrics_dir = None if metrics_at is None else stack.enter_context(metrics_directory())
        supervisor = Supervisor(settings, workers, metrics_dir=metrics_dir)
        endpoint = None
        if metrics_at is not None and metrics_dir is not None:
            from swipepay.center.metrics import MetricsEndpoint, multiprocess_registry

            endpoint = MetricsEndpoint(multiprocess_registry(metrics_dir), supervisor.health)
            port = await endpoint.start(*metrics_at)
            if on_metrics is not None:
                on_metrics(port)
        run = asyncio.create_task(supervisor.run(on_ready))
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([run, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (run, stopper):
                task.cancel()
            results = await asyncio.gather(run, stopper, return_exceptions=True)
            if endpoint is not None:
                await endpoint.close()
        if run in done and isinstance(results[0], BaseException):
            raise results[0]


async def serve_center(
    home: Path,
    database: str,
    host: str,
    port: int,
    limits: ServerLimits,
    *,
    workers: int = 1,
    metrics_at: tuple[str, int] | None = None,
    on_ready: Callable[[int], None] | None = None,
    on_metrics: Callable[[int], None] | None = None,
) -> None:
    """``center serve``: one process (the server itself), or with ``workers`` > 1 a supervisor
    and its workers (:func:`supervise`); with ``metrics_at``, the metrics endpoint beside it.
    Runs until cancelled (Ctrl-C) or, with workers, SIGTERM."""
    from swipepay.center.server import lab_server, serve_forever

    if workers > 1:
        check_storage(database, workers)
        settings = WorkerSettings(
            home=str(home.resolve()), database=database, host=host, port=port,
            idle_timeout=limits.idle_timeout, max_connections=limits.max_connections,
            supervisor=os.getpid(), index=0,
        )  # fmt: skip
        await supervise(
            settings, workers, metrics_at=metrics_at, on_ready=on_ready, on_metrics=on_metrics
        )
        return
    if metrics_at is None:
        await serve_forever(lab_server(home, limits, database=database), host, port, on_ready)
        return
    from swipepay.center.metrics import MetricsEndpoint, PrometheusMetrics

    metrics = PrometheusMetrics()
    server = lab_server(home, limits, database=database, metrics=metrics)
    endpoint = MetricsEndpoint(metrics.registry, server.health)
    bound = await endpoint.start(*metrics_at)
    if on_metrics is not None:
        on_metrics(bound)
    try:
        await serve_forever(server, host, port, on_ready)
    finally:
        await endpoint.close()


# -- the worker process ---------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with(supervisor: int) -> None:
    """SIGTERM this process when its parent dies (Linux); exit at once if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:
        raise SystemExit(0)


async def _serve_worker(settings: WorkerSettings) -> None:
    from swipepay.center.server import ServerLimits, lab_server

    metrics = None
    if os.environ.get(MULTIPROC_ENV):
        from swipepay.center.metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
    server = lab_server(
        Path(settings.home),
        ServerLimits(idle_timeout=settings.idle_timeout, max_connections=settings.max_connections),
        database=settings.database,
        metrics=metrics,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await server.start(settings.host, settings.port, reuse_port=True)
        sys.stdout.write(f"ready {port}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await server.close()


def worker_main() -> int:
    """``python -m swipepay.center.workers``: serve until SIGTERM; 3 on a setup error."""
    from swipepay.center.server import new_event_loop
    from swipepay.firmware_sim.errors import SwipepayError

    settings = WorkerSettings.from_json(sys.stdin.buffer.read())
    _die_with(settings.supervisor)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker {settings.index} %(levelname)s %(message)s",
    )
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_serve_worker(settings))
    except SwipepayError as exc:
        _log.error("%s", exc)
        return 3
    except OSError as exc:
        _log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main())
