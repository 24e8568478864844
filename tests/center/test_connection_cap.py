"""The connection cap: connections beyond it are closed after their handshake, counted, and
logged once per thousand (a fleet that reconnects must not flood the log); a freed place is
taken by the next terminal."""

from __future__ import annotations

import logging

import pytest

from swipepay.center.lab import Lab
from swipepay.center.server import ServerLimits
from swipepay.cli.harness.processes import wait_for
from swipepay.firmware_sim.hostlink import iso8583 as codec
from tests.support.lab_center import POS, RawClient, ServerThread

ECHO = codec.network_fields(POS, "000001", "1126120000", "301")


def test_connections_beyond_the_cap_are_closed_counted_and_logged_once(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="swipepay.center.server")
    server = ServerThread(lab, ServerLimits(max_connections=2))
    held = [RawClient(lab, server.port) for _ in range(2)]
    try:
        for c in held:
            assert c.call(ECHO)["39"] == "00"
        for _ in range(3):
            extra = RawClient(lab, server.port)
            extra.send_raw(codec.frame(codec.encode(ECHO)))
            assert extra.recv_frame() is None  # closed: the cap is reached
            extra.close()
        assert server.server.connections_refused == 3
        assert caplog.text.count("connection cap 2 reached") == 1
        held.pop().close()
        wait_for(lambda: server.server._connections == 1, 5, "the place to be freed")
        again = RawClient(lab, server.port)
        held.append(again)
        assert again.call(ECHO)["39"] == "00"
    finally:
        for c in held:
            c.close()
        server.stop()
