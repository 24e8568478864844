"""The terminal's check that the center is there (TlsHost.check): refused, another lab's
certificates, and the center of its own lab."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from swipepay.center.lab import Lab, create_lab
from swipepay.cli.harness.processes import free_port
from swipepay.drivers.host_tls import CenterUnreachable, TlsHost
from tests.support.lab_center import POS, ServerThread


def stans() -> str:
    return "000900"


def test_nothing_listening_is_said_at_once(lab: Lab) -> None:
    port = free_port()
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", port)
    started = time.monotonic()
    try:
        with pytest.raises(CenterUnreachable,
                           match=f"center 127.0.0.1:{port} not reachable — is `swipepay center "
                                 "serve` running"):  # fmt: skip
            host.check(POS, stans, "1201090000", 3.0)
    finally:
        host.close()
    assert time.monotonic() - started < 1.0


def test_a_center_of_another_lab_names_home(lab: Lab, tmp_path: Path) -> None:
    other = create_lab(tmp_path / "other")
    server = ServerThread(other)
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    try:
        with pytest.raises(CenterUnreachable, match=r"another lab.*--home"):
            host.check(POS, stans, "1201090000", 3.0)
    finally:
        host.close()
        server.stop()


def test_the_labs_own_center_answers_the_echo(lab: Lab) -> None:
    server = ServerThread(lab)
    host = TlsHost.for_lab(lab.root, POS, "127.0.0.1", server.port)
    taken: list[str] = []

    def stan() -> str:
        taken.append("000901")
        return taken[-1]

    try:
        host.check(POS, stan, "1201090000", 3.0)
        host.check(POS, stan, "1201090000", 3.0)  # connection kept: no second echo
    finally:
        host.close()
        server.stop()
    assert taken == ["000901"]


def test_cancel_after_the_request_left_reverses_it(lab: Lab) -> None:
    """Ctrl-C after the center approved, before the terminal finished: the approval is
    reversed at once (the write-ahead reversal becomes due and goes out on a fresh
    connection)."""
    from swipepay.cli.app.phone_app import lab_phone
    from swipepay.cli.app.terminal_app import TerminalApp, TransactionCancelled
    from swipepay.cli.app.terminal_settings import TerminalSettings
    from swipepay.drivers.base import DriverContext
    from swipepay.drivers.mock_phone import MockField
    from swipepay.drivers.registry import open_phone_link
    from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse

    server = ServerThread(lab)
    settings = TerminalSettings(center=f"127.0.0.1:{server.port}")
    try:
        with TerminalApp.open(lab.root, settings) as app:
            tls = app.open_center()

            class InterruptedAfterSend:
                def __getattr__(self, name: str) -> object:
                    return getattr(tls, name)

                def check(self, *args: object) -> None:
                    tls.check(*args)  # type: ignore[arg-type]

                def authorize(self, request: AuthRequest, timeout: float) -> AuthResponse:
                    answer = tls.authorize(request, timeout)
                    assert answer.approved
                    raise KeyboardInterrupt  # Ctrl-C as the approval arrives

            field = MockField()
            lab_phone(lab, "alice-phone").enter(field)
            order = app.order("purchase", "4.00", None)
            try:
                with pytest.raises(TransactionCancelled) as caught:
                    app.run(order, reader=app.open_reader("mock:alice-visa", order),
                            link=open_phone_link("mock:", DriverContext(field=field)),
                            host=InterruptedAfterSend(),  # type: ignore[arg-type]
                            sleep=lambda s: None)  # fmt: skip
            finally:
                tls.close()
            assert caught.value.reversal == "sent"
            assert app.store.reversals.pending() == []
    finally:
        server.stop()
