"""The server side of one TLS connection over a plain asyncio stream, through ``ssl.MemoryBIO``.

The center accepts plain TCP and runs the handshake itself, under a timeout, instead of letting
``asyncio.start_server(ssl=...)`` do it.  On Python 3.11 up to 3.11.7, every handshake that fails
in asyncio's own TLS layer (a peer that connects and closes, resets, or sends something that is
not TLS) leaves its ``SSLProtocol``, with a 256 KiB receive buffer, in a reference cycle through
the exception's traceback (CPython gh-109534, fixed in 3.11.8 and 3.12.2).  Only the cyclic
garbage collector frees them, thousands at a time, and the C allocator then keeps most of that
memory: unauthenticated connections grew the center by hundreds of MB.

Here a connection's TLS state is one ``ssl.SSLObject`` and its two memory BIOs, owned by the one
coroutine that serves the connection: whether the handshake succeeds, fails or times out, they
are freed by reference counting the moment that coroutine lets go of them.  Bytes move only
when the caller asks: :meth:`TlsStream.accept` loops ``do_handshake`` until done, :meth:`read`
feeds the socket's bytes in until a record decrypts, :meth:`write` encrypts and queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from typing import Any

#: Bytes taken from the socket per read; a TLS record is at most ~16 KiB.
_CHUNK = 65536


class TlsStream:
    """One server-side TLS connection on an asyncio ``(reader, writer)`` pair of plain TCP."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        first: bytes,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._incoming.write(first)
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._established = False
        #: Loop time by which the read in progress must have data (:meth:`read`'s ``until``;
        #: ``inf`` while no read waits), and the one timer that enforces it.  A deadline is an
        #: attribute set per read: the timer is moved only when a deadline comes earlier than
        #: it, or when it fires before a deadline that has moved later since (once per idle
        #: timeout at most).  ``asyncio.timeout`` per read, a new timer handle and its cancel
        #: each time, cost ~27k instructions per request.
        self._until = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    @classmethod
    async def accept(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        timeout: float,
    ) -> TlsStream:
        """Run the server handshake; the stream once it completed within ``timeout`` seconds.

        The TLS engine (~50 KB) is made only once the client's first bytes arrived: a peer that
        stays silent costs its socket and nothing more until it is timed out.  Raises
        ``ssl.SSLError`` (refused: no or a wrong client certificate, not TLS, an early end of
        stream) or ``TimeoutError``; the caller closes ``writer`` either way.
        """
        async with asyncio.timeout(timeout):
            first = await _read(reader)
            if not first:
                raise ssl.SSLEOFError("connection closed before the TLS handshake")
            stream = cls(reader, writer, context, first)
            await stream._handshake()
        return stream

    async def _handshake(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                await self._fill()
                continue
            except ssl.SSLError:
                self._flush()  # the alert that tells the peer why
                raise
            self._flush()
            self._established = True
            return

    async def _fill(self) -> None:
        """Move the next bytes from the socket into the TLS engine (an EOF marker at the end)."""
        if self._incoming.eof:
            raise ssl.SSLEOFError("TLS engine wants more after the end of the stream")
        data = await _read(self._reader)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _flush(self) -> None:
        if self._outgoing.pending and not self._writer.is_closing():
            self._writer.write(self._outgoing.read())

    @property
    def peercert(self) -> dict[str, Any]:
        """The verified client certificate, as ``ssl.SSLSocket.getpeercert()`` gives it."""
        return self._ssl.getpeercert() or {}

    async def read(self, n: int, until: float | None = None) -> bytes:
        """Up to ``n`` bytes of application data; ``b""`` at the end of the stream (with or
        without the peer's close_notify: the ISO 8583 framing tells a cut-off message).

        ``until`` (a time of the running loop's clock): :class:`TimeoutError` if no data has
        come by then.  The stream is then unusable (every later read raises it too): close it.
        """
        if until is not None:
            self._arm(until)
        try:
            return await self._read_data(n)
        finally:
            self._until = math.inf

    def _arm(self, until: float) -> None:
        self._until = until
        if until < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(until, self._on_timer)
            self._timer_at = until

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        until = self._until
        if until == math.inf:
            return  # no read is waiting: the next one sets the timer again
        if asyncio.get_running_loop().time() < until:
            self._arm(until)  # the deadline moved later since this timer was set
            return
        self._reader.set_exception(TimeoutError("no data from the peer in time"))

    async def _read_data(self, n: int) -> bytes:
        while True:
            if not self._incoming.pending and not self._incoming.eof and not self._ssl.pending():
                # Nothing buffered to decrypt: wait for the socket at once instead of letting
                # the TLS engine raise SSLWantReadError first (one exception per request).
                self._flush()
                await self._fill()
                continue
            try:
                data = self._ssl.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            self._flush()
            return data

    def write(self, data: bytes) -> None:
        self._ssl.write(data)
        self._flush()

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        """Send close_notify if the handshake completed, then close the socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._established:
            with contextlib.suppress(ssl.SSLError):  # the peer's close_notify is not waited for
                self._ssl.unwrap()
            self._flush()
        self._writer.close()


async def _read(reader: asyncio.StreamReader) -> bytes:
    """The next bytes from the socket; ``b""`` at its end, reset included."""
    try:
        return await reader.read(_CHUNK)
    except ConnectionError as exc:
        # The stream reader keeps this exception, whose traceback holds the frames that hold
        # the reader (and the TLS stream): drop the traceback, or that cycle waits for the
        # garbage collector.
        exc.__traceback__ = None
        return b""
