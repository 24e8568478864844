"""The server side of a TLS connection (center/tls_stream.py): read deadlines.

A real mutual-TLS 1.3 connection on 127.0.0.1 with the lab's certificates; the server half is a
:class:`TlsStream`, the client half asyncio's own TLS.  Each read may carry a deadline
(``until``); one timer per stream enforces it, moved only when it must be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from swipepay.center.lab import Lab
from swipepay.center.server import server_context
from swipepay.center.tls_stream import TlsStream
from swipepay.drivers.host_tls import client_context

Session = Callable[[TlsStream, asyncio.StreamWriter], Awaitable[None]]


def run_pair(lab: Lab, session: Session) -> None:
    """Connect a lab terminal to a TlsStream server on 127.0.0.1 and run ``session(server
    stream, client writer)`` (bounded by a 20 s guard: a broken deadline fails, not hangs)."""
    root = lab.root

    async def main() -> None:
        accepted: asyncio.Future[TlsStream] = asyncio.get_running_loop().create_future()
        ctx = server_context(root / "ca" / "ca.crt", root / "center" / "center.crt",
                             root / "center" / "center.key")  # fmt: skip

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(await TlsStream.accept(reader, writer, ctx, 5.0))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        base = root / "terminals" / "POS00001"
        client = client_context(root / "ca" / "ca.crt", base / "tls.crt", base / "tls.key")
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        stream = await accepted
        try:
            await asyncio.wait_for(session(stream, writer), 20)
        finally:
            stream.close()
            writer.close()
            server.close()

    asyncio.run(main())


def test_a_read_past_its_deadline_raises_timeout_error(lab: Lab) -> None:
    async def session(stream: TlsStream, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await stream.read(100, start + 0.2)
        except TimeoutError:
            assert 0.2 <= loop.time() - start < 5
        else:
            raise AssertionError("no TimeoutError")

    run_pair(lab, session)


def test_data_before_the_deadline_is_read_and_a_lapsed_timer_does_not_fire_later(
    lab: Lab,
) -> None:
    """The timer set for the first read fires while no read waits: nothing happens, and the
    next read, with a later deadline, gets its data."""

    async def session(stream: TlsStream, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        writer.write(b"first")
        assert await stream.read(100, loop.time() + 0.3) == b"first"
        await asyncio.sleep(0.6)  # the first deadline passes with no read waiting
        loop.call_later(0.3, writer.write, b"second")
        assert await stream.read(100, loop.time() + 2.0) == b"second"

    run_pair(lab, session)


def test_an_earlier_deadline_than_the_timer_is_kept(lab: Lab) -> None:
    """A long deadline sets the timer far ahead; a shorter one after it (a frame started: the
    frame timeout) moves the timer earlier instead of waiting for the far one."""

    async def session(stream: TlsStream, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        writer.write(b"x")
        assert await stream.read(100, loop.time() + 30) == b"x"
        start = loop.time()
        try:
            await stream.read(100, start + 0.2)
        except TimeoutError:
            assert loop.time() - start < 5
        else:
            raise AssertionError("no TimeoutError")

    run_pair(lab, session)


def test_a_deadline_moved_later_is_waited_for(lab: Lab) -> None:
    """The timer fires at the first deadline while a read with a later one waits: it is set
    again for the later deadline, and the data that comes before it is read."""

    async def session(stream: TlsStream, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        writer.write(b"a")
        assert await stream.read(100, loop.time() + 0.2) == b"a"
        loop.call_later(0.6, writer.write, b"b")  # after the timer's 0.2 s, before 3 s
        assert await stream.read(100, loop.time() + 3.0) == b"b"

    run_pair(lab, session)
