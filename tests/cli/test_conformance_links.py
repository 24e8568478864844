"""The whole conformance suite, as `swipepay conformance` runs it, against the phone emulator
(`swipepay phone run`) over the real stacks: ``vpcd:`` through pcscd + pyscard, and nfcpy ``udp:``.

Both ends are separate processes, as in the field; the suite ends with a full purchase, so a
pass here is also "a full transaction runs over this link" (issue 5).  The tcp: run is in
tests/cli/test_phone_cmds.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from swipepay.center.lab import Lab
from swipepay.cli.harness.pcscd import wait_slot
from swipepay.firmware_sim.conformance import CHECKS
from tests.support.pcsc import Slot

PHONE_READER = "Virtual PCD 00 01"
#: Bounds for every wait on a child process (the suite itself takes well under a second).
RUN_TIMEOUT = 60.0


#: ``swipepay ARGS`` as a foreground program: SIGINT interrupts it even when this test runs in a
#: background job, whose children inherit SIGINT ignored (and Python then keeps it ignored).
FOREGROUND = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from swipepay.cli.main import main; main()")


def swipepay(*args: str) -> list[str]:
    return [sys.executable, "-c", FOREGROUND, *args]


def run_suite(lab: Lab, phone_url: str, terminal_url: str) -> None:
    """Serve the lab phone on ``phone_url``, run every check from ``terminal_url``, stop the phone
    (SIGINT, as an operator would) and check both sides' output."""
    pin = lab.pins()["alice-visa"]
    before = lab.phone_profile("alice-phone").counter
    phone = subprocess.Popen(
        swipepay("phone", "run", "--profile", str(lab.phone_path("alice-phone")),
                 "--link", phone_url, "--auto-confirm", "--pin-env", "SWIPEPAY_TEST_PIN"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SWIPEPAY_TEST_PIN": pin},
    )
    try:
        result = subprocess.run(
            swipepay("conformance", "--link", terminal_url, "--home", str(lab.root),
                     "--card", "alice-visa", "--terminal", "POS00001", "--json",
                     "--connect-timeout", "10"),
            capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )
        phone.send_signal(signal.SIGINT)
        phone_out, phone_err = phone.communicate(timeout=10)
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.communicate()
    assert result.returncode == 0, result.stdout + result.stderr + phone_err
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert [c["name"] for c in report["checks"]] == [c.name for c in CHECKS]
    failed = [c for c in report["checks"] if not c["passed"]]
    assert not failed, failed
    transaction = report["checks"][-1]
    assert "signature verified" in transaction["detail"], transaction
    # The phone saw the whole purchase and its result, and stopped cleanly on SIGINT.
    assert "PAY Corner Coffee (POS00001) purchase 1.00 EUR -> confirm" in phone_out, phone_err
    assert "result: APPROVED 00" in phone_out
    assert "Traceback" not in phone_err
    for text in (result.stdout, result.stderr, phone_out, phone_err):
        assert pin not in text
    assert lab.phone_profile("alice-phone").counter > before


def test_whole_suite_over_vpcd_through_pcscd(lab: Lab, slot1: Slot) -> None:
    try:
        run_suite(lab, "vpcd:127.0.0.1:35964", f"pcsc:{PHONE_READER}")
    finally:
        # The phone process was the card: the slot must be empty again for the next test.
        wait_slot(PHONE_READER, False)


def test_whole_suite_over_nfcpy_udp(lab: Lab) -> None:
    if not os.environ.get("CI"):
        pytest.importorskip("nfc")  # in CI a missing nfcpy must fail, not skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nfcpy's udp: pairs the two ends by the same host:port: the phone listens (binds) on it,
    # the terminal's reader sends its polls to it.
    url = f"nfcpy:udp:127.0.0.1:{port}"
    run_suite(lab, url, url)
