"""Reading APDU traces: parse the JSON lines, render an annotated table or a Mermaid diagram.

Sans-IO: text in, text out; ``drivers/trace.py`` writes the traces and ``swipepay trace`` prints
what this module renders.  One JSON object per line, all with ``v`` (format version, 1), ``kind``
and ``t_ms`` (milliseconds since the trace started):

======  =====================================================================================
kind    other fields
======  =====================================================================================
apdu    ``dir`` ("terminal->phone"), ``ins`` (name or "?"), ``cmd`` / ``rsp`` (hex; ``rsp``
        null if the link broke), ``sw`` ("9000" or null), ``ms`` (duration), ``error`` (opt.)
link    ``event`` (connect, connect-failed, disconnect), ``detail`` (optional)
host    ``dir`` ("terminal->center" or "center->terminal"), ``text`` (a summary)
step    ``step`` (method step 1-8), ``text``
======  =====================================================================================

Traces come from files other programs wrote, so every line is checked and a bad one is a
:class:`DecodeError` naming the line, never a traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from swipepay.firmware_sim.errors import DecodeError
from swipepay.firmware_sim.phonelink.protocol import CLA_ISO, CLA_PROPRIETARY, Ins
from swipepay.firmware_sim.printable import one_line
from swipepay.firmware_sim.statuswords import describe

TRACE_VERSION = 1

#: Method step (hardware_notes/design.md §1) each instruction belongs to.
INS_STEP: dict[str, int] = {
    Ins.SELECT.name: 3,
    Ins.CONNECT.name: 3,
    Ins.AUTHENTICATE.name: 3,
    Ins.PAYMENT_REQUEST.name: 4,
    Ins.GET_CONFIRMATION.name: 5,
    Ins.RESULT.name: 8,
}

#: What each instruction's bodies hold, for the table's annotation column.
INS_NOTE: dict[str, str] = {
    Ins.SELECT.name: "select applet by AID",
    Ins.CONNECT.name: "user-ID token + ephemeral keys",
    Ins.AUTHENTICATE.name: "terminal certificate + signature / key confirmation",
    Ins.PAYMENT_REQUEST.name: "sealed: transaction details",
    Ins.GET_CONFIRMATION.name: "sealed: poll; answer pending or PIN block + signature",
    Ins.RESULT.name: "sealed: center's response code",
}

#: Required fields per record kind, with their JSON types (spec as data).
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "apdu": {"dir": (str,), "ins": (str,), "cmd": (str,), "rsp": (str, type(None)),
             "sw": (str, type(None)), "ms": (int, float)},
    "link": {"event": (str,)},
    "host": {"dir": (str,), "text": (str,)},
    "step": {"step": (int,), "text": (str,)},
}


def instruction_name(apdu: bytes) -> str:
    """The phone-link instruction a command APDU carries, or ``"?"``."""
    if len(apdu) < 2:
        return "?"
    cla, ins = apdu[0], apdu[1]
    if cla == CLA_ISO and ins == Ins.SELECT:
        return Ins.SELECT.name
    if cla == CLA_PROPRIETARY and ins != Ins.SELECT:
        try:
            return Ins(ins).name
        except ValueError:
            return "?"
    return "?"


@dataclass(frozen=True)
class Record:
    kind: str
    t_ms: float
    fields: dict[str, Any]

    def get(self, name: str) -> Any:
        return self.fields.get(name)


#: Hex as traces write it: pairs of ASCII hex digits, nothing between them
#: (``bytes.fromhex`` would also take spaces, and the byte counts shown would be wrong).
_HEX_TEXT = re.compile(r"(?:[0-9A-Fa-f]{2})*")


def _hex(value: Any, line: int, name: str) -> None:
    if value is not None and not _is_hex(value):
        raise DecodeError(f"trace line {line}: {name} is not hex")


def parse_trace(text: str) -> list[Record]:
    """Parse a whole trace; blank lines are skipped, anything else malformed is refused."""
    records: list[Record] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise DecodeError(f"trace line {number}: not JSON") from None
        if not isinstance(obj, dict):
            raise DecodeError(f"trace line {number}: not a JSON object")
        if obj.get("v") != TRACE_VERSION:
            raise DecodeError(f"trace line {number}: unknown trace version {obj.get('v')!r}")
        kind = obj.get("kind")
        spec = _FIELDS.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise DecodeError(f"trace line {number}: unknown record kind {kind!r}")
        t_ms = obj.get("t_ms")
        if not isinstance(t_ms, int | float) or isinstance(t_ms, bool):
            raise DecodeError(f"trace line {number}: t_ms must be a number")
        for name, types in spec.items():
            value = obj.get(name)
            if not isinstance(value, types) or isinstance(value, bool):
                raise DecodeError(f"trace line {number}: field {name!r} missing or mistyped")
        if kind == "apdu":
            _hex(obj["cmd"], number, "cmd")
            _hex(obj["rsp"], number, "rsp")
            sw = obj["sw"]
            if sw is not None and (len(sw) != 4 or not _is_hex(sw)):
                raise DecodeError(f"trace line {number}: sw must be 4 hex digits")
        records.append(Record(str(kind), float(t_ms), obj))
    return records


def _is_hex(text: str) -> bool:
    return _HEX_TEXT.fullmatch(text) is not None


def _sw_text(record: Record) -> str:
    sw = record.get("sw")
    if sw is None:
        return f"(no answer: {record.get('error') or 'link broke'})"
    return describe(int(sw, 16))


def _nbytes(value: str | None) -> str:
    return "-" if value is None else str(len(value) // 2)


def render_table(records: list[Record]) -> str:
    """An annotated table: per exchange its method step, instruction, sizes, SW meaning, time."""
    header = f"{'#':>3} {'t ms':>9} {'step':>4} {'instruction':<17} {'cmd':>4} {'rsp':>4} " \
             f"{'ms':>7}  status / note"
    lines = [header, "-" * len(header)]
    n = 0
    for r in records:
        if r.kind == "apdu":
            n += 1
            ins = str(r.get("ins"))
            step = INS_STEP.get(ins)
            lines.append(
                f"{n:>3} {r.t_ms:>9.1f} {step if step else '':>4} {ins:<17} "
                f"{_nbytes(r.get('cmd')):>4} {_nbytes(r.get('rsp')):>4} "
                f"{float(r.get('ms')):>7.2f}  {_sw_text(r)}"
                + (f"; {INS_NOTE[ins]}" if ins in INS_NOTE else "")
            )
        elif r.kind == "link":
            detail = f" {r.get('detail')}" if r.get("detail") else ""
            lines.append(f"{'':>3} {r.t_ms:>9.1f}      -- link {r.get('event')}{detail}")
        elif r.kind == "host":
            lines.append(f"{'':>3} {r.t_ms:>9.1f}      == {r.get('dir')}: {r.get('text')}")
        elif r.kind == "step":
            lines.append(f"{'':>3} {r.t_ms:>9.1f} {r.get('step'):>4} ## {r.get('text')}")
    apdus = [r for r in records if r.kind == "apdu"]
    sent = sum(len(str(r.get("cmd"))) // 2 for r in apdus)
    received = sum(len(r.get("rsp") or "") // 2 for r in apdus)
    lines.append(f"{len(apdus)} APDUs, {sent} bytes to the phone, {received} bytes back")
    return "\n".join(one_line(line) for line in lines)  # a trace's strings are not trusted


def _mermaid_text(text: str) -> str:
    """Mermaid message text: no characters that end a message or start a comment."""
    return text.replace(";", ",").replace("#", "No.").replace("\n", " ")


def render_mermaid(records: list[Record]) -> str:
    """A Mermaid ``sequenceDiagram``; the Center appears when the trace has host events."""
    has_host = any(r.kind == "host" for r in records)
    lines = ["sequenceDiagram", "    participant T as Terminal", "    participant P as Phone"]
    if has_host:
        lines.append("    participant C as Center")
    for r in records:
        if r.kind == "apdu":
            ins = str(r.get("ins"))
            lines.append(f"    T->>P: {ins} ({_nbytes(r.get('cmd'))} B)")
            if r.get("sw") is None:
                lines.append(f"    Note over T,P: no answer: {_mermaid_text(str(r.get('error')))}")
            else:
                lines.append(
                    f"    P-->>T: {r.get('sw')} ({_nbytes(r.get('rsp'))} B, "
                    f"{float(r.get('ms')):.1f} ms)"
                )
        elif r.kind == "host" and has_host:
            arrow = "T->>C" if r.get("dir") == "terminal->center" else "C-->>T"
            lines.append(f"    {arrow}: {_mermaid_text(str(r.get('text')))}")
        elif r.kind == "link" and r.get("event") == "disconnect":
            lines.append("    Note over T,P: field off (disconnect)")
        elif r.kind == "step":
            text = _mermaid_text(str(r.get("text")))
            lines.append(f"    Note over T: step {r.get('step')}: {text}")
    return "\n".join(one_line(line) for line in lines)
