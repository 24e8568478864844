"""Prometheus metrics of the payment center, summed across its worker processes.

What is measured (every name starts with ``swipepay_center_``):

* ``requests_total{kind,code}`` (counter): requests answered, by kind (:data:`KINDS`) and ISO
  8583 field 39 response code, so the approvals ("00") and each decline reason of each
  transaction type are one series each.
* ``request_seconds`` (histogram): from a frame's arrival to its answer written.  Buckets
  0.5 ms - 2.5 s: an answer waits for its batch's commit (~0.5 ms on SQLite, more on
  PostgreSQL) and at most a second for the signature verifier.
* ``batch_size`` and ``commit_seconds`` (histograms): one observation per group-commit batch,
  its request count and how long its COMMIT took (from its last decision to the commit's end:
  an fsync on SQLite, a round trip and the server's WAL flush on PostgreSQL).
* ``open_connections`` (gauge): authenticated terminal connections open.
* ``verifier_up`` (gauge): 1 while the signature-verifier child process runs, else 0; summed
  over workers, the number of workers whose verifier runs.
* ``database_errors_total{kind}`` (counter): batches hit by a storage failure, by kind
  (:data:`DATABASE_ERRORS`).

The server calls the hooks of :class:`ServerMetrics`, whose methods do nothing, so a center
without ``--metrics`` pays one empty call per hook.  :class:`PrometheusMetrics` records them;
:class:`MetricsEndpoint` serves a registry over HTTP on the center's event loop.

Worker processes (``center serve --workers N``).  In *multiprocess mode* prometheus_client keeps
each process's values in memory-mapped files under the directory named by the environment
variable ``PROMETHEUS_MULTIPROC_DIR``, one file per process and metric type, named by pid.  The
supervisor serves :func:`multiprocess_registry`, which sums the files on every scrape: counters
and histograms over every process that ever wrote there (a dead worker's counts stay, so totals
never go backwards), gauges (``livesum``) over live processes only, once the supervisor has
called :func:`worker_exited` for each worker it reaped.  What this asks of the supervisor:

* prometheus_client chooses file-backed or in-memory values **when it is imported**, from
  ``PROMETHEUS_MULTIPROC_DIR`` in the environment.  A worker must have the variable in the
  environment it is started with (``subprocess.Popen(..., env=...)``); setting ``os.environ``
  in the worker after anything imported prometheus_client silently records into memory that
  nobody reads.  :class:`PrometheusMetrics` raises :class:`RuntimeError` when it finds the
  variable set but the values in memory.
* The supervisor itself needs no multiprocess mode: :func:`multiprocess_registry` only reads
  the files.  It should leave the variable out of its own environment so that metrics it keeps
  for itself are not mixed into the workers' files under its pid.
* The directory must hold no files of an earlier run (their pids' counts would be summed in):
  :func:`clear_directory` at start-up.
* One :class:`PrometheusMetrics` per worker process: two in one process would write the same
  entries of the same files over each other.

Cost: the hot hook, :meth:`PrometheusMetrics.answered`, finds the counter child for its
``(kind, code)`` in a dict (prometheus_client's label checks and locked lookup run once per
pair) and does three value increments: ~1.8 us per call in memory, ~3.9 us file-backed (each
increment takes a lock, checks the pid for a fork and writes into the mmap), measured with
timeit on the 2-core development machine; at 1,000 answers/s that is under 0.4 % of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest

_log = logging.getLogger(__name__)

#: The environment variable that puts prometheus_client in multiprocess mode at import.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

#: The ``kind`` label values of ``requests_total``: the transaction types, reversals, and
#: ``other`` (network management messages, anything else).  A kind not listed is counted as
#: ``other``, so the number of series stays bounded whatever a caller passes.
KINDS: Final = (
    "purchase",
    "withdrawal",
    "deposit",
    "preauth",
    "completion",
    "balance",
    "reversal",
    "other",
)
#: The ``kind`` label values of ``database_errors_total`` (:meth:`ServerMetrics.database_error`);
#: an unlisted kind is counted as ``other``.
DATABASE_ERRORS: Final = ("unavailable", "conflict", "commit_unknown", "malfunction")

#: ``request_seconds`` buckets: fine around a commit's milliseconds, up to the verifier's 1 s wait.
REQUEST_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
#: ``batch_size`` buckets: requests per group commit (~8 under load).
BATCH_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
#: ``commit_seconds`` buckets: a SQLite fsync (~0.5 ms) to a slow PostgreSQL round trip.
COMMIT_BUCKETS: Final = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0)

_PREFIX: Final = "swipepay_center_"


def approvals_kind(req: object) -> str:
    """The ``kind`` label of a request the server answers: its transaction type for an
    :class:`AuthRequest`, ``reversal`` for a reversal, ``other`` for anything else (network
    management messages)."""
    if isinstance(req, AuthRequest):
        return str(req.txn.type.value)
    if isinstance(req, codec.ReversalRequest):
        return "reversal"
    return "other"


class ServerMetrics:
    """What the server reports as it runs; these do nothing, so a center without ``--metrics``
    pays one empty call per hook.  :class:`PrometheusMetrics` records them."""

    def answered(self, kind: str, code: str, seconds: float) -> None:
        """One request answered: ``kind`` from :data:`KINDS` (:func:`approvals_kind`), ``code``
        its field 39, ``seconds`` from its frame's arrival to its answer written."""

    def batch(self, size: int, commit_seconds: float) -> None:
        """One group-commit batch of ``size`` requests decided and committed in
        ``commit_seconds``."""

    def connection_opened(self) -> None:
        """An authenticated terminal connection is now open."""

    def connection_closed(self) -> None:
        """An authenticated terminal connection (one :meth:`connection_opened`) ended."""

    def verifier(self, up: bool) -> None:
        """Whether the signature-verifier child process runs now."""

    def database_error(self, kind: str) -> None:
        """A batch hit a storage failure; ``kind`` from :data:`DATABASE_ERRORS`."""


