"""Attacks not covered elsewhere (the full table is hardware_notes/security.md): a replayed CONNECT,
a relay adding latency on the phone link, and the PIN searched for in everything a terminal-side
run writes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.pinverify import pin_verification_data
from swipepay.center.secretfile import write_private
from swipepay.cli.app.phone_app import PhoneApp
from swipepay.cli.app.terminal_app import TerminalApp
from swipepay.cli.app.terminal_settings import TerminalSettings
from swipepay.cli.harness import faults
from swipepay.cli.harness.processes import port_open, wait_for
from swipepay.drivers.base import DriverContext, PhoneLink
from swipepay.drivers.host_tls import TlsHost
from swipepay.drivers.mock_phone import MockField, MockPhoneLink
from swipepay.drivers.registry import open_card_reader
from swipepay.drivers.runner import run_transaction
from swipepay.drivers.store.phone_store import PhoneStore
from swipepay.drivers.trace import TraceWriter, TracingHost, TracingLink
from swipepay.firmware_sim.apdu import ResponseApdu
from swipepay.firmware_sim.errors import TransportError
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PaymentShown, PhoneApplet, State
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.statuswords import SW
from swipepay.firmware_sim.terminal import Ending, Order, Terminal
from swipepay.firmware_sim.transaction import TxnType
from tests.support.phonelink import PAN, make_pair, txn

ROOT = Path(__file__).resolve().parents[1]
#: A 12-digit PIN (format 4 allows 4-12) that cannot turn up by chance in a file, as a 4-digit
#: one could (timestamps, amounts, hex).
LONG_PIN = "739251846027"


# -- replayed CONNECT -------------------------------------------------------------------------


def test_replayed_connect_cannot_open_a_session() -> None:
    """An eavesdropper replays a recorded CONNECT (and the AUTHENTICATE that followed it).  The
    phone answers CONNECT with a fresh nonce and ephemeral key, so the recorded terminal
    signature is over another transcript: 6982, session wiped, nothing shown to the user."""
    p = make_pair()
    p.link.handle_select(p.send(p.link.select_command().apdu))
    connect = p.link.connect_command(PAN.encode()).apdu
    first = p.send(connect)
    p.link.handle_connect(first)
    authenticate = p.link.authenticate_command().apdu
    p.link.handle_authenticate(p.send(authenticate))
    p.applet.deactivate()

    p.send(p.link.select_command().apdu)
    again = p.send(connect)
    assert ResponseApdu.parse(again).sw == SW.OK
    assert again != first  # fresh phone nonce and key: not a replayable answer
    replayed = ResponseApdu.parse(p.send(authenticate))
    assert replayed.sw == SW.SECURITY_NOT_SATISFIED
    assert p.applet.state is State.SELECTED
    # and no payment request is accepted on the replayed session
    pay = p.link.payment_request_command(txn()).apdu
    assert ResponseApdu.parse(p.send(pay)).sw != SW.OK
    assert not any(isinstance(e, PaymentShown) for e in p.applet.take_events())


# -- relay adding latency ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class RelayLink:
    """A relay (e.g. two phones bridging the terminal to a victim's phone far away): forwards
    every APDU unchanged and adds ``latency`` seconds on the simulated clock."""

    def __init__(self, inner: PhoneLink, clock: Clock, latency: float) -> None:
        self.url = "relay:"
        self.inner, self.clock, self.latency = inner, clock, latency

    def connect(self, timeout: float) -> None:
        self.inner.connect(timeout)

    def transmit(self, apdu: bytes) -> bytes:
        self.clock.t += self.latency / 2
        response = self.inner.transmit(apdu)
        self.clock.t += self.latency / 2
        return response

    def disconnect(self) -> None:
        self.inner.disconnect()


@pytest.mark.parametrize("latency", [0.0, 0.05, 2.0])
def test_relay_adding_latency_is_measured_but_not_refused(lab: Lab, latency: float) -> None:
    """What the design cannot detect: a relay that forwards the APDUs unchanged.  The user still
    sees the real merchant (from the certificate) and the real amount, and confirms on their own
    phone, so a relay cannot change what is paid; but nothing bounds the distance.  What it can:
    the added time shows in the terminal's per-APDU timings (what ``swipepay trace`` renders)
    and a real link's response timeout ends a relay slower than it (tcp: test
    test_response_timeout_is_link_timeout)."""
    profile = lab.phone_profile("alice-phone")
    pin = lab.pins()[profile.card]
    rf = MockField()
    rf.place(Phone(PhoneApplet(profile.identity(), profile.dukpt()),
                   ScriptedUser(Choice.CONFIRM, lambda: pin), lambda: 1_800_000_000.0))
    clock = Clock()
    link = RelayLink(MockPhoneLink("mock:", rf), clock, latency)
    cert, key = lab.terminal_link_identity(faults.POS)
    terminal = Terminal(lab.terminal_config(faults.POS), TerminalLink(cert, key), 1)
    from swipepay.center.local_host import LocalHost

    with Center.open(lab.db_path, lab.center_keys()) as center:
        report = run_transaction(
            terminal,
            Order(TxnType.PURCHASE, 1_00),
            reader=open_card_reader("mock:alice-visa", DriverContext(cards=lab.cards())),
            link=link,
            host=LocalHost(center),
            sleep=lambda s: None,
            clock=clock,
        )
    assert report.outcome.ending is Ending.APPROVED
    assert report.apdu_count >= 6
    assert [e.ms for e in report.exchanges] == pytest.approx([latency * 1000] * report.apdu_count)
    assert report.total_ms == pytest.approx(latency * 1000 * report.apdu_count)


# -- the PIN in what the terminal writes ------------------------------------------------------


def set_pin(lab: Lab, card: str, pin: str) -> None:
    """Give a lab card another PIN: the center's verification data and the simulated user."""
    import sqlite3

    pan = lab.cards()[card].pan
    db = sqlite3.connect(str(lab.db_path))
    try:
        pvd = pin_verification_data(lab.center_keys().pvk, pan, pin)
        with db:
            db.execute("UPDATE cards SET pvd = ? WHERE pan = ?", (pvd, pan))
    finally:
        db.close()
    pins = lab.pins()
    pins[card] = pin
    write_private(lab.root / "secrets" / "pins.json", json.dumps(pins).encode())


