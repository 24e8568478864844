"""Connections that never complete a TLS handshake cost the center nothing that lasts.

A real ``swipepay center serve`` on 127.0.0.1 gets a few thousand plain TCP connections that
close at once, reset, send bytes that are not TLS, or stay silent; its resident memory must stay
where it was, and it must still serve a terminal.  The silent ones are timed out.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path

import iso8583
import pytest

from swipepay.center.lab import Lab
from swipepay.center.server import ServerLimits
from swipepay.cli.harness.processes import free_port, start_center, stop
from swipepay.drivers.host_tls import client_context
from swipepay.firmware_sim.hostlink import iso8583 as codec
from tests.support.lab_center import POS, ServerThread

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/status")

#: Connections per flood, and the RSS growth allowed over it (MB).  Before the fix 3,000 such
#: connections grew the center by ~300 MB.
FLOOD = 3000
ALLOWED_GROWTH_MB = 8.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def _echo(lab: Lab, port: int) -> str:
    """One mutual-TLS echo: the center still serves, and has taken every earlier connection."""
    base = lab.root / "terminals" / POS
    ctx = client_context(lab.root / "ca" / "ca.crt", base / "tls.crt", base / "tls.key")
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
        body = codec.encode(codec.network_fields(POS, "000001", "1126120000", "301"))
        s.sendall(codec.frame(body))
        data = b""
        while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
            chunk = s.recv(4096)
            assert chunk, "center closed the connection"
            data += chunk
    fields, _ = iso8583.decode(data[2:], codec.SPEC)
    return str(fields["39"])


def _flood(port: int, count: int) -> None:
    """``count`` connections without a handshake, four kinds in turn: end of stream, reset, bytes
    that are not TLS, silence (50 held at a time).  The first and third wait for the center to
    hang up, so the flood goes at the center's pace (no listen backlog overflow)."""
    silent: list[socket.socket] = []
    for n in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        kind = n % 4
        if kind == 1:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind == 3:
            silent.append(s)
            if len(silent) == 50:
                for q in silent:
                    q.close()
                silent.clear()
            continue
        else:
            if kind == 2:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):  # the center's alert, if any, then its end of stream
                pass
        s.close()
    for q in silent:
        q.close()


def test_handshake_less_connections_do_not_grow_the_center(lab: Lab) -> None:
    port = free_port()
    center = start_center(lab.root, port)
    try:
        _flood(port, 200)  # warm up: whatever the first connections allocate for good
        assert _echo(lab, port) == "00"
        before = _rss_mb(center.pid)
        started = time.monotonic()
        _flood(port, FLOOD)
        assert _echo(lab, port) == "00"
        after = _rss_mb(center.pid)
        assert after - before < ALLOWED_GROWTH_MB, (
            f"{FLOOD} handshake-less connections grew the center from {before:.1f} MB to "
            f"{after:.1f} MB in {time.monotonic() - started:.1f} s"
        )
    finally:
        stop(center)


def test_a_silent_connection_is_closed_after_the_handshake_timeout(lab: Lab) -> None:
    server = ServerThread(lab, ServerLimits(handshake_timeout=0.5))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            started = time.monotonic()
            assert s.recv(1) == b""  # the center hung up
            assert time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01")  # half a TLS record header, then nothing
            assert s.recv(1) == b""
    finally:
        server.stop()


def test_connections_in_handshake_do_not_block_a_terminal(lab: Lab) -> None:
    server = ServerThread(lab, ServerLimits(handshake_timeout=5.0, max_connections=4))
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
        try:
            assert _echo(lab, server.port) == "00"
        finally:
            for s in idle:
                s.close()
    finally:
        server.stop()
