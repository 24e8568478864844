"""Parsing and rendering APDU traces (no files: text in, text out)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import DecodeError
from swipepay.firmware_sim.trace_view import (
    instruction_name,
    parse_trace,
    render_mermaid,
    render_table,
)


def line(**fields: object) -> str:
    return json.dumps({"v": 1, "t_ms": 1.5, **fields})


APDU = line(kind="apdu", dir="terminal->phone", ins="SELECT",
            cmd="00a4040007f053575041590100", rsp="6f0e8407f0535750415901a503c001019000",
            sw="9000", ms=0.25)
CONNECT = line(kind="apdu", dir="terminal->phone", ins="CONNECT", cmd="8010000002c100",
               rsp="6a88", sw="6A88", ms=0.5)
BROKEN = line(kind="apdu", dir="terminal->phone", ins="RESULT", cmd="80400000", rsp=None,
              sw=None, ms=3.0, error="the phone closed the link")
HOST = line(kind="host", dir="terminal->center", text="purchase 100 978 STAN 000001")
HOST_BACK = line(kind="host", dir="center->terminal", text="RC 00 auth 123456")
LINK = line(kind="link", event="disconnect")
STEP = line(kind="step", step=3, text="CONNECT_PHONE")
TRACE = "\n".join([STEP, APDU, CONNECT, HOST, HOST_BACK, BROKEN, LINK, ""])


def test_instruction_names() -> None:
    assert instruction_name(bytes.fromhex("00a40400")) == "SELECT"
    assert instruction_name(bytes.fromhex("80300000")) == "GET_CONFIRMATION"
    assert instruction_name(bytes.fromhex("80a40400")) == "?"
    assert instruction_name(bytes.fromhex("80500000")) == "?"
    assert instruction_name(bytes.fromhex("a0100000")) == "?"
    assert instruction_name(b"\x80") == "?"


def test_table_annotates_each_exchange() -> None:
    table = render_table(parse_trace(TRACE))
    rows = table.splitlines()
    select = next(r for r in rows if "SELECT" in r)
    assert "9000 normal processing" in select and " 13 " in select and " 18 " in select
    connect = next(r for r in rows if "CONNECT " in r)
    assert "6A88 referenced data" in connect and "user-ID token" in connect
    assert "no answer: the phone closed the link" in table
    assert "terminal->center: purchase 100" in table
    assert "link disconnect" in table
    assert rows[-1] == "3 APDUs, 24 bytes to the phone, 20 bytes back"


def test_mermaid_has_center_only_with_host_events() -> None:
    diagram = render_mermaid(parse_trace(TRACE))
    assert diagram.startswith("sequenceDiagram")
    assert "participant C as Center" in diagram
    assert "T->>C: purchase 100 978 STAN 000001" in diagram
    assert "C-->>T: RC 00 auth 123456" in diagram
    assert "T->>P: SELECT (13 B)" in diagram
    assert "P-->>T: 6A88 (2 B, 0.5 ms)" in diagram
    plain = render_mermaid(parse_trace("\n".join([APDU, CONNECT])))
    assert "Center" not in plain


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "line 1: not JSON"),
        (APDU + "\n[1, 2]", "line 2: not a JSON object"),
        (APDU + "\n\n" + line(kind="nope"), "line 3: unknown record kind"),
        (json.dumps({"v": 2, "kind": "link", "t_ms": 0, "event": "x"}), "unknown trace version"),
        (line(kind="link"), "field 'event'"),
        (line(kind="apdu", dir="x", ins="?", cmd="zz", rsp=None, sw=None, ms=1), "cmd is not hex"),
        (line(kind="apdu", dir="x", ins="?", cmd="00", rsp="9000", sw="90", ms=1), "sw must be"),
        # bytes.fromhex takes spaces: these were shown with wrong byte counts and SW "0090".
        (line(kind="apdu", dir="x", ins="?", cmd="00 A4", rsp=None, sw=None, ms=1), "cmd is not"),
        (line(kind="apdu", dir="x", ins="?", cmd="00", rsp="9000", sw="  90", ms=1), "sw must be"),
        (line(kind="apdu", dir="x", ins="?", cmd="٠٠", rsp=None, sw=None, ms=1), "cmd is not"),
        (line(kind="apdu", dir="x", ins="?", cmd="00", rsp="9000", sw="9000", ms=True), "'ms'"),
        (json.dumps({"v": 1, "kind": "link", "t_ms": "0", "event": "x"}), "t_ms"),
    ],
)
def test_bad_lines_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_trace(text)


def test_a_traces_strings_are_shown_escaped_one_row_each() -> None:
    # Before: a hand-made trace could print a newline or an escape sequence as it was.
    hostile = "\n".join([
        line(kind="host", dir="terminal->center", text="ok\n  999    fake row\x1b[2J"),
        line(kind="link", event="connect\x9b31m", detail="\r"),
    ])  # fmt: skip
    records = parse_trace(hostile)
    for shown in (render_table(records), render_mermaid(records)):
        assert "\x1b" not in shown and "\x9b" not in shown and "\r" not in shown
        assert "fake row\\x1b[2J" in shown
    table = render_table(records)
    assert "ok\\n  999    fake row" in table
    assert len(table.splitlines()) == 2 + 2 + 1  # header, rule, the two rows, the total


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        records = parse_trace(text)
    except DecodeError as exc:
        assert str(exc).startswith("trace line ")
        return
    render_table(records)
    render_mermaid(records)


@given(st.lists(st.dictionaries(st.sampled_from(["v", "kind", "t_ms", "cmd", "rsp", "sw", "ms",
                                                 "ins", "dir", "event", "text", "step"]),
                                st.one_of(st.none(), st.integers(), st.text(max_size=6),
                                          st.sampled_from(["apdu", "link", "host", "step"]),
                                          st.just(1))),
                max_size=5))
def test_any_json_records_parse_or_fail_cleanly(objs: list[dict[str, object]]) -> None:
    text = "\n".join(json.dumps(o) for o in objs)
    try:
        records = parse_trace(text)
    except DecodeError:
        return
    render_table(records)
    render_mermaid(records)
