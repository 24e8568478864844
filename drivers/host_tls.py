"""The terminal's Host over ISO 8583 / mutual TLS 1.3, with a store-and-forward reversal queue.

* One persistent connection, reopened when it breaks.  A request whose connection broke before
  the answer came is sent again, byte for byte, on the new connection: the center recognises the
  retransmission (terminal, STAN, transmission time, same content) and answers the original
  response without moving money twice.
* If no answer arrives within ``timeout``, the terminal cannot know whether money moved: it puts
  a 0400 reversal in the queue on disk (the terminal store's
  :class:`~drivers.store.reversal_queue.ReversalQueue`, handed in by the caller: fsynced before
  we go on), tries to send it at once, and raises :class:`LinkTimeout`.  Pending reversals
  survive a restart and are sent first after every (re)connect; each leaves the queue only once
  the center answered.  So does the reversal of a request that had to be sent again and was
  then answered 91 or 96: the center could not decide the copy it answered, so it could not tell
  whether an earlier copy had been approved.
* **Failover**: a host may be given several centers, tried in order on every new connection.
  A center that refuses the connection, fails the TLS handshake or does not answer in its share
  of the time is skipped and the next one tried.  A request that got no answer from one center
  is sent, byte for byte (same STAN, transmission time, every field), to the next: centers that
  share one database answer a retransmission with the stored answer (exactly-once by terminal,
  STAN and transmission time), so no money moves twice.  Each center gets an equal share of
  what is left of the request's time, so a silent first center leaves time for the second.
  Queued reversals go to whichever center answers the connection.  An *answer* ends the
  request, 91 and 96 included: centers share one database, so a center that could not reach
  it would be followed by another that cannot either, and the terminal shows the decline.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from swipepay.drivers.store.reversal_queue import ReversalQueue
from swipepay.drivers.store.terminal_store import TerminalStore, terminal_dir
from swipepay.drivers.tls_identity import load_identity
from swipepay.firmware_sim.address import Address
from swipepay.firmware_sim.errors import DecodeError, LinkTimeout, NotSent, TransportError
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.transaction import Transaction

__all__ = [
    "PROCESS_TOKEN",
    "CenterUnreachable",
    "ReversalQueue",
    "TlsHost",
    "client_context",
    "lab_client_context",
]


class CenterUnreachable(NotSent):
    """The center could not be reached, or its TLS identity is not the lab's: no request left,
    so nothing needs reversing."""


#: Why a center was skipped, as the user reads it ("refused the connection", ...).
_WHY_TIMEOUT = "did not answer in time"
_WHY_NOT_ISO = "answered something that is not ISO 8583"


def _why(exc: BaseException) -> str:
    """A failed attempt to use a center, in words (never a secret: only the error's kind)."""
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS failed ({exc.reason or type(exc).__name__}): its certificates come from "
            "another lab"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(exc, TimeoutError):
        return _WHY_TIMEOUT
    if isinstance(exc, ConnectionError):
        return "closed the connection"
    if isinstance(exc, DecodeError):
        return _WHY_NOT_ISO
    return f"not reachable ({type(exc).__name__})"


_log = logging.getLogger("swipepay.terminal")

#: Response codes after which a queued reversal stays queued (the center could not decide).
_RETRY_CODES = frozenset({"91", "96"})


def client_context(ca: Path, cert: Path, key: Path, whose: str = "the terminal") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    load_identity(ctx, ca, cert, key, whose)
    ctx.check_hostname = False  # the center is identified by the lab CA, not by a DNS name
    return ctx


def lab_client_context(home: Path, terminal_id: str) -> ssl.SSLContext:
    """The TLS client context of a lab terminal (its certificate, the lab CA)."""
    base = terminal_dir(home, terminal_id)
    return client_context(
        home / "ca" / "ca.crt", base / "tls.crt", base / "tls.key", f"terminal {terminal_id}"
    )


#: One token per terminal process: armed reversals with another token belong to a process that
#: died before it finished its transaction (several hosts in one process share it).
PROCESS_TOKEN = secrets.token_hex(8)


class TlsHost:
    """:class:`drivers.base.Host` talking to ``swipepay center serve``."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        queue: ReversalQueue,
        *,
        connect_timeout: float = 5.0,
        reversal_timeout: float = 5.0,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        #: The centers, tried in this order on every new connection (``host``:``port`` first).
        self.centers: tuple[Address, ...] = tuple(
            Address(h, p) for h, p in [(host, port), *fallbacks]
        )
        self.url = "tls:" + ",".join(str(c) for c in self.centers)
        #: The center the open connection goes to (an index into :attr:`centers`).
        self._at = 0
        #: The center that gave the last answer.
        self.answered_by: Address | None = None
        #: Centers passed over since the last :meth:`check` (a transaction's start), with why.
        self.skipped: list[tuple[Address, str]] = []
        self._ctx = context
        self._sock: ssl.SSLSocket | None = None
        self._decoder = codec.FrameDecoder()
        self._connect_timeout = connect_timeout
        self._reversal_timeout = reversal_timeout
        #: The terminal's reversal queue (its store's; the caller owns and closes it).
        self.queue = queue
        #: Names this process's armed (write-ahead) reversals in the queue file.
        self._owner = PROCESS_TOKEN
        self._store: TerminalStore | None = None
        #: Whether the request being sent has been written to a connection at least once.
        self._sent = False
        #: How many times the current request went out (more than once: an earlier copy's
        #: outcome was never seen).
        self._sends = 0

    @classmethod
    def for_lab(cls, home: Path, terminal_id: str, host: str, port: int, **kw: Any) -> TlsHost:
        """A host for a lab terminal on the queue of its own store (closed with the host)."""
        store = TerminalStore.for_lab(home, terminal_id)
        try:
            tls = cls(host, port, lab_client_context(home, terminal_id), store.reversals, **kw)
        except BaseException:
            store.close()
            raise
        tls._store = store
        return tls

    # -- connection -----------------------------------------------------------------------------

    def _open(self, at: int, until: float) -> ssl.SSLSocket:
        """A new connection to center ``at`` (TCP, mutual TLS, then the queued reversals), all
        within ``until``; raises what went wrong (OSError, ssl.SSLError, DecodeError)."""
        self._drop()
        addr = self.centers[at]
        raw = socket.create_connection(addr, timeout=max(0.01, until - time.monotonic()))
        try:
            sock = self._ctx.wrap_socket(raw)
        except BaseException:
            raw.close()
            raise
        self._sock, self._at = sock, at
        self._decoder = codec.FrameDecoder()
        self._flush_reversals(until)
        return sock

    def _share(self, deadline: float, untried: int) -> float:
        """When the attempt at one center must end: its equal share of the time left (at most
        the connect timeout), so that a center that hangs leaves time for the next ones."""
        now = time.monotonic()
        return now + min(self._connect_timeout, max(0.0, deadline - now) / max(1, untried))

    def _connect(self, deadline: float, skip: frozenset[int] = frozenset()) -> ssl.SSLSocket:
        """The open connection, or a new one to the first center (in order, not in ``skip``)
        that takes it; rounds over the list until ``deadline``."""
        if self._sock is not None:
            return self._sock
        order = [n for n in range(len(self.centers)) if n not in skip]
        while True:
            for k, at in enumerate(order):
                if time.monotonic() >= deadline:
                    break
                try:
                    sock = self._open(at, self._share(deadline, len(order) - k))
                except (OSError, ValueError, DecodeError) as exc:
                    self._drop()
                    self._skip(at, exc)
                    continue
                return sock
            left = deadline - time.monotonic()
            if left <= 0:
                raise LinkTimeout(self._unreachable_text())
            time.sleep(min(0.1, left))

    def _skip(self, at: int, exc: BaseException) -> None:
        """Note (once per center and attempt) that center ``at`` was passed over, and why."""
        addr, why = self.centers[at], _why(exc)
        if (addr, why) not in self.skipped:
            self.skipped = [(a, w) for a, w in self.skipped if a != addr] + [(addr, why)]
            if len(self.centers) > 1:
                _log.warning("center %s %s; trying the next one", addr, why)

    def _unreachable_text(self) -> str:
        """Why no center could be used, and what to do about it."""
        if len(self.centers) == 1:
            addr, why = self.skipped[-1] if self.skipped else (self.centers[0], "")
            if why.startswith("TLS failed"):
                return (
                    f"TLS with center {addr} failed: the certificates come from another lab — "
                    "give the --home of the lab the center serves"
                )
            if why in (_WHY_TIMEOUT, _WHY_NOT_ISO):
                return f"center {addr} {why} — is it `swipepay center serve` of this lab?"
            return f"center {addr} not reachable — is `swipepay center serve` running?"
        each = "; ".join(f"{a} {w}" for a, w in self.skipped) or "none answered"
        return (
            f"no center reachable ({each}) — is `swipepay center serve` running at one of "
            "them, for this lab (--home)?"
        )

    def _answered(self) -> None:
        """The open connection's center answered: remember it (and say so after a failover)."""
        addr = self.centers[self._at]
        if self.skipped and self.answered_by != addr:
            _log.warning("center %s answered (after %s)", addr,
                         ", ".join(f"{a} {w}" for a, w in self.skipped))  # fmt: skip
        self.answered_by = addr

    def check(
        self, terminal_id: str, stan: Callable[[], str], transmitted_at: str, timeout: float
    ) -> None:
        """Make sure a center is there before a transaction asks anything of anyone: open a
        connection (unless one is open), trying the centers in order, and have an echo
        (0800/301) answered.

        Raises :class:`CenterUnreachable` at once when, for every center, nothing listens, the
        TLS handshake fails (the certificates come from another lab) or no answer comes within
        its share of ``timeout``.
        """
        if self._sock is not None:
            return
        deadline = time.monotonic() + timeout
        self.skipped = []
        number: str | None = None
        for at in range(len(self.centers)):
            until = self._share(deadline, len(self.centers) - at)
            try:
                sock = self._open(at, until)
                number = number or stan()  # a STAN only for an echo that will be sent
                fields = codec.network_fields(terminal_id, number, transmitted_at, "301")
                self._exchange(sock, codec.encode(fields), number, until)
            except (OSError, ValueError, DecodeError) as exc:  # ssl.SSLError is an OSError
                self._drop()
                self._skip(at, exc)
                continue
            self._answered()
            return
        raise CenterUnreachable(self._unreachable_text())

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def close(self) -> None:
        self._drop()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _exchange(
        self, sock: ssl.SSLSocket, body: bytes, stan: str, deadline: float
    ) -> dict[str, Any]:
        """Send one frame and wait for the answer carrying the same STAN (older, late answers
        to requests we gave up on are skipped)."""
        sock.sendall(codec.frame(body))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            data = sock.recv(4096)
            if not data:
                raise ConnectionResetError("center closed the connection")
            for raw in self._decoder.feed(data):
                fields = codec.decode(raw)
                if fields.get("11") == stan:
                    return fields

    def _flush_reversals(self, deadline: float) -> None:
        """Send every queued reversal, oldest first, on the connection just opened."""
        assert self._sock is not None
        for item_id, body in self.queue.pending(self._owner):
            stan = codec.decode(body).get("11", "")
            fields = self._exchange(
                self._sock,
                body,
                str(stan),
                min(deadline, time.monotonic() + self._reversal_timeout),
            )
            if codec.parse_response(fields).response_code not in _RETRY_CODES:
                self.queue.done(item_id)

    # -- Host -----------------------------------------------------------------------------------

    def request(self, fields: dict[str, Any], timeout: float) -> AuthResponse:
        """Send any request dict; retransmit it unchanged on a new connection if the old one
        broke, and to the next center if this one gave no answer in its share of ``timeout``."""
        body = codec.encode(fields)
        deadline = time.monotonic() + timeout
        silent: set[int] = set()  # centers that took the request and did not answer
        while True:
            if len(silent) == len(self.centers):
                raise LinkTimeout(self._no_answer_text(silent))
            sock = self._connect(deadline, frozenset(silent))
            self._sent = True  # from here on the request may have reached the center
            self._sends += 1
            at = self._at
            # An equal share of the time left for this center and each untried one after it;
            # the last one gets all that is left.
            later = sum(1 for n in range(at + 1, len(self.centers)) if n not in silent)
            now = time.monotonic()
            until = now + max(0.0, deadline - now) / (later + 1)
            try:
                answer = self._exchange(sock, body, str(fields["11"]), until)
            except TimeoutError as exc:
                self._drop()
                silent.add(at)
                self._skip(at, exc)
                if time.monotonic() >= deadline:
                    raise LinkTimeout(self._no_answer_text(silent)) from None
                continue
            except (OSError, DecodeError):
                self._drop()
                if time.monotonic() >= deadline:
                    raise LinkTimeout(self._no_answer_text(silent)) from None
                continue
            self._answered()
            return codec.parse_response(answer)

    def _no_answer_text(self, silent: set[int]) -> str:
        if len(self.centers) == 1:
            return "center did not answer in time"
        names = ", ".join(str(self.centers[n]) for n in sorted(silent)) or "none"
        return f"no center answered in time (silent: {names})"

    def authorize(self, request: AuthRequest, timeout: float) -> AuthResponse:
        """Send a financial request with its reversal written ahead.

        The reversal is on disk before the request leaves and stays there until the answer is
        a decline or :meth:`settle` says the terminal finished the approved transaction; if this
        process dies in between, the next one sends it.
        """
        txn = request.txn
        item = self.queue.arm(
            codec.encode(codec.reversal_fields(txn)), self._owner, _txn_key(txn)
        )
        self._sent = False
        self._sends = 0
        try:
            response = self.request(codec.request_fields(request), timeout)
        except LinkTimeout:
            if not self._sent:  # never left this terminal: nothing to reverse
                self.queue.done(item)
                raise CenterUnreachable(self._unreachable_text()) from None
            self.queue.release(item)
            # Stays queued if this fails: sent first on the next connection.
            with contextlib.suppress(TransportError):
                self._connect(time.monotonic() + self._reversal_timeout)
            raise
        if response.response_code in _RETRY_CODES and self._sends > 1:
            # A copy sent earlier got no answer, and the center that answered this one could
            # not decide (its database was down, so it could not find a stored answer either):
            # that copy may have been approved.  The reversal stays queued (it is answered
            # "nothing to reverse" if it was not).
            self.queue.release(item)
        elif not response.approved:
            self.queue.done(item)
        return response

    def settle(self, txn: Transaction) -> None:
        """The terminal finished ``txn``: drop its write-ahead reversal (if still armed)."""
        item = self.queue.armed(self._owner, _txn_key(txn))
        if item is not None:
            self.queue.done(item)

    def queue_reversal(self, txn: Transaction, amount: int | None = None) -> None:
        self.queue.forget(self._owner, _txn_key(txn))
        item = self.queue.arm(
            codec.encode(codec.reversal_fields(txn, amount)), self._owner, _txn_key(txn)
        )
        self.queue.release(item)

    def reverse(self, txn: Transaction, amount: int | None = None) -> AuthResponse:
        """Reverse now, journaled like a request: if the center cannot be reached (or answers
        91/96) the reversal stays queued and goes out first on the next connection."""
        body = codec.encode(codec.reversal_fields(txn, amount))
        # Replaces this transaction's write-ahead or earlier queued reversal (never two).
        self.queue.forget(self._owner, _txn_key(txn))
        item = self.queue.arm(body, self._owner, _txn_key(txn))
        try:
            response = self.request(codec.reversal_fields(txn, amount), self._reversal_timeout)
        except TransportError:
            self.queue.release(item)
            raise
        if response.response_code in _RETRY_CODES:
            self.queue.release(item)
        else:
            self.queue.done(item)
        return response

    def echo(
        self, terminal_id: str, stan: str, transmitted_at: str, timeout: float = 5.0
    ) -> AuthResponse:
        return self.request(codec.network_fields(terminal_id, stan, transmitted_at, "301"), timeout)


def _txn_key(txn: Transaction) -> str:
    return f"{txn.terminal_id}/{txn.stan}/{txn.transmitted_at}"
