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
  the center answered.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swipepay.drivers.store.reversal_queue import ReversalQueue
from swipepay.drivers.store.terminal_store import TerminalStore, terminal_dir
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

#: Response codes after which a queued reversal stays queued (the center could not decide).
_RETRY_CODES = frozenset({"91", "96"})


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = False  # the center is identified by the lab CA, not by a DNS name
    return ctx


def lab_client_context(home: Path, terminal_id: str) -> ssl.SSLContext:
    """The TLS client context of a lab terminal (its certificate, the lab CA)."""
    base = terminal_dir(home, terminal_id)
    return client_context(home / "ca" / "ca.crt", base / "tls.crt", base / "tls.key")


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
    ) -> None:
        self.url = f"tls:{host}:{port}"
        self._addr = (host, port)
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

    def _connect(self, deadline: float) -> ssl.SSLSocket:
        if self._sock is not None:
            return self._sock
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                raw = socket.create_connection(
                    self._addr, timeout=min(self._connect_timeout, deadline - time.monotonic())
                )
                try:
                    sock = self._ctx.wrap_socket(raw)
                except BaseException:
                    raw.close()
                    raise
                self._sock = sock
                self._decoder = codec.FrameDecoder()
                self._flush_reversals(deadline)
                return sock
            except (OSError, ValueError, DecodeError) as exc:
                self._drop()
                last = exc
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        raise LinkTimeout(
            f"center {self.url} not reachable" + (f": {type(last).__name__}" if last else "")
        )

    def check(
        self, terminal_id: str, stan: Callable[[], str], transmitted_at: str, timeout: float
    ) -> None:
        """Make sure the center is there before a transaction asks anything of anyone: open
        the connection (unless it is open) and have an echo (0800/301) answered.

        Raises :class:`CenterUnreachable` at once when nothing listens, the TLS handshake fails
        (the certificates come from another lab) or no answer comes within ``timeout``.
        """
        if self._sock is not None:
            return
        where = f"{self._addr[0]}:{self._addr[1]}"
        deadline = time.monotonic() + timeout
        try:
            raw = socket.create_connection(self._addr, timeout=timeout)
        except OSError:
            raise CenterUnreachable(
                f"center {where} not reachable — is `swipepay center serve` running?"
            ) from None
        try:
            sock = self._ctx.wrap_socket(raw)
            self._sock, self._decoder = sock, codec.FrameDecoder()
            self._flush_reversals(deadline)
            number = stan()  # a STAN only for an echo that will be sent
            fields = codec.network_fields(terminal_id, number, transmitted_at, "301")
            self._exchange(sock, codec.encode(fields), number, deadline)
        except ssl.SSLError as exc:
            raw.close()
            self._drop()
            raise CenterUnreachable(
                f"TLS with center {where} failed ({exc.reason or exc}): the certificates come "
                "from another lab — give the --home of the lab the center serves"
            ) from None
        except (OSError, DecodeError) as exc:
            raw.close()
            self._drop()
            raise CenterUnreachable(
                f"center {where} did not answer ({type(exc).__name__ or exc}) — is it "
                "`swipepay center serve` of this lab?"
            ) from None

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
        """Send any request dict; retransmit it on a new connection if the old one broke."""
        body = codec.encode(fields)
        deadline = time.monotonic() + timeout
        while True:
            sock = self._connect(deadline)
            self._sent = True  # from here on the request may have reached the center
            try:
                answer = self._exchange(sock, body, str(fields["11"]), deadline)
                return codec.parse_response(answer)
            except TimeoutError:
                self._drop()
                raise LinkTimeout("center did not answer in time") from None
            except (OSError, DecodeError):
                self._drop()
                if time.monotonic() >= deadline:
                    raise LinkTimeout("center did not answer in time") from None

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
        try:
            response = self.request(codec.request_fields(request), timeout)
        except LinkTimeout:
            if not self._sent:  # never left this terminal: nothing to reverse
                self.queue.done(item)
                raise CenterUnreachable(
                    f"center {self._addr[0]}:{self._addr[1]} not reachable — is "
                    "`swipepay center serve` running?"
                ) from None
            self.queue.release(item)
            # Stays queued if this fails: sent first on the next connection.
            with contextlib.suppress(TransportError):
                self._connect(time.monotonic() + self._reversal_timeout)
            raise
        if not response.approved:
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
