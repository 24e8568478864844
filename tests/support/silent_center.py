"""A center that has gone quiet: accepts mutual TLS with the lab's center certificate, reads
every byte it is sent and never answers (fixture ``silent``).  Used where a terminal must give
up waiting, queue a reversal, or fail over to another center."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from swipepay.center.lab import Lab
from swipepay.center.server import server_context


class SilentCenter:
    """Accepts mutual TLS, reads everything, never answers: a host that has gone quiet."""

    def __init__(self, lab: Lab) -> None:
        root = lab.root
        self.ctx = server_context(
            root / "ca" / "ca.crt", root / "center" / "center.crt", root / "center" / "center.key"
        )
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.received = 0
        #: Every decrypted byte received, over all connections, in arrival order.
        self.data = bytearray()
        self._lock = threading.Lock()
        self._stop = False
        self._conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(raw)
            threading.Thread(target=self._drain, args=(raw,), daemon=True).start()

    def _drain(self, raw: socket.socket) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
            while data := conn.recv(4096):
                with self._lock:
                    self.received += len(data)
                    self.data += data
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self._stop = True
        # close() alone leaves a thread blocked in accept() there for good (Linux): shutdown()
        # wakes it, and it ends.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)
        for c in self._conns:
            c.close()


@pytest.fixture
def silent(lab: Lab) -> Iterator[SilentCenter]:
    s = SilentCenter(lab)
    yield s
    s.close()
