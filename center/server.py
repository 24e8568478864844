"""The payment center as a real server: ISO 8583 over mutual TLS 1.3 (hardware_notes/design.md §6).

* TLS 1.3 only, client certificate required and issued by the lab CA; the terminal ID is the
  certificate's CN and must equal field 41 (else 63: a terminal cannot speak for another).
* The event-loop thread decides and commits; it is the only user of the SQLite connection.
  Requests go to a queue; the batcher lets every request that is already readable reach the
  queue, decides them all inside one ``center.batch()`` (each request its own savepoint),
  commits once, and only then releases the responses (group commit: never a response before
  its commit; one fsync per batch, not per transaction).  If the commit fails, every response
  of the batch becomes 96 and nothing of it stays.  The next batch is decided only after the
  previous one is committed or rolled back, so every decision sees the durable state of every
  earlier answer.  The loop is blocked for the commit's fsync (~0.5 ms for ~8 requests).
* The phone's ECDSA signature, the largest piece of work that needs no database state, is
  checked in a child process (:mod:`center.verifier`) as soon as the request arrives, against
  the card's phone key as the center last saw it; the decision uses the answer only if it is
  for exactly the check it needs (the card's enrolled key, this request's digest and
  signature), else, or if the child is gone or kept a batch waiting a second, it verifies
  inline.  So the second core verifies the next batch while the loop decides and commits this
  one.  Requests whose answer is not in yet when the batch is cut are decided last in it,
  after waiting for it (the order inside a batch is free: its requests were in flight
  together).
* Why one thread decides and commits: deciding is Python-heavy, so a second Python thread
  only adds GIL hand-overs; what the second core can take is the signature checks, in a
  process.  Fewer, larger batches make the throughput (CHANGELOG.md has the figures).
* Bad input (length prefix, truncated/oversize frame, undecodable body, unknown MTI, missing
  fields) gets a field-39 = 30 answer when ISO 8583:1987 answers its MTI (``codec.response_mti``),
  else the connection is closed; it is logged and never reaches the ledger.  Idle and slow
  clients are timed out, connections capped.
* TCP is accepted plain and each connection runs its own handshake (:mod:`center.tls_stream`),
  under the handshake timeout and a cap on handshakes in progress, so a connection that never
  authenticates frees everything it had as soon as it ends.
* When the database connection breaks while ``COMMIT`` is on its way (PostgreSQL), nobody knows
  whether the batch stayed: its connections are closed unanswered, and each terminal's
  retransmission or reversal settles it (exactly-once finds the stored answer, or decides
  afresh).  Any other storage failure answers the whole batch at once (91 or 96).
* The event loop is uvloop's where it is installed (:func:`new_event_loop`): the same asyncio
  API for ~15 % less CPU per approval.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from swipepay.center.core import Center, fields_hash, wire_hash
from swipepay.center.metrics import ServerMetrics, approvals_kind
from swipepay.center.response_codes import RC
from swipepay.center.storage import (
    CommitOutcomeUnknown,
    MessageKey,
    StorageConflict,
    StorageUnavailable,
)
from swipepay.center.tls_stream import TlsStream
from swipepay.center.verifier import SignatureCheck, VerifierProcess
from swipepay.drivers.tls_identity import load_identity
from swipepay.firmware_sim.errors import DecodeError, SwipepayError
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse

_log = logging.getLogger(__name__)


#: Longest a batch waits for the verifier's answers before deciding inline (seconds).
_VERIFIER_WAIT = 1.0
#: How many times a batch is decided when other processes' transactions keep conflicting.
_CONFLICT_ATTEMPTS = 5


@dataclass(frozen=True)
class ServerLimits:
    idle_timeout: float = 30.0  # no byte for this long: close
    frame_timeout: float = 5.0  # a started frame not complete after this long: close
    handshake_timeout: float = 5.0  # TCP connected, TLS handshake not done after this long: close
    #: Authenticated connections (a terminal fleet); one more is closed after its handshake.
    #: Each is a file descriptor: ``center serve`` fits it in the open-file limit (fdlimit.py).
    max_connections: int = 10_000
    max_handshakes: int = 256  # handshakes in progress; one more TCP connection is closed at once
    #: TCP connections the kernel completes and queues while the loop has not accepted them
    #: (a fleet reconnecting after a restart arrives at once; asyncio's default of 100 has the
    #: rest's SYNs dropped and retried 1, 3, 7 s later).  Linux caps it at net.core.somaxconn.
    listen_backlog: int = socket.SOMAXCONN


class _Unanswered(Exception):
    """The batch's outcome is unknown (:class:`CommitOutcomeUnknown`): close, do not answer."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The center's event loop: uvloop's when it is installed (less CPU per request for the
    same asyncio API), else asyncio's own.  Pass it as ``asyncio.Runner(loop_factory=...)``."""
    try:
        import uvloop
    except ImportError:  # not on this platform: asyncio's loop does the same job, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No TLS 1.3 session tickets: terminals keep one connection and never resume a session, and
    # issuing the default two costs ~1 ms of CPU per handshake (~30 % of a mutual-TLS accept).
    ctx.num_tickets = 0
    load_identity(ctx, ca, cert, key, "the center")
    return ctx


