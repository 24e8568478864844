"""A second client on a vpcd slot is refused (vpcd would leave it waiting unseen)."""

from __future__ import annotations

import socket
import sys

import pytest

from swipepay.drivers.vpcd import VirtualCard, VpcdClient, slot_taken
from swipepay.firmware_sim.errors import ConfigError

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")


def test_a_taken_slot_is_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = int(listener.getsockname()[1])
        assert not slot_taken("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port)):  # the first card on the slot
            assert slot_taken("127.0.0.1", port)
            client = VpcdClient(VirtualCard(lambda apdu: b"\x90\x00", b"\x3b\x00"),
                                "127.0.0.1", port)  # fmt: skip
            with pytest.raises(ConfigError, match="already taken"):
                client.connect()
