"""The terminal application: when the STAN is saved, pre-authorizations, the reversal counts, the
reader's amount, and the settings; the phone application serving its phone."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from swipepay.center.lab import Lab, create_lab
from swipepay.cli.app.phone_app import PhoneApp, lab_phone
from swipepay.cli.app.terminal_app import (
    CANCELLED_EXIT,
    CenterConnection,
    TerminalApp,
    TerminalResult,
    TransactionCancelled,
)
from swipepay.cli.app.terminal_settings import CONFIG_KEYS, TerminalSettings, load_settings
from swipepay.cli.harness.processes import free_port
from swipepay.drivers.base import DriverContext
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_phone_link
from swipepay.drivers.store.terminal_store import TerminalStore
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.phone import Phone, ScriptedUser
from swipepay.firmware_sim.terminal import Ending
from swipepay.firmware_sim.transaction import Transaction


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_lab(tmp_path_factory.mktemp("apps") / "lab").root


@pytest.fixture
def app(template: Path, tmp_path: Path) -> Iterator[TerminalApp]:
    shutil.copytree(template, tmp_path / "lab")
    with TerminalApp.open(tmp_path / "lab", TerminalSettings(center="local")) as opened:
        yield opened


class Watching:
    """A host that records the terminal's stored next STAN when each request leaves."""

    def __init__(self, inner: CenterConnection, store: TerminalStore, fail: bool = False) -> None:
        self.inner, self.store, self.fail = inner, store, fail
        self.stored_at_send: list[tuple[str, int]] = []

    def authorize(self, request: AuthRequest, timeout: float) -> AuthResponse:
        self.stored_at_send.append((request.txn.stan, self.store.next_stan()))
        if self.fail:
            raise KeyboardInterrupt  # the process dies with the request on the wire
        return self.inner.authorize(request, timeout)

    def reverse(self, txn: Transaction) -> AuthResponse:
        return self.inner.reverse(txn)

    def settle(self, txn: Transaction) -> None:
        self.inner.settle(txn)


def purchase(
    app: TerminalApp, host: object, amount: int = 1_00, kind: str = "purchase"
) -> TerminalResult:
    """One transaction of alice's card and phone (her user confirms at once)."""
    field = MockField()
    lab_phone(app.lab, "alice-phone").enter(field)
    order = app.order(kind, f"{amount / 100:.2f}", None)
    result = app.run(
        order,
        reader=app.open_reader("mock:alice-visa", order) if kind != "completion" else None,
        link=open_phone_link("mock:", DriverContext(field=field)),
        host=host,  # type: ignore[arg-type]
        sleep=lambda s: None,
    )
    return result


def test_the_stan_is_on_disk_before_the_request_leaves(app: TerminalApp) -> None:
    center = app.open_center()
    try:
        host = Watching(center, app.store)
        assert purchase(app, host).outcome.ending is Ending.APPROVED
        [(stan, stored)] = host.stored_at_send
        assert stored == int(stan) + 1
        dying = Watching(center, app.store, fail=True)
        with pytest.raises(TransactionCancelled):
            purchase(app, dying)
    finally:
        center.close()
    [(lost, _)] = dying.stored_at_send
    with TerminalStore.for_lab(app.lab.root, "POS00001") as restarted:
        assert restarted.next_stan() == int(lost) + 1  # the killed run's STAN is never reused


def test_preauth_is_remembered_until_its_completion(app: TerminalApp) -> None:
    center = app.open_center()
    try:
        assert purchase(app, center, 80_00, "preauth").outcome.approved
        [stan] = app.preauths()
        assert app.order("completion", "64.50", None).original == app.preauths()[stan]
        assert purchase(app, center, 64_50, "completion").outcome.approved
    finally:
        center.close()
    assert app.preauths() == {}
    with pytest.raises(ConfigError, match="no approved pre-authorization"):
        app.order("completion", "1", None)


def test_an_unreachable_center_ends_the_run_before_the_card(
    template: Path, tmp_path: Path
) -> None:
    shutil.copytree(template, tmp_path / "lab")
    settings = TerminalSettings(center=f"127.0.0.1:{free_port()}", host_timeout=0.3)
    with TerminalApp.open(tmp_path / "lab", settings) as app:
        stan = app.store.next_stan()
        host = app.open_center()
        try:
            result = purchase(app, host, 3_00)
        finally:
            host.close()
        assert result.outcome.ending is Ending.HOST_UNAVAILABLE
        assert "not reachable — is `swipepay center serve` running?" in result.outcome.message
        assert result.report.steps == [] and result.report.apdu_count == 0  # no card, no phone
        assert (result.reversals_queued_before, result.reversals_queued_after) == (0, 0)
        assert app.store.reversals.pending() == []
        assert app.store.next_stan() == stan  # no transaction was started


