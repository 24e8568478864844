"""Regenerate the annotated transcript in hardware_notes/phone-link.md from a real run.

    .venv/bin/python hardware_notes/make_transcript.py > transcript.md

Creates a throw-away lab, runs one purchase of 12.34 (alice-visa, POS00001) in one process with
a tracing link and host, and prints every APDU in hex, split into header, Lc, TLV fields or
secure-channel frame, Le and status word.  Keys and nonces are fresh each run, so the bytes
differ from run to run but the layout does not.  Only what crossed the link is printed: the PIN
is inside a sealed frame as a format-4 PIN block and never appears.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

from swipepay.center.core import Center
from swipepay.center.lab import create_lab
from swipepay.center.local_host import LocalHost
from swipepay.drivers.base import DriverContext
from swipepay.drivers.mock_phone import MockField
from swipepay.drivers.registry import open_card_reader, open_phone_link
from swipepay.drivers.runner import run_transaction
from swipepay.drivers.trace import TraceWriter, TracingHost, TracingLink
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import SEALED, PhoneApplet
from swipepay.firmware_sim.phonelink.protocol import Ins, Tag
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.statuswords import describe
from swipepay.firmware_sim.terminal import Order, Terminal
from swipepay.firmware_sim.tlv import parse_tlv
from swipepay.firmware_sim.trace_view import parse_trace
from swipepay.firmware_sim.transaction import TxnType


def _tlv_lines(data: bytes, indent: str = "    ") -> list[str]:
    lines = []
    for item in parse_tlv(data):
        try:
            name = Tag(item.tag).name
        except ValueError:
            name = "?"
        lines.append(f"{indent}{item.tag:02X} {len(item.value):02X} {item.value.hex().upper()}"
                     f"   ; {name}, {len(item.value)} bytes")
        if item.tag in (Tag.FCI, Tag.FCI_PROPRIETARY):
            lines.extend(_tlv_lines(item.value, indent + "  "))
    return lines


def _frame_lines(frame: bytes) -> list[str]:
    counter = f"    {frame[:4].hex().upper()}   ; counter {int.from_bytes(frame[:4], 'big')}"
    body = frame[4:-16]
    middle = (f"    {body.hex().upper()}   ; AES-GCM ciphertext, {len(body)} bytes" if body
              else "    (no ciphertext: empty plaintext)")
    return [counter, middle, f"    {frame[-16:].hex().upper()}   ; GCM tag"]


def annotate(cmd: bytes, rsp: bytes, ins_name: str) -> list[str]:
    ins = Ins[ins_name]
    lines = [f"> {cmd.hex().upper()}", f"    {cmd[:4].hex().upper()}   ; CLA INS P1 P2"]
    body = cmd[4:]
    if body:
        lc = body[0]
        data, le = body[1:1 + lc], body[1 + lc:]
        lines.append(f"    {lc:02X}   ; Lc = {lc}")
        if ins is Ins.SELECT:
            lines.append(f"    {data.hex().upper()}   ; AID")
        elif ins in SEALED:
            lines += _frame_lines(data)
        else:
            lines += _tlv_lines(data)
        if le:
            lines.append(f"    {le.hex().upper()}   ; Le (00 = up to 256)")
    lines.append(f"< {rsp.hex().upper()}")
    data, sw = rsp[:-2], int.from_bytes(rsp[-2:], "big")
    if data:
        lines += _frame_lines(data) if ins in SEALED else _tlv_lines(data)
    lines.append(f"    {sw:04X}   ; {describe(sw)}")
    return lines


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lab = create_lab(Path(tmp) / "lab")
        profile = lab.phone_profile("alice-phone")
        pin = lab.pins()[profile.card]
        field = MockField()
        field.place(Phone(PhoneApplet(profile.identity(), profile.dukpt()),
                          ScriptedUser(Choice.CONFIRM, lambda: pin, delay_polls=1), time.time))
        out = io.StringIO()
        writer = TraceWriter(out)
        cert, key = lab.terminal_link_identity("POS00001")
        reader = open_card_reader("mock:alice-visa", DriverContext(cards=lab.cards()))
        reader.amount = 12_34
        center = Center.open(lab.db_path, lab.center_keys())
        try:
            run_transaction(
                Terminal(lab.terminal_config("POS00001"), TerminalLink(cert, key), 1),
                Order(TxnType.PURCHASE, 12_34),
                reader=reader,
                link=TracingLink(open_phone_link("mock:", DriverContext(field=field)), writer),
                host=TracingHost(LocalHost(center), writer),
                sleep=lambda s: None,
            )
        finally:
            center.close()
        text = out.getvalue()
        if pin in "".join(json.dumps({k: v for k, v in json.loads(line).items()
                                      if k not in ("cmd", "rsp")}) for line in text.splitlines()):
            raise SystemExit("the PIN appeared in the trace")
    print("```text")
    for record in parse_trace(text):
        if record.kind == "apdu":
            print()
            print(f"# {record.get('ins')}")
            for line in annotate(bytes.fromhex(record.get("cmd")), bytes.fromhex(record.get("rsp")),
                                 record.get("ins")):
                print(line)
        elif record.kind == "host":
            print()
            print(f"# host {record.get('dir')}: {record.get('text')}")
        elif record.kind == "link":
            print()
            print(f"# link {record.get('event')}")
    print("```")


if __name__ == "__main__":
    main()