def pin_forms(pin: str) -> list[bytes]:
    """The PIN as text, as BCD bytes, as hex text of its ASCII, and as the clear format-4
    PIN field's start (control 4, length, digits)."""
    field = f"4{len(pin):X}{pin}"
    return [
        pin.encode(),
        bytes.fromhex(pin),
        pin.encode().hex().encode(),
        field.encode(),
        field.lower().encode(),
        pin.encode("utf-16-le"),
    ]


def files_holding(paths: list[Path], pin: str) -> list[str]:
    found = []
    for path in paths:
        data = path.read_bytes()
        found += [f"{path.name}: {form!r}" for form in pin_forms(pin) if form in data]
    return found


@pytest.fixture
def long_pin_lab(lab: Lab) -> Iterator[Lab]:
    set_pin(lab, "alice-visa", LONG_PIN)
    yield lab


def test_pin_is_in_no_file_a_terminal_run_writes(long_pin_lab: Lab, tmp_path: Path) -> None:
    """A terminal-side run with everything switched on: ``swipepay terminal run`` against the
    TLS center; a run through the drivers with an APDU + host trace and DEBUG logging of every
    logger; a terminal killed with reversals journalled (terminals/<TID>/terminal.db); the
    center killed so a reversal stays queued.  Then every file under terminals/, the lab's
    state files, traces, logs and captured output are searched for the PIN: never found."""
    lab = long_pin_lab
    out = tmp_path / "out"
    out.mkdir()
    port = faults.free_port()
    center_log = (out / "center.log").open("wb")
    center = subprocess.Popen(
        [sys.executable, "-c", "from swipepay.cli.main import main; main()", "center", "serve",
         "--home", str(lab.root), "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT, stdout=center_log, stderr=center_log,
    )
    try:
        wait_for(lambda: port_open(port), 15, f"the center on 127.0.0.1:{port}")
        # 1. the terminal command, one-shot
        cmd = subprocess.run(
            [sys.executable, "-c", "from swipepay.cli.main import main; main()", "terminal", "run",
             "--home", str(lab.root), "--card", "mock:alice-visa", "--phone", "mock:alice-phone",
             "--center", f"127.0.0.1:{port}", "--type", "purchase", "--amount", "1.00", "--json"],
            cwd=ROOT, capture_output=True, timeout=60, check=False,
        )
        (out / "terminal-run.out").write_bytes(cmd.stdout + cmd.stderr)
        assert cmd.returncode == 0, cmd.stdout + cmd.stderr
        # 2. the drivers with a trace and DEBUG logs
        trace_path, log_path = out / "trace.jsonl", out / "debug.log"
        handler = logging.FileHandler(log_path)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            with trace_path.open("w") as trace:
                report = _traced_purchase(lab, port, TraceWriter(trace))
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            handler.close()
        assert report.outcome.ending is Ending.APPROVED, report.outcome
        # 3. a terminal process (``swipepay terminal run``) killed mid-run
        worker = faults.start_terminal(lab.root, port)
        try:
            worker.wait(1.0)
        except subprocess.TimeoutExpired:
            faults.kill(worker)
    finally:
        faults.kill(center)
        center_log.close()
    # 4. the center gone: the terminal's request times out and its reversal stays queued
    host = TlsHost.for_lab(lab.root, faults.POS, "127.0.0.1", port, connect_timeout=0.2,
                           reversal_timeout=0.2)
    try:
        req = faults.LabSigner(lab, "alice-phone").request("555001")
        with pytest.raises(TransportError):
            host.authorize(req, 0.3)  # the request never left: nothing to reverse...
        assert not host.queue.pending()
        host.queue_reversal(req.txn)  # ...so queue one as a request lost in flight would
        assert host.queue.pending(), "a reversal is queued on disk"
    finally:
        host.close()

    written = [p for p in (lab.root / "terminals").rglob("*") if p.is_file()]
    written += [p for p in out.iterdir() if p.is_file()]
    assert any(p.name == "terminal.db" for p in written)  # STAN, pre-auths, reversal queue
    assert trace_path.stat().st_size > 0 and log_path.stat().st_size > 0
    assert files_holding(written, LONG_PIN) == []
    # The search is not blind: it finds the PIN where it is meant to be (the simulated user's).
    assert files_holding([lab.root / "secrets" / "pins.json"], LONG_PIN)


def _traced_purchase(lab: Lab, port: int, writer: TraceWriter):  # type: ignore[no-untyped-def]
    phone = PhoneApp(
        PhoneStore(lab.phone_path("alice-phone")),
        ScriptedUser(Choice.CONFIRM, lambda: LONG_PIN),
        clock=lambda: 1.8e9,
    )
    rf = MockField()
    phone.enter(rf)
    settings = TerminalSettings(terminal_id=faults.POS, center=f"127.0.0.1:{port}")
    with TerminalApp.open(lab.root, settings) as app:
        host = app.open_center()
        try:
            order = Order(TxnType.PURCHASE, 2_00)
            return app.run(
                order,
                reader=app.open_reader("mock:alice-visa", order),
                link=TracingLink(MockPhoneLink("mock:", rf), writer),
                host=TracingHost(host, writer),
                sleep=lambda s: None,
                observe=lambda event: logging.getLogger("terminal").debug("%s", event),
            ).report
        finally:
            host.close()