def peer_terminal_id(cert: dict[str, Any]) -> str | None:
    """The subject CN of a verified client certificate (``getpeercert()`` form): the terminal ID."""
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


#: A signature check sent to the verifier process ahead, and its result.
_Ticket = tuple[SignatureCheck, "asyncio.Future[bool]"]
#: A request's wire hash (:func:`center.core.wire_hash`) and its decoded fields (for the hash
#: earlier builds stored, :func:`center.core.fields_hash`, asked for only on a key collision).
_Content = tuple[bytes, dict[str, Any]]
#: A request, its content, its ahead check, its answer.
_Job = tuple[codec.Request, _Content, _Ticket | None, "asyncio.Future[AuthResponse]"]


class CenterServer:
    """Owns the Center (opened and closed on a helper thread), the signature verifier process,
    the batcher and the listening socket.  ``use_verifier=False`` verifies every signature on
    the event loop instead (no child process)."""

    def __init__(
        self,
        open_center: Callable[[], Center],
        ssl_context: ssl.SSLContext,
        limits: ServerLimits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        use_verifier: bool = True,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._open_center = open_center
        self.metrics = metrics or ServerMetrics()
        self._ssl = ssl_context
        self.limits = limits or ServerLimits()
        self._clock = clock
        #: Opens and closes the Center (a SQLite open may wait for another process's lock).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="center")
        self._center: Center | None = None
        self._use_verifier = use_verifier
        self._verifier: VerifierProcess | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._connections = 0
        self._handshaking = 0
        #: TCP connections closed without a completed handshake: failed or timed out / refused
        #: because :attr:`ServerLimits.max_handshakes` were in progress.
        self.handshakes_failed = 0
        self.handshakes_refused = 0
        #: Authenticated connections closed because :attr:`ServerLimits.max_connections` were open.
        self.connections_refused = 0
        self._server: asyncio.Server | None = None
        self._batcher: asyncio.Task[None] | None = None
        self.batches = 0
        self.decided = 0

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Open the database, start the verifier, listen; the bound port.  ``reuse_port``:
        share the address with other processes doing the same (``center serve --workers``)."""
        loop = asyncio.get_running_loop()
        self._center = await loop.run_in_executor(self._executor, self._open_center)
        if self._use_verifier:
            try:
                self._verifier = await VerifierProcess.start()
            except OSError as exc:
                _log.error("cannot start the signature verifier (%s); verifying inline", exc)
        self.metrics.verifier(self._verifier is not None)
        self._batcher = asyncio.create_task(self._run_batches())
        # Plain TCP: the handshake is run per connection by :class:`TlsStream` (see there why).
        self._server = await asyncio.start_server(
            self._handle,
            host,
            port,
            reuse_port=reuse_port or None,
            backlog=self.limits.listen_backlog,
        )
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._batcher is not None:
            self._batcher.cancel()
            # A batch waiting for the verifier rolls back before the Center closes.
            await asyncio.gather(self._batcher, return_exceptions=True)
        center = self._center
        if center is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, center.close)
        self._executor.shutdown(wait=True)
        if self._verifier is not None:
            await self._verifier.close()
            self.metrics.verifier(False)

    # -- group commit ---------------------------------------------------------------------------

    async def _run_batches(self) -> None:
        center = self._center
        assert center is not None
        while True:
            jobs = [await self._queue.get()]
            # Let requests that are already readable reach the queue before the batch is cut:
            # fewer, larger batches mean fewer commits (fsyncs) per request.
            seen = -1
            for _ in range(4):
                if self._queue.qsize() == seen:
                    break
                seen = self._queue.qsize()
                await asyncio.sleep(0)
            while not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            responses = await self._decide(center, jobs)
            if self._verifier is not None and self._verifier.failed and not self._verifier_down:
                self._verifier_down = True  # it failed or was given up: inline from now on
                self.metrics.verifier(False)
            self.batches += 1
            self.decided += len(jobs)
            if responses is None:
                for *_, fut in jobs:
                    if not fut.done():
                        fut.set_exception(_Unanswered())
                continue
            for (*_, fut), resp in zip(jobs, responses, strict=True):
                if not fut.done():
                    fut.set_result(resp)

    #: Set while the database is unreachable, so an outage is logged once, not per batch.
    _storage_down = False
    #: The verifier's failure has been reported to the metrics.
    _verifier_down = False

    def health(self) -> tuple[bool, str]:
        """``/healthz`` of a one-process center: unhealthy while the database is unreachable."""
        if self._storage_down:
            return False, "database unavailable"
        return True, "serving"

    async def _decide(self, center: Center, jobs: list[_Job]) -> list[AuthResponse] | None:
        """Decide every job in one storage transaction and commit it (on the loop thread): the
        answers, or the same failure answer for all if the batch could not be committed, or
        ``None`` when nobody knows whether it was (:class:`CommitOutcomeUnknown`).

        Requests whose signature check is still with the verifier are decided last, after
        waiting for it (its answer usually arrives while the others are decided).  The batch's
        cards and accounts are locked first, in one order (:meth:`Center.batch`).  A
        :class:`StorageConflict` (another process's transaction got in the way; nothing of
        this batch stayed) decides the whole batch again, up to :data:`_CONFLICT_ATTEMPTS`
        times, then answers 96; the retry finds whatever the other writer committed, such as
        the stored answer to a retransmission.  :class:`StorageUnavailable` answers 91 for the
        whole batch at once; the storage reconnects at the next batch.
        """
        now = self._clock()
        #: Job index -> the verifier answer it still waits for.
        pending = {
            n: t[1] for n, (_, _, t, _) in enumerate(jobs) if t is not None and not t[1].done()
        }
        locks: list[AuthRequest | MessageKey] = []
        for req, *_ in jobs:
            if isinstance(req, AuthRequest):
                locks.append(req)
            elif isinstance(req, codec.ReversalRequest):
                locks.append(MessageKey(req.terminal_id, req.original_stan, req.original_at))
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            out: dict[int, AuthResponse] = {}
            try:
                # Awaiting inside the transaction is safe: no other coroutine uses the storage.
                with center.batch(locks):
                    for n, job in enumerate(jobs):
                        if n not in pending:
                            out[n] = self._decide_one(center, job, now)
                    if pending:
                        _, late = await asyncio.wait(pending.values(), timeout=_VERIFIER_WAIT)
                        if late and self._verifier is not None:
                            self._verifier.give_up(f"no answer within {_VERIFIER_WAIT} s")
                        for n in pending:
                            out[n] = self._decide_one(center, jobs[n], now)
                    decided = time.perf_counter()
                # From the batch's last decision to the end of its COMMIT.
                self.metrics.batch(len(jobs), time.perf_counter() - decided)
            except StorageConflict as exc:
                self.metrics.database_error("conflict")
                _log.debug("batch of %d, try %d: %s; deciding it again", len(jobs), attempt, exc)
                # A short random pause, so the writers that collided do not collide again.
                await asyncio.sleep(random.uniform(0, 0.002 * attempt))
                continue
            except CommitOutcomeUnknown as exc:
                self.metrics.database_error("commit_unknown")
                self._storage_down = True
                _log.error(
                    "%s: closing the %d connections of the batch unanswered (their "
                    "retransmissions settle it)", exc, len(jobs),
                )  # fmt: skip
                return None
            except StorageUnavailable as exc:
                self.metrics.database_error("unavailable")
                if not self._storage_down:
                    self._storage_down = True
                    _log.error("database unavailable: %s; answering 91 until it is back", exc)
                return _unavailable(len(jobs))
            except Exception:
                self.metrics.database_error("malfunction")
                _log.exception("group commit of %d requests failed", len(jobs))
                return _malfunction(len(jobs))
            if self._storage_down:
                self._storage_down = False
                _log.warning("database reachable again; deciding requests")
            return [out[n] for n in range(len(jobs))]
        self.metrics.database_error("malfunction")
        _log.error(
            "batch of %d requests still conflicting after %d attempts; answered 96",
            len(jobs),
            _CONFLICT_ATTEMPTS,
        )
        return _malfunction(len(jobs))

    @staticmethod
    def _decide_one(center: Center, job: _Job, now: datetime) -> AuthResponse:
        req, (content_hash, fields), ticket, _ = job
        if isinstance(req, AuthRequest):
            checked = None
            if ticket is not None:
                item, fut = ticket
                if fut.done() and fut.exception() is None:  # else: verified inline
                    checked = (item, fut.result())
            return center.authorize(
                req, now, checked, content_hash=content_hash,
                earlier_hash=lambda: fields_hash(fields),
            )  # fmt: skip
        if isinstance(req, codec.ReversalRequest):
            return center.reverse(
                req.terminal_id,
                req.original_stan,
                req.original_at,
                req.amount,
                original_amount=req.original_amount,
                now=now,
            )
        return AuthResponse(RC.APPROVED.value)

    async def submit(self, req: codec.Request, content: _Content) -> AuthResponse:
        """Queue ``req`` (``content``: its wire message's hash and decoded fields) for the next
        batch (its phone signature goes to the verifier now); its answer once the batch is
        committed."""
        ticket: _Ticket | None = None
        if isinstance(req, AuthRequest) and self._verifier is not None:
            assert self._center is not None
            item = self._center.signature_check(req)
            if item is not None:
                fut = self._verifier.submit(item)
                ticket = None if fut is None else (item, fut)
        answer: asyncio.Future[AuthResponse] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((req, content, ticket, answer))  # unbounded: never full
        return await answer

    # -- connections ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = await self._handshake(reader, writer)
        if tls is None:
            return
        peer = writer.get_extra_info("peername")
        if self._connections >= self.limits.max_connections:
            self.connections_refused += 1  # counted, logged now and then: a fleet reconnects
            if self.connections_refused % 1000 == 1:
                _log.warning(
                    "%s: connection cap %d reached; closed (%d so far)",
                    peer, self.limits.max_connections, self.connections_refused,
                )  # fmt: skip
            tls.close()
            return
        self._connections += 1
        self.metrics.connection_opened()
        try:
            tid = peer_terminal_id(tls.peercert)
            if tid is None:
                _log.warning("%s: no client certificate CN; closed", peer)
                return
            await self._serve(tls, tid)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            _log.info("%s: connection ended: %s", peer, type(exc).__name__)
        finally:
            self._connections -= 1
            self.metrics.connection_closed()
            tls.close()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> TlsStream | None:
        """The mutual TLS 1.3 handshake of a new TCP connection, within the handshake timeout;
        ``None`` (and the socket closed) if it fails, times out, or too many are in progress.

        Failures are counted, not logged one by one: anyone can open TCP connections.
        """
        if self._handshaking >= self.limits.max_handshakes:
            self.handshakes_refused += 1
            if self.handshakes_refused % 1000 == 1:
                _log.warning(
                    "%d TLS handshakes in progress: new connections closed (%d so far)",
                    self.limits.max_handshakes,
                    self.handshakes_refused,
                )
            writer.close()
            return None
        self._handshaking += 1
        try:
            return await TlsStream.accept(reader, writer, self._ssl, self.limits.handshake_timeout)
        except (ssl.SSLError, OSError) as exc:  # TimeoutError and ConnectionError are OSErrors
            self.handshakes_failed += 1
            _log.debug("%s: TLS handshake failed: %s", writer.get_extra_info("peername"), exc)
            writer.close()
            return None
        finally:
            self._handshaking -= 1

    async def _serve(self, tls: TlsStream, tid: str) -> None:
        loop = asyncio.get_running_loop()
        decoder = codec.FrameDecoder()
        started: float | None = None
        while True:
            if started is None:
                until = loop.time() + self.limits.idle_timeout
            else:
                until = started + self.limits.frame_timeout
            try:
                data = await tls.read(65536, until)
            except TimeoutError as exc:
                exc.__traceback__ = None  # the stream keeps it: no cycle through these frames
                _log.warning(
                    "%s: %s client timed out; closed",
                    tid,
                    "slow" if started is not None else "idle",
                )
                return
            if not data:
                if decoder.pending:
                    _log.warning(
                        "%s: truncated frame (%d bytes) at end of stream", tid, decoder.pending
                    )
                return
            try:
                frames = decoder.feed(data)
            except codec.FrameError as exc:
                _log.warning("%s: %s; closed", tid, exc)
                return
            started = (started or loop.time()) if decoder.pending else None
            for body in frames:
                answer = await self._answer(body, tid, time.perf_counter())
                if answer is None:
                    return
                tls.write(codec.frame(answer))
                await tls.drain()

    async def _answer(self, body: bytes, tid: str, received: float) -> bytes | None:
        """The encoded answer to one frame (``received``: its perf_counter time, for the
        latency metric), or ``None``: close the connection unanswered."""
        try:
            fields = codec.decode(body)
            req = codec.parse_request(fields)
        except DecodeError as exc:
            _log.warning("%s: format error: %s", tid, exc)
            err = codec.format_error_fields(body, "format error")
            self.metrics.answered("other", RC.FORMAT_ERROR.value, time.perf_counter() - received)
            return None if err is None else codec.encode(err)
        req_tid = req.txn.terminal_id if isinstance(req, AuthRequest) else req.terminal_id
        if req_tid != tid:
            _log.warning("certificate %s sent field 41 %r; refused", tid, req_tid)
            resp = AuthResponse(RC.SECURITY_VIOLATION.value, message="field 41 mismatch")
        else:
            try:
                resp = await self.submit(req, (wire_hash(body), fields))
            except _Unanswered:
                return None
        elapsed = time.perf_counter() - received
        self.metrics.answered(approvals_kind(req), resp.response_code, elapsed)
        try:
            return codec.encode(codec.response_fields(fields, resp))
        except SwipepayError as exc:  # an echoed field we cannot re-encode: should not happen
            _log.error("%s: cannot encode response: %s", tid, exc)
            return None


def _unavailable(count: int) -> list[AuthResponse]:
    return [
        AuthResponse(RC.ISSUER_INOPERATIVE.value, message="database unavailable; try again later")
        for _ in range(count)
    ]


def _malfunction(count: int) -> list[AuthResponse]:
    return [
        AuthResponse(RC.SYSTEM_MALFUNCTION.value, message="system malfunction")
        for _ in range(count)
    ]


async def serve_forever(
    server: CenterServer, host: str, port: int, ready: Callable[[int], None] | None = None
) -> None:
    bound = await server.start(host, port)
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def lab_server(
    home: Path,
    limits: ServerLimits | None = None,
    *,
    use_verifier: bool = True,
    database: str | None = None,
    metrics: ServerMetrics | None = None,
) -> CenterServer:
    """A server for the lab at ``home``: its CA, center certificate, keys and database
    (``database``, a URL or path, instead of the lab's own when given)."""
    from swipepay.center.lab import Lab

    lab = Lab(home)
    keys = lab.center_keys()
    url = lab.database_url if database is None else database
    ctx = server_context(
        home / "ca" / "ca.crt", home / "center" / "center.crt", home / "center" / "center.key"
    )
    return CenterServer(
        lambda: Center.open(url, keys), ctx, limits, use_verifier=use_verifier, metrics=metrics
    )
