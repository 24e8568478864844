"""A phone on the bench through ACardEmulator's relay, as real processes: ``swipepay phone run
--link vpcd-listen:...`` behind the ACardEmulator stand-in (tests/support/acardemulator.py),
``swipepay conformance`` and ``swipepay terminal run`` in front of it over ``tcp:`` (and over
pcscd/vpcd for the conformance suite), ``swipepay center serve`` behind the terminal.

All of it with PersoSim's AID, F04E66E75C02D8, which the app registers (hardware_notes/
android-phone.md): the stand-in routes nothing to the app before a SELECT of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from swipepay.center.lab import Lab
from swipepay.cli.app.terminal_app import TerminalApp
from swipepay.cli.app.terminal_settings import load_settings
from swipepay.cli.harness.processes import child_env, free_port, wait_for
from swipepay.cli.harness.realstack import PIN_ENV, Proc, Stack
from swipepay.cli.main import main
from swipepay.firmware_sim.conformance import CHECKS
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.phonelink.protocol import AID as DEFAULT_AID
from swipepay.firmware_sim.phonelink.protocol import parse_aid
from swipepay.firmware_sim.terminal import Ending
from tests.support.acardemulator import PERSOSIM_AID, ACardEmulatorStandIn
from tests.support.labs import copy_lab
from tests.support.pcsc import Slot

AID = PERSOSIM_AID.hex().upper()
RUN_TIMEOUT = 60.0


@dataclass
class Bench:
    stack: Stack
    phone: Proc
    relay: ACardEmulatorStandIn

    @property
    def lab(self) -> Lab:
        return Lab(self.stack.home)

    def conformance(self, *extra: str, link: str | None = None) -> tuple[int, dict[str, Any]]:
        proc = self.stack.spawn("conformance", [
            "conformance", "--link", link or self.relay.field_url, "--home", str(self.stack.home),
            "--card", "alice-visa", "--terminal", "POS00001", "--aid", AID, "--json",
            "--connect-timeout", "10", *extra,
        ])  # fmt: skip
        proc.process.wait(RUN_TIMEOUT)
        self.stack.procs.remove(proc)
        out = proc.output()
        return proc.process.returncode, json.loads(out[out.find("{"):])

    def purchase(self, amount: str = "12.34") -> tuple[int, dict[str, Any]]:
        return self.stack.terminal(
            "--type", "purchase", "--amount", amount, "--terminal-id", "POS00001", "--aid", AID,
            card="mock:alice-visa", phone=self.relay.field_url, timeout=RUN_TIMEOUT,
        )


def start_phone(stack: Stack, port: int, *, prompt: bool = False) -> Proc:
    lab = Lab(stack.home)
    args = ["phone", "run", "--profile", str(lab.phone_path("alice-phone")),
            "--link", f"vpcd-listen:127.0.0.1:{port}", "--aid", AID]  # fmt: skip
    env: dict[str, str] = {}
    if not prompt:
        args += ["--auto-confirm", "--pin-env", PIN_ENV]
        env[PIN_ENV] = lab.pins()["alice-visa"]
    proc = stack.spawn("phone", args, env, stdin=prompt)
    wait_for(lambda: "listening" in proc.output() or not proc.alive(), 15, "the phone to listen")
    proc.check_alive()
    return proc


@pytest.fixture(scope="module")
def bench(lab_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    root = copy_lab(lab_template, tmp_path_factory.mktemp("hce")).root
    with Stack.open(root, pcsc=False) as stack:
        stack.start_center()
        port = free_port()
        phone = start_phone(stack, port)
        relay = ACardEmulatorStandIn("127.0.0.1", port)
        try:
            yield Bench(stack, phone, relay)
        finally:
            relay.close()


def test_conformance_passes_through_the_relay(bench: Bench) -> None:
    code, report = bench.conformance()
    failed = [c for c in report["checks"] if not c["passed"]]
    assert (code, failed) == (0, []), report
    assert len(report["checks"]) == len(CHECKS) == 13
    assert report["checks"][0]["sends"] == f"SELECT {AID}"
    # Android routed the foreign SELECT nowhere (6A82 by itself); the app refused the rest.
    assert bytes.fromhex("6A82") in bench.relay.router.answered_by_android
    assert "signature verified" in report["checks"][-1]["detail"]


def test_wrong_aid_on_a_fresh_tap_meets_androids_own_6f00(bench: Bench) -> None:
    code, report = bench.conformance("--check", "wrong-aid")
    (check,) = report["checks"]
    assert code == 0 and check["passed"], check
    assert check["seen"] == "6A82 6F00 9000 6985"  # Android, Android, then the app
    assert "Android's own answer" in check["detail"]


def test_purchase_approved_then_a_second_tap_on_the_same_socket(bench: Bench) -> None:
    connections = bench.relay.app.connections
    for amount in ("12.34", "5.00"):
        code, out = bench.purchase(amount)
        assert (code, out["ending"], out["response_code"]) == (0, "APPROVED", "00"), out
    assert bench.relay.app.connections == connections == 1  # one socket for every tap
    assert bench.relay.app.sent.count(b"\x00") >= 2  # a power off after each tap
    assert "result: APPROVED 00" in bench.phone.output()


def test_the_app_reconnecting_after_a_broken_socket(bench: Bench) -> None:
    bench.relay.app.break_connection()
    code, out = bench.purchase("3.00")
    assert code != 0 and out["response_code"] is None, out  # 6D00 to the SELECT: no money moved
    bench.relay.app.restart()  # the app is started again: a new connection, power on
    code, out = bench.purchase("3.00")
    assert (code, out["ending"], out["response_code"]) == (0, "APPROVED", "00"), out
    assert bench.relay.app.connections == 2
    bench.phone.check_alive()


def test_power_off_in_the_middle_of_a_confirmation(bench: Bench) -> None:
    port = free_port()
    phone = start_phone(bench.stack, port, prompt=True)  # asks on stdin: nobody answers
    relay = ACardEmulatorStandIn("127.0.0.1", port)
    try:
        term = bench.stack.terminal_start(
            "--type", "purchase", "--amount", "9.99", "--terminal-id", "POS00001",
            "--aid", AID, card="mock:alice-visa", phone=relay.field_url,
        )
        wait_for(lambda: "PAY Corner Coffee" in phone.output(), 15, "the phone to show it")
        relay.pull()  # the phone leaves the field: Android deactivates the app (power off)
        term.process.wait(RUN_TIMEOUT)
        code, out = bench.stack.terminal_result(term)
        assert (code, out["ending"]) == (Ending.PHONE_GONE.exit_code, "PHONE_GONE"), out
        assert out["response_code"] is None  # the center was never asked
        wait_for(lambda: relay.app.sent[-1:] == [b"\x00"], 5, "the power off")
        # The payment is gone: the phone starts afresh on the next tap, on the same socket.
        code, report = bench.conformance("--check", "select", "--check", "out-of-order",
                                         link=relay.field_url)
        assert code == 0, report
        assert relay.app.connections == 1
        phone.check_alive()
    finally:
        relay.close()
        bench.stack.stop(phone)


def test_conformance_through_the_relay_over_pcscd(bench: Bench, slot1: Slot) -> None:
    port = free_port()
    phone = start_phone(bench.stack, port)
    relay = ACardEmulatorStandIn("127.0.0.1", port)
    try:
        slot1.insert(relay.vpcd_client("127.0.0.1", slot1.port))
        code, report = bench.conformance(link=f"pcsc:{slot1.reader}")
        failed = [c for c in report["checks"] if not c["passed"]]
        assert (code, failed) == (0, []), report
    finally:
        slot1.remove()
        relay.close()
        bench.stack.stop(phone)



#: ``swipepay ARGS`` in a Python where pyscard (``smartcard``) and nfcpy (``nfc``) cannot be
#: imported, as in Termux on a phone: an attempt fails the run, and leaving is checked too.
WITHOUT_READER_STACKS = """
import atexit, importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("smartcard", "nfc"):
            raise ImportError(f"{name} is not installed on the phone")
        return None
