"""The tracing link and host: what crossed the link, as JSON lines, and never the PIN."""

from __future__ import annotations

import io
import json
import time

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.local_host import LocalHost
from swipepay.drivers.base import DriverContext
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_card_reader, open_phone_link
from swipepay.drivers.runner import run_transaction
from swipepay.drivers.trace import TraceWriter, TracingHost, TracingLink
from swipepay.firmware_sim.errors import TransportError
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PhoneApplet
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.terminal import Ending, Order, Terminal
from swipepay.firmware_sim.trace_view import parse_trace, render_mermaid, render_table
from swipepay.firmware_sim.transaction import TxnType

STANS = iter(range(100, 1000))


def traced_purchase(lab: Lab, leave_after: int | None = None) -> tuple[str, Ending, str]:
    profile = lab.phone_profile("alice-phone")
    applet = PhoneApplet(profile.identity(), profile.dukpt())
    pin = lab.pins()[profile.card]
    field = MockField()
    field.place(
        Phone(applet,
              ScriptedUser(Choice.CONFIRM, lambda: pin, delay_polls=1), time.time),
        leave_after,
    )
    out = io.StringIO()
    writer = TraceWriter(out)
    cert, key = lab.terminal_link_identity("POS00001")
    reader = open_card_reader("mock:alice-visa", DriverContext(cards=lab.cards(), amount=4_20))
    center = Center.open(lab.db_path, lab.center_keys())
    try:
        report = run_transaction(
            Terminal(lab.terminal_config("POS00001"), TerminalLink(cert, key), next(STANS)),
            Order(TxnType.PURCHASE, 4_20),
            reader=reader,
            link=TracingLink(open_phone_link("mock:", DriverContext(field=field)), writer),
            host=TracingHost(LocalHost(center), writer),
            sleep=lambda s: None,
            observe=writer.observer(),
        )
    finally:
        center.close()
        assert profile.path is not None
        profile.with_counter(applet.dukpt.counter).save(profile.path)
    return out.getvalue(), report.outcome.ending, pin


def test_trace_of_a_purchase_round_trips_through_the_viewer(lab: Lab) -> None:
    text, ending, _ = traced_purchase(lab)
    assert ending is Ending.APPROVED
    records = parse_trace(text)
    ins = [r.get("ins") for r in records if r.kind == "apdu"]
    assert ins[:4] == ["SELECT", "CONNECT", "AUTHENTICATE", "PAYMENT_REQUEST"]
    assert ins[-1] == "RESULT" and "GET_CONFIRMATION" in ins
    assert [r.get("dir") for r in records if r.kind == "host"] == [
        "terminal->center", "center->terminal"]
    assert any(r.kind == "step" for r in records)
    assert "participant C as Center" in render_mermaid(records)
    assert "RESULT" in render_table(records)


def test_the_pin_never_appears_in_a_trace(lab: Lab) -> None:
    text, ending, pin = traced_purchase(lab)
    assert ending is Ending.APPROVED
    # Not as text anywhere outside the hex dumps, not as ASCII inside what crossed the link,
    # and not as a clear ISO 9564 format-4 PIN field (4, length, digits, A fill).
    clear_field = (f"4{len(pin):X}{pin}".ljust(32, "a")).lower()
    for raw in text.splitlines():
        record = json.loads(raw)
        for name in ("cmd", "rsp"):
            if record.get(name):
                data = bytes.fromhex(record[name])
                assert pin.encode() not in data
                assert clear_field not in record[name]
                record[name] = ""
        assert pin not in json.dumps(record)


def test_a_broken_link_is_recorded(lab: Lab) -> None:
    text, ending, _ = traced_purchase(lab, leave_after=2)
    assert ending is Ending.PHONE_GONE
    last = [r for r in parse_trace(text) if r.kind == "apdu"][-1]
    assert last.get("sw") is None and "left" in last.get("error")


def test_tracing_link_reraises_transport_errors() -> None:
    class Dead:
        url = "dead:"

        def connect(self, timeout: float) -> None:
            raise TransportError("no field")

        def transmit(self, apdu: bytes) -> bytes:
            raise TransportError("gone")

        def disconnect(self) -> None:
            return None

    out = io.StringIO()
    link = TracingLink(Dead(), TraceWriter(out))
    with pytest.raises(TransportError):
        link.connect(1)
    with pytest.raises(TransportError):
        link.transmit(bytes.fromhex("80500000"))
    records = parse_trace(out.getvalue())
    assert [r.kind for r in records] == ["link", "apdu"]
    assert records[1].get("ins") == "?"
