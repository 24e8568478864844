"""The line modes as a person uses them, through pseudo-terminals (pexpect): the phone
(``phone run --line`` asking on its terminal) and the terminal (one-shot and ``--line`` console).

Each test starts real processes on 127.0.0.1: the phone on a tcp: link, the terminal with the
lab's center in-process (``--center local``) unless the test is about the center.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator

import pexpect
import pytest

from swipepay.center.lab import Lab
from swipepay.cli.harness.processes import child_env, free_port, swipepay_argv
from swipepay.firmware_sim.terminal import Ending
from tests.support.pty import spawn_swipepay

#: Generous bound for one expected line on a loaded machine (never a sleep: expect returns on
#: the first match).
LINE = 20


def spawn(*args: str) -> pexpect.spawn:
    return spawn_swipepay(*args, timeout=LINE, dimensions=(40, 200))


@pytest.fixture
def phone(lab: Lab) -> Iterator[tuple[pexpect.spawn, str]]:
    """alice's phone asking its user on a pseudo-terminal; (process, its tcp: URL)."""
    child = spawn("phone", "run", "--profile", str(lab.phone_path("alice-phone")),
                  "--link", "tcp:127.0.0.1:0", "--timeout", "30", "--line")  # fmt: skip
    try:
        child.expect(r"listening on (tcp:127\.0\.0\.1:\d+)")
        yield child, str(child.match.group(1))
    finally:
        child.terminate(force=True)


def terminal_args(lab: Lab, phone_url: str, amount: str, *extra: str) -> list[str]:
    return ["terminal", "run", "--home", str(lab.root), "--center", "local",
            "--phone", phone_url, "--card", "mock:alice-visa?via=tap",
            "--type", "purchase", "--amount", amount, *extra]  # fmt: skip


def start_terminal(lab: Lab, phone_url: str, amount: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(swipepay_argv(*terminal_args(lab, phone_url, amount, "--json",
                                                         *extra)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())  # fmt: skip


def result_of(proc: subprocess.Popen[str]) -> tuple[int, dict[str, object]]:
    out, err = proc.communicate(timeout=60)
    assert out.strip(), err
    return proc.returncode, json.loads(out)


def alice_pin(lab: Lab) -> str:
    return lab.pins()["alice-visa"]


def test_typed_ahead_input_never_answers_the_next_payment(
    lab: Lab, phone: tuple[pexpect.spawn, str]
) -> None:
    child, url = phone
    child.sendline("y")  # typed on an idle phone, even with the right PIN after it
    child.sendline(alice_pin(lab))
    child.sendline("")
    term = start_terminal(lab, url, "8.88")
    try:
        child.expect("PAY Corner Coffee")
        child.expect("Purchase 8.88 EUR")
        child.expect(re.escape("confirm this payment? [y/N]:"))
        assert term.poll() is None  # the phone shows the payment and waits
        child.sendline("n")
        code, out = result_of(term)
    finally:
        term.kill()
    assert (code, out["ending"]) == (Ending.DECLINED_BY_USER.exit_code, "DECLINED_BY_USER")
    child.expect("Declined on the phone")


def test_the_pin_is_never_echoed(lab: Lab, phone: tuple[pexpect.spawn, str]) -> None:
    child, url = phone
    pin = alice_pin(lab)
    term = start_terminal(lab, url, "2.50")
    try:
        child.expect(re.escape("confirm this payment? [y/N]:"))
        child.sendline("y")
        child.expect(re.escape("PIN (not shown):"))
        child.sendline(pin)
        child.expect("result: APPROVED 00")
        shown = child.before
        code, out = result_of(term)
    finally:
        term.kill()
    assert (code, out["ending"]) == (0, "APPROVED")
    assert pin not in shown


def test_ctrl_c_on_the_terminal_cancels_the_payment_on_the_phone(
    lab: Lab, phone: tuple[pexpect.spawn, str]
) -> None:
    child, url = phone
    term = spawn(*terminal_args(lab, url, "9.99"))
    try:
        term.expect(r"\[1\] present the card")
        term.expect(r"\[5\]")
        child.expect(re.escape("confirm this payment? [y/N]:"))
        term.sendintr()
        term.expect(r"cancelled")
        cancelled_at = time.monotonic()
        term.expect(pexpect.EOF)
        term.close()
        assert term.exitstatus == 130
        child.expect("Cancelled by the terminal", timeout=5)
        assert time.monotonic() - cancelled_at < 1.0
    finally:
        term.terminate(force=True)
    child.sendline("y")  # too late: that payment is gone
    # The next payment works at once.
    nxt = start_terminal(lab, url, "1.00")
    try:
        child.expect("PAY Corner Coffee")
        child.expect(re.escape("confirm this payment? [y/N]:"))
        child.sendline("y")
        child.expect(re.escape("PIN (not shown):"))
        child.sendline(alice_pin(lab))
        code, out = result_of(nxt)
    finally:
        nxt.kill()
    assert (code, out["ending"]) == (0, "APPROVED"), out
    child.expect("result: APPROVED 00")


def test_center_down_ends_at_once_before_the_phone(
    lab: Lab, phone: tuple[pexpect.spawn, str]
) -> None:
    _, url = phone
    down = f"127.0.0.1:{free_port()}"
    args = terminal_args(lab, url, "3.00", "--json")
    args[args.index("--center") + 1] = down
    started = time.monotonic()
    proc = subprocess.run(swipepay_argv(*args), capture_output=True, text=True, timeout=60,
                          env=child_env())  # fmt: skip
    took = time.monotonic() - started
    out = json.loads(proc.stdout)
    assert (proc.returncode, out["ending"]) == (Ending.HOST_UNAVAILABLE.exit_code,
                                                "HOST_UNAVAILABLE")  # fmt: skip
    assert f"center {down} not reachable — is `swipepay center serve` running?" in out["message"]
    assert out["apdu_count"] == 0 and out["reversals_queued_after"] == 0
    assert took < 5.0  # and the phone saw no exchange at all (apdu_count 0)


def test_amount_zero_exits_before_any_card_is_read(lab: Lab) -> None:
    term = spawn("terminal", "run", "--home", str(lab.root), "--center", "local",
                 "--card", "serial:/dev/does-not-exist", "--phone", "tcp:127.0.0.1:1",
                 "--type", "purchase", "--amount", "0")  # fmt: skip
    term.expect("the amount must be more than 0")
    term.expect(pexpect.EOF)
    term.close()
    assert term.exitstatus not in (0, None)
    assert "card" not in (term.before or "")


def test_console_ctrl_c_cancels_then_quits(lab: Lab, phone: tuple[pexpect.spawn, str]) -> None:
    child, url = phone
    term = spawn("terminal", "run", "--home", str(lab.root), "--center", "local",
                 "--phone", url, "--card", "mock:", "--line")  # fmt: skip
    try:
        term.expect(r"transaction \(number or name")
        term.sendline("1")
        term.expect("amount")
        term.sendline("0")
        term.expect("more than 0")  # a bad amount asks the amount again
        term.expect("amount")
        term.sendline("4.20")
        term.expect("card")
        term.sendline("1")
        child.expect(re.escape("confirm this payment? [y/N]:"))
        term.sendintr()  # first Ctrl-C: the transaction is cancelled, the menu comes back
        term.expect("cancelled")
        term.expect(r"transaction \(number or name")
        child.expect("Cancelled by the terminal", timeout=5)
        term.sendintr()  # second Ctrl-C: quit
        term.expect(pexpect.EOF)
        term.close()
        assert term.exitstatus == 130
    finally:
        term.terminate(force=True)
