"""The terminal's Host over ISO 8583 / mutual TLS 1.3, with a store-and-forward reversal queue.

* One persistent connection, reopened when it breaks.  A request whose connection broke before
  the answer came is sent again, byte for byte, on the new connection: the center recognises the
  retransmission (terminal, STAN, transmission time, same content) and answers the original
  response without moving money twice.
* If no answer arrives within ``timeout``, the terminal cannot know whether money moved: it puts
  a 0400 reversal in the queue on disk (SQLite, ``synchronous=FULL``: fsynced before we go on),
  tries to send it at once, and raises :class:`LinkTimeout`.  Pending reversals survive a restart
  and are sent first after every (re)connect; each leaves the queue only once the center answered.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

from swipepay.firmware_sim.errors import DecodeError, LinkTimeout, TransportError
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.transaction import Transaction

#: Response codes after which a queued reversal stays queued (the center could not decide).
_RETRY_CODES = frozenset({"91", "96"})


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = False  # the center is identified by the lab CA, not by a DNS name
    return ctx


#: One token per terminal process: armed reversals with another token belong to a process that
#: died before it finished its transaction (several hosts in one process share it).
PROCESS_TOKEN = secrets.token_hex(8)


class ReversalQueue:
    """Reversal frames, in a small SQLite file (mode 0600, every change fsynced).

    An entry is either *queued* (send it on the next connection until the center acknowledges
    it) or *armed*: written before its financial request leaves (write-ahead), by the process
    named in ``owner``, and removed once that process has finished the transaction.  An armed
    entry of another process is an orphan — that terminal died between sending the request and
    finishing the transaction — and is sent like a queued one, so the center never keeps money
    for a transaction the terminal did not complete.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
        self._use_wal()
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reversals (id INTEGER PRIMARY KEY, body BLOB NOT NULL, "
            "owner TEXT, txn_key TEXT)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(reversals)")}
        for column in ("owner", "txn_key"):  # a queue file from before write-ahead entries
            if column not in columns:
                with contextlib.suppress(sqlite3.OperationalError):  # added meanwhile
                    self._db.execute(f"ALTER TABLE reversals ADD COLUMN {column} TEXT")

    def _use_wal(self) -> None:
        """Switch the file to WAL.  That needs the file to itself, and SQLite's busy handler
        does not cover it: two terminals' hosts opening a fresh queue at the same moment got
        "database is locked".  Only the first opener switches; the others wait for it."""
        for attempt in range(200):
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    return
                self._db.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                if attempt == 199:
                    raise
                time.sleep(0.01)

    def push(self, body: bytes) -> int:
        """Queue ``body`` to be sent on the next connection."""
        cur = self._db.execute("INSERT INTO reversals (body) VALUES (?)", (body,))
        return int(cur.lastrowid or 0)

    def arm(self, body: bytes, owner: str, txn_key: str) -> int:
        """Write the reversal of a request about to be sent (owned by this process)."""
        cur = self._db.execute(
            "INSERT INTO reversals (body, owner, txn_key) VALUES (?, ?, ?)", (body, owner, txn_key)
        )
        return int(cur.lastrowid or 0)

    def armed(self, owner: str, txn_key: str) -> int | None:
        row = self._db.execute(
            "SELECT id FROM reversals WHERE owner = ? AND txn_key = ?", (owner, txn_key)
        ).fetchone()
        return None if row is None else int(row[0])

    def forget(self, owner: str, txn_key: str) -> None:
        """Drop the queued or ``owner``-armed reversals of one transaction (being replaced)."""
        self._db.execute(
            "DELETE FROM reversals WHERE txn_key = ? AND (owner IS NULL OR owner = ?)",
            (txn_key, owner),
        )

    def release(self, item_id: int) -> None:
        """Turn an armed entry into a queued one (send it on the next connection)."""
        self._db.execute("UPDATE reversals SET owner = NULL WHERE id = ?", (item_id,))

    def pending(self, owner: str | None = None) -> list[tuple[int, bytes]]:
        """Entries to send: queued ones and armed ones of other processes (not ``owner``'s)."""
        return [
            (int(i), bytes(b))
            for i, b in self._db.execute(
                "SELECT id, body FROM reversals WHERE owner IS NULL OR owner IS NOT ? ORDER BY id",
                (owner,),
            )
        ]

    def done(self, item_id: int) -> None:
        self._db.execute("DELETE FROM reversals WHERE id = ?", (item_id,))

    def close(self) -> None:
        self._db.close()


class TlsHost:
    """:class:`drivers.base.Host` talking to ``swipepay center serve``."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        queue_path: Path,
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
        self.queue = ReversalQueue(queue_path)
        #: Names this process's armed (write-ahead) reversals in the queue file.
        self._owner = PROCESS_TOKEN

    @classmethod
    def for_lab(cls, home: Path, terminal_id: str, host: str, port: int, **kw: Any) -> TlsHost:
        base = home / "terminals" / terminal_id
        ctx = client_context(home / "ca" / "ca.crt", base / "tls.crt", base / "tls.key")
        return cls(host, port, ctx, base / "reversals.db", **kw)

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

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def close(self) -> None:
        self._drop()
        self.queue.close()

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
        try:
            response = self.request(codec.request_fields(request), timeout)
        except LinkTimeout:
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