def test_cancel_while_the_user_thinks_ends_the_phone_session(app: TerminalApp) -> None:
    field = MockField()
    phone = lab_phone(app.lab, "alice-phone", delay_polls=1_000)
    phone.enter(field)
    order = app.order("purchase", "8.88", None)
    polls: list[float] = []

    def wait(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 3:
            app.cancel()  # another thread's Ctrl-C (the full-screen console)

    center = app.open_center()
    try:
        with pytest.raises(TransactionCancelled) as caught:
            app.run(order, reader=app.open_reader("mock:alice-visa", order),
                    link=open_phone_link("mock:", DriverContext(field=field)),
                    host=center, sleep=wait)  # fmt: skip
    finally:
        center.close()
    assert caught.value.exit_code == CANCELLED_EXIT and caught.value.reversal is None
    assert not phone.phone.applet.awaiting_user  # its session was ended by the terminal
    assert app.store.reversals.pending() == []


def test_the_reader_is_opened_with_the_orders_amount(app: TerminalApp) -> None:
    order = app.order("purchase", "12.34", None)
    reader = app.open_reader("mock:alice-visa?via=insert", order)
    assert getattr(reader, "amount", None) == 12_34


def test_an_unknown_terminal_gets_no_store(template: Path, tmp_path: Path) -> None:
    shutil.copytree(template, tmp_path / "lab")
    with pytest.raises(ConfigError, match="no terminal 'NOPE0001'"):
        TerminalApp.open(tmp_path / "lab", TerminalSettings(terminal_id="NOPE0001"))
    assert not (tmp_path / "lab" / "terminals" / "NOPE0001").exists()


def test_settings_keys_are_the_settings_fields(tmp_path: Path) -> None:
    assert set(CONFIG_KEYS) == {f.name for f in fields(TerminalSettings)}
    (tmp_path / "terminal.toml").write_text('merchant_name = "Kiosk"\ncard_timeout = 5\n')
    settings = load_settings(tmp_path, None, {"card_timeout": None, "center": "local"})
    assert settings == TerminalSettings(merchant_name="Kiosk", card_timeout=5.0, center="local")


def test_the_phone_app_serves_its_phone(template: Path, tmp_path: Path) -> None:
    shutil.copytree(template, tmp_path / "lab")
    lab = Lab(tmp_path / "lab")
    served: list[tuple[Phone, threading.Event | None, bool]] = []

    class Server:
        url = "fake:"

        def serve(self, phone: Phone, stop: threading.Event | None = None,
                  once: bool = False) -> None:  # fmt: skip
            served.append((phone, stop, once))

        def close(self) -> None:
            pass

    phone = PhoneApp.open(lab.phone_path("bob-phone"), ScriptedUser())
    phone.serve(Server(), once=True)
    assert served == [(phone.phone, None, True)]
    assert phone.profile.card == "bob-debit"


def test_an_old_labs_terminal_continues_its_stans(template: Path, tmp_path: Path) -> None:
    shutil.copytree(template, tmp_path / "lab")
    (tmp_path / "lab" / "terminals" / "POS00001" / "state.json").write_text('{"next_stan": 42}\n')
    with TerminalApp.open(tmp_path / "lab", TerminalSettings(center="local")) as app:
        center = app.open_center()
        try:
            result = purchase(app, center)
        finally:
            center.close()
    assert (result.outcome.ending, result.txn_id) == (Ending.APPROVED, "POS00001-000042")
    assert not (tmp_path / "lab" / "terminals" / "POS00001" / "state.json").exists()


def test_the_commented_settings_file_sets_the_defaults(tmp_path: Path) -> None:
    from swipepay.cli.app.terminal_settings import CONFIG_HELP, commented_config

    assert set(CONFIG_KEYS) <= set(CONFIG_HELP)  # every key explained
    text = commented_config()
    (tmp_path / "terminal.toml").write_text(text)
    assert load_settings(tmp_path, None, {}) == TerminalSettings()
    for key in CONFIG_KEYS:  # uncommenting any one line gives a valid file
        line = next(x for x in text.splitlines() if x.startswith(f"# {key} = "))
        (tmp_path / "terminal.toml").write_text(line[2:] + "\n")
        if key not in ("merchant_id", "merchant_name", "aid"):
            assert load_settings(tmp_path, None, {}) == TerminalSettings()


def test_a_request_that_never_left_queues_no_reversal(app: TerminalApp) -> None:
    from swipepay.drivers.host_tls import CenterUnreachable

    class GoneAfterTheCheck(Watching):
        def authorize(self, request: AuthRequest, timeout: float) -> AuthResponse:
            raise CenterUnreachable("center 127.0.0.1:1 not reachable")

    center = app.open_center()
    try:
        result = purchase(app, GoneAfterTheCheck(center, app.store))
    finally:
        center.close()
    assert result.outcome.ending is Ending.HOST_UNAVAILABLE
    assert result.report.reversal is None and app.store.reversals.pending() == []