def _in_multiprocess_mode() -> bool:
    """Whether prometheus_client's values are file-backed in this process (decided at import)."""
    return values.ValueClass is not values.MutexValue


class PrometheusMetrics(ServerMetrics):
    """The hooks as prometheus_client metrics in ``registry``, by default a private one (never
    the global ``REGISTRY``, so a process can hold more than one in memory mode, e.g. tests).

    In a worker started with ``PROMETHEUS_MULTIPROC_DIR`` in its environment the values also go
    to that directory's files, which the supervisor sums (see the module docstring); the
    registry then holds this process's own values only.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if os.environ.get(MULTIPROC_ENV) and not _in_multiprocess_mode():
            raise RuntimeError(
                f"{MULTIPROC_ENV} is set but prometheus_client was imported before it was: "
                "this process's metrics would stay in memory; put the variable in the "
                "environment the process is started with"
            )
        directory = os.environ.get(MULTIPROC_ENV)
        if directory and not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
            raise ConfigError(
                f"{MULTIPROC_ENV}={directory} is not a writable directory (prometheus_client "
                "keeps each process's values there): create it, or unset the variable"
            )
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        reg = self.registry
        self._requests = Counter(
            _PREFIX + "requests",
            "Requests answered, by kind and ISO 8583 field 39 response code.",
            ("kind", "code"),
            registry=reg,
        )
        self._request_seconds = Histogram(
            _PREFIX + "request_seconds",
            "Seconds from a request frame's arrival to its answer written.",
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self._batch_size = Histogram(
            _PREFIX + "batch_size",
            "Requests per group-commit batch.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self._commit_seconds = Histogram(
            _PREFIX + "commit_seconds",
            "Seconds one group-commit batch's COMMIT took, from its last decision.",
            buckets=COMMIT_BUCKETS,
            registry=reg,
        )
        self._open_connections = Gauge(
            _PREFIX + "open_connections",
            "Authenticated terminal connections open.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._verifier_up = Gauge(
            _PREFIX + "verifier_up",
            "1 while the signature-verifier process runs; summed: workers whose verifier runs.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._database_errors = Counter(
            _PREFIX + "database_errors",
            "Batches hit by a storage failure, by kind.",
            ("kind",),
            registry=reg,
        )
        #: (kind, code) -> the bound ``inc`` of its ``requests_total`` child: one dict lookup
        #: per answer instead of prometheus_client's label checks and locked lookup.
        self._answered: dict[tuple[str, str], Callable[[], None]] = {}
        self._observe_request = self._request_seconds.observe
        #: Every known kind exists from the start, at 0, so a rate over it is defined.
        self._db_errors: dict[str, Callable[[], None]] = {
            k: self._database_errors.labels(k).inc for k in (*DATABASE_ERRORS, "other")
        }

    def answered(self, kind: str, code: str, seconds: float) -> None:
        try:
            inc = self._answered[(kind, code)]
        except KeyError:
            inc = self._answered[(kind, code)] = self._requests_child(kind, code)
        inc()
        self._observe_request(seconds)

    def _requests_child(self, kind: str, code: str) -> Callable[[], None]:
        """The ``inc`` of the child for a pair not seen yet: an unknown kind counts as
        ``other`` and a code that is not two ASCII letters or digits as ``invalid``, so a
        caller's mistake cannot make series without bound (each is a file entry per worker)."""
        label_kind = kind if kind in KINDS else "other"
        valid = len(code) == 2 and code.isascii() and code.isalnum()
        inc: Callable[[], None] = self._requests.labels(
            label_kind, code if valid else "invalid"
        ).inc
        return inc

    def batch(self, size: int, commit_seconds: float) -> None:
        self._batch_size.observe(size)
        self._commit_seconds.observe(commit_seconds)

    def connection_opened(self) -> None:
        self._open_connections.inc()

    def connection_closed(self) -> None:
        self._open_connections.dec()

    def verifier(self, up: bool) -> None:
        self._verifier_up.set(1 if up else 0)

    def database_error(self, kind: str) -> None:
        self._db_errors.get(kind, self._db_errors["other"])()


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that sums the workers' files in ``directory`` on every collection (what the
    supervisor serves).  Reading needs no multiprocess mode in this process.  ``directory``
    must exist (:class:`ValueError` otherwise)."""
    registry = CollectorRegistry()
    # prometheus_client leaves these two unannotated.
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def worker_exited(directory: Path, pid: int) -> None:
    """Forget the gauges of worker ``pid``, reaped by the supervisor: its open connections and
    verifier leave the live sums.  Its counters and histograms stay in the totals."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]  # unannotated