sys.meta_path.insert(0, Blocked())
def check():
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("smartcard", "nfc"))
    if loaded:
        print("LOADED", loaded, flush=True)
        sys.exit(3)
atexit.register(check)
from swipepay.cli.main import main
main()
"""


def test_the_phone_side_runs_without_pyscard_and_nfcpy(lab: Lab, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "phone.log"
    with log.open("wb") as out:
        phone = subprocess.Popen(
            [sys.executable, "-c", WITHOUT_READER_STACKS, "phone", "run",
             "--profile", str(lab.phone_path("alice-phone")), "--once", "--aid", AID,
             "--link", f"vpcd-listen:127.0.0.1:{port}", "--auto-confirm", "--pin-env", PIN_ENV],
            stdout=out, stderr=subprocess.STDOUT,
            env=child_env({PIN_ENV: lab.pins()["alice-visa"]}),
        )  # fmt: skip
    relay = None
    try:
        wait_for(lambda: "listening" in log.read_text() or phone.poll() is not None, 15,
                 "the phone to listen")
        relay = ACardEmulatorStandIn("127.0.0.1", port)
        select = bytes.fromhex("00A4040007") + PERSOSIM_AID + b"\x00"
        assert relay.router.process(select)[-2:] == b"\x90\x00"  # type: ignore[index]
        relay.router.field_off()  # the tap ends: power off; --once then stops the phone
        assert phone.wait(15) == 0, log.read_text()
    finally:
        if relay is not None:
            relay.close()
        if phone.poll() is None:
            phone.kill()
            phone.wait()
    assert "LOADED" not in log.read_text()


# -- the AID setting ----------------------------------------------------------------------------


def test_aid_is_parsed_and_checked() -> None:
    assert parse_aid("F0 4E 66 E7 5C 02 D8") == PERSOSIM_AID
    for bad in ("F04E66E75C02D", "F0", "00" * 17, "XYZ"):
        with pytest.raises(ConfigError):
            parse_aid(bad)


def test_the_lab_and_terminal_toml_choose_the_aid(lab: Lab) -> None:
    assert lab.aid == DEFAULT_AID  # a lab without the setting keeps swipepay's AID
    manifest = json.loads((lab.root / "lab.json").read_text())
    (lab.root / "lab.json").write_text(json.dumps({**manifest, "aid": AID}))
    assert Lab(lab.root).aid == PERSOSIM_AID
    assert Lab(lab.root).terminal_config("POS00001").aid == PERSOSIM_AID
    (lab.root / "terminal.toml").write_text('aid = "A000000527210101"\n')
    with TerminalApp.open(lab.root, load_settings(lab.root, None, {})) as app:
        assert app.config.aid == bytes.fromhex("A000000527210101")
    with TerminalApp.open(lab.root, load_settings(lab.root, None, {"aid": AID})) as app:
        assert app.config.aid == PERSOSIM_AID  # the command line wins


def test_terminal_and_in_process_phone_agree_on_the_aid(lab: Lab) -> None:
    result = CliRunner().invoke(main, [
        "terminal", "run", "--home", str(lab.root), "--center", "local", "--aid", AID,
        "--phone", "mock:alice-phone", "--card", "mock:alice-visa", "--type", "purchase",
        "--amount", "2.00", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["response_code"] == "00"
