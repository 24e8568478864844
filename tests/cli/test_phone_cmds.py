"""`swipepay phone run` and `swipepay conformance` as real processes talking over tcp:."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from swipepay.center.lab import Lab
from swipepay.cli.main import main
from swipepay.cli.phone_cmds import pin_from_env, pin_from_file
from swipepay.firmware_sim.errors import ConfigError


def swipepay(*args: str) -> list[str]:
    return [sys.executable, "-c", "from swipepay.cli.main import main; main()", *args]


class PhoneProcess:
    def __init__(self, lab: Lab, *extra: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            swipepay("phone", "run", "--profile", str(lab.phone_path("alice-phone")),
                     "--link", "tcp:127.0.0.1:0", "--once", *extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # bounded: the process prints or exits at once
        match = re.search(r"listening on (tcp:127\.0\.0\.1:\d+)", first)
        if match is None:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"phone did not start: {first!r} {err!r}")
        self.url = match.group(1)
        self.first = first

    def finish(self) -> tuple[str, str]:
        try:
            out, err = self.proc.communicate(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        return self.first + out, err


@pytest.fixture
def phone(lab: Lab) -> Iterator[PhoneProcess]:
    pin = lab.pins()["alice-visa"]
    p = PhoneProcess(lab, "--auto-confirm", "--pin-env", "SWIPEPAY_TEST_PIN",
                     env={"SWIPEPAY_TEST_PIN": pin})
    yield p
    if p.proc.poll() is None:
        p.proc.kill()
        p.proc.communicate()


def test_conformance_against_the_emulator_passes(
    lab: Lab, phone: PhoneProcess, tmp_path: Path
) -> None:
    pin = lab.pins()["alice-visa"]
    before = lab.phone_profile("alice-phone").counter
    trace = tmp_path / "trace.jsonl"
    result = subprocess.run(
        swipepay("conformance", "--link", phone.url, "--home", str(lab.root),
                 "--card", "alice-visa", "--terminal", "POS00001", "--json",
                 "--connect-timeout", "10", "--trace", str(trace)),
        capture_output=True, text=True, timeout=60,
    )
    phone_out, phone_err = phone.finish()
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert {c["name"] for c in report["checks"] if c["passed"]} >= {"wrong-token", "transaction"}
    assert phone.proc.returncode == 0
    assert "PAY Corner Coffee" in phone_out
    for text in (result.stdout, result.stderr, phone_out, phone_err):
        assert pin not in text
    for raw in trace.read_text().splitlines():
        record = json.loads(raw)
        for name in ("cmd", "rsp"):
            if record.get(name):
                assert pin.encode() not in bytes.fromhex(record[name])
                record[name] = ""
        assert pin not in json.dumps(record)
    # Each confirmation's DUKPT counter was written back to the profile.
    assert lab.phone_profile("alice-phone").counter > before


def test_conformance_table_and_exit_code_on_failure(lab: Lab) -> None:
    declining = PhoneProcess(lab, "--decline")
    result = subprocess.run(
        swipepay("conformance", "--link", declining.url, "--home", str(lab.root),
                 "--check", "wrong-token", "--check", "transaction", "--connect-timeout", "10"),
        capture_output=True, text=True, timeout=60,
    )
    declining.finish()
    assert result.returncode == 1
    assert re.search(r"pass\s+wrong-token\s+expected 6A88 6985\s+seen 9000 6A88 6985",
                     result.stdout)
    assert re.search(r"FAIL\s+transaction", result.stdout)
    assert "1/2 checks passed" in result.stdout
    assert "confirm the payment on the phone" in result.stderr


def test_conformance_without_a_phone_is_one_clear_error(lab: Lab) -> None:
    result = CliRunner().invoke(main, ["conformance", "--link", "tcp:127.0.0.1:9", "--home",
                                       str(lab.root), "--connect-timeout", "0.2"])
    assert result.exit_code == 5
    assert "no phone at 127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auto-confirm"], "exactly one of --pin-env"),
        (["--auto-confirm", "--decline", "--pin-env", "X"], "exclude each other"),
        (["--pin-env", "X"], "go with --auto-confirm"),
        (["--auto-confirm", "--pin-env", "SWIPEPAY_UNSET_VARIABLE"], "is not set"),
    ],
)
def test_phone_run_refuses_bad_pin_options(lab: Lab, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["phone", "run", "--profile",
                                       str(lab.phone_path("alice-phone")),
                                       "--link", "tcp:127.0.0.1:0", *args])
    assert result.exit_code == 3
    assert message in result.output


def test_phone_run_refuses_an_unknown_link_scheme(lab: Lab) -> None:
    result = CliRunner().invoke(main, ["phone", "run", "--profile",
                                       str(lab.phone_path("alice-phone")), "--link", "zz:x",
                                       "--decline"])
    assert result.exit_code == 3 and "unknown phone-serve URL scheme" in result.output


def test_pin_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text("2468\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="others may have read it"):
        pin_from_file(path)
    path.chmod(0o600)
    assert pin_from_file(path)() == "2468"


def test_bad_pins_are_refused_without_echoing_them(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWIPEPAY_TEST_PIN", "12ab")
    with pytest.raises(ConfigError) as info:
        pin_from_env("SWIPEPAY_TEST_PIN")
    assert "12ab" not in str(info.value)
    path = tmp_path / "pin"
    path.write_text("1")
    path.chmod(0o600)
    with pytest.raises(ConfigError):
        pin_from_file(path)
    with pytest.raises(ConfigError, match="missing"):
        pin_from_file(tmp_path / "missing")


def test_a_pin_file_that_is_no_file_or_no_pin_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # before: read at start, waiting for a writer for ever
    with pytest.raises(ConfigError, match="not a regular file"):
        pin_from_file(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"1234" + b" " * 10_000)  # before: read whole, whatever its size
    big.chmod(0o600)
    with pytest.raises(ConfigError, match="larger than 64 bytes"):
        pin_from_file(big)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe12")
    binary.chmod(0o600)
    with pytest.raises(ConfigError, match="not text"):
        pin_from_file(binary)


@pytest.mark.parametrize("pin", ["١٢٣٤", "²²²²"])
def test_pins_in_other_scripts_digits_are_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pin: str
) -> None:
    # isdigit() takes them; no PIN block can hold them, so they are refused before any payment.
    monkeypatch.setenv("SWIPEPAY_TEST_PIN", pin)
    with pytest.raises(ConfigError, match="4 to 12 digits"):
        pin_from_env("SWIPEPAY_TEST_PIN")
    path = tmp_path / "pin"
    path.write_text(pin, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="4 to 12 digits"):
        pin_from_file(path)


def test_lazy_commands_are_listed() -> None:
    result = CliRunner().invoke(main, ["--help"])
    for name in ("phone", "conformance", "trace"):
        assert name in result.output