def clear_directory(directory: Path) -> None:
    """Make ``directory`` ready for a new run of workers: created if missing, and the metric
    files of an earlier run removed (else their counts would be summed into this run's).
    Only prometheus_client's ``*.db`` files are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


#: Longest request head (request line + headers) the endpoint reads; longer is refused.
_MAX_HEAD: Final = 8192

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain; charset=utf-8"


class MetricsEndpoint:
    """Prometheus' scrape target over plain HTTP/1.x, on the running event loop (no thread):

    * ``GET /metrics``: ``registry`` in the Prometheus text format;
    * ``GET /healthz``: 200 ``ok <detail>`` when ``health()`` returns ``(True, detail)``, 503
      with ``detail`` when it returns ``(False, detail)`` or raises;
    * ``HEAD`` of either: the same without a body; other paths 404, other methods 405.

    One request per connection (``Connection: close``).  A request head longer than 8 KiB is
    answered 431, one that is not HTTP 400, and a client that has not sent its head within
    ``timeout`` seconds, or does not read its answer within it, is disconnected; at most
    ``max_clients`` connections are served at once, more are closed on arrival.  Failures are
    logged in one line and answered with a status, never a traceback.

    Collecting runs on the loop, which it holds for the while: ~1.3 ms for a center's own
    registry with 48 (kind, code) pairs, ~1.8 ms for a multiprocess registry over four workers'
    files; once per scrape interval.  A thread would not help: collecting holds the GIL.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, str]],
        *,
        timeout: float = 5.0,
        max_clients: int = 16,
    ) -> None:
        self._registry = registry
        self._health = health
        self._timeout = timeout
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        #: The connections being served: each one's handler task and writer.
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def clients(self) -> int:
        """How many connections are being served now (those closed on arrival not counted)."""
        return len(self._clients)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); the bound port.  An address that cannot
        be bound is a :class:`ConfigError` naming ``--metrics`` (not the terminals' address)."""
        try:
            self._server = await asyncio.start_server(self._handle, host, port, limit=_MAX_HEAD)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} (--metrics): {exc.strerror or exc}"
            ) from None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop the connections being served."""
        if self._server is not None:
            self._server.close()
        # Aborting a client's connection ends its handler (its read or drain fails at once);
        # cancelling the handler instead would make asyncio's stream callback log a traceback.
        for writer in self._clients.values():
            writer.transport.abort()
        if self._clients:
            _, stuck = await asyncio.wait(list(self._clients), timeout=self._timeout)
            for task in stuck:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= self._max_clients:
            writer.transport.abort()
            return
        self._clients[task] = writer
        answered = False
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    status, ctype, body, send_body = 431, _TEXT, b"request head too large\n", True
                else:
                    status, ctype, body, send_body = self._respond(head)
                writer.write(_response(status, ctype, body, send_body))
                await writer.drain()
                answered = True
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # slow, gone mid-request, or reset: nothing to answer
        except OSError as exc:
            _log.debug("metrics client: %s", exc)
        except Exception as exc:  # a bug here must not become asyncio's logged traceback
            _log.error("metrics endpoint: %s: %s", type(exc).__name__, exc)
        finally:
            del self._clients[task]
            if answered:
                writer.close()  # the answer is with the kernel: an orderly close
            else:
                writer.transport.abort()  # drop whatever is unsent to a client that went quiet

    def _respond(self, head: bytes) -> tuple[int, str, bytes, bool]:
        """Status, content type, body and whether to send the body, for a request head."""
        request_line = head.split(b"\r\n", 1)[0]
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, _TEXT, b"bad request\n", True
        method, target = parts[0], parts[1]
        path = target.split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, _TEXT, b"method not allowed\n", True
        send_body = method == b"GET"
        if path == b"/metrics":
            try:
                data = generate_latest(self._registry)
            except Exception as exc:  # e.g. a worker's file unreadable: an answer, not a crash
                _log.error("collecting metrics failed: %s: %s", type(exc).__name__, exc)
                return 500, _TEXT, b"collecting metrics failed\n", send_body
            return 200, CONTENT_TYPE_LATEST, data, send_body
        if path == b"/healthz":
            try:
                ok, detail = self._health()
            except Exception as exc:
                _log.error("health check failed: %s: %s", type(exc).__name__, exc)
                ok, detail = False, "health check failed"
            if ok:
                text = f"ok {detail}".rstrip() + "\n"
                return 200, _TEXT, text.encode(), send_body
            return 503, _TEXT, (detail or "unhealthy").rstrip().encode() + b"\n", send_body
        return 404, _TEXT, b"not found\n", send_body


def _response(status: int, ctype: str, body: bytes, send_body: bool) -> bytes:
    """One HTTP/1.1 response that closes the connection."""
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    )
    if status == 405:
        head += "Allow: GET, HEAD\r\n"
    return (head + "\r\n").encode("ascii") + (body if send_body else b"")
