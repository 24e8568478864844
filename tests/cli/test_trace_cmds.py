"""`swipepay trace FILE [--mermaid]`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from swipepay.cli.main import main

RECORDS = [
    {"v": 1, "kind": "link", "t_ms": 0.1, "event": "connect", "detail": "tcp:127.0.0.1:7000"},
    {"v": 1, "kind": "apdu", "t_ms": 0.5, "dir": "terminal->phone", "ins": "SELECT",
     "cmd": "00a4040007f053575041590100", "rsp": "6f0e8407f0535750415901a503c001019000",
     "sw": "9000", "ms": 0.3},
    {"v": 1, "kind": "host", "t_ms": 2.0, "dir": "terminal->center", "text": "purchase 100"},
]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_table(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(r) for r in RECORDS])
    result = CliRunner().invoke(main, ["trace", str(path)])
    assert result.exit_code == 0
    assert "9000 normal processing" in result.output
    assert "1 APDUs, 13 bytes to the phone, 18 bytes back" in result.output


def test_mermaid(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(r) for r in RECORDS])
    result = CliRunner().invoke(main, ["trace", str(path), "--mermaid"])
    assert result.exit_code == 0
    assert result.output.startswith("sequenceDiagram")
    assert "participant C as Center" in result.output


def test_bad_line_is_one_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(RECORDS[0]), "{oops"])
    result = CliRunner().invoke(main, ["trace", str(path)])
    assert result.exit_code == 4
    assert "trace line 2: not JSON" in result.output
    assert "Traceback" not in result.output


def test_missing_binary_or_no_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["trace", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 3 and "is missing" in result.output
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00")
    result = CliRunner().invoke(main, ["trace", str(binary)])
    assert result.exit_code == 3 and "not UTF-8 text" in result.output
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # before: the command waited for a writer for ever
    result = CliRunner().invoke(main, ["trace", str(fifo)])
    assert result.exit_code == 3 and "not a regular file" in result.output
