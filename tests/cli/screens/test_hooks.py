"""The commands pick the full screen only on a terminal and without a line-mode option: the
phone screen through a real pseudo-terminal pays a one-shot terminal's purchase."""

from __future__ import annotations

import json
import re
import subprocess

import pexpect

from swipepay.center.lab import Lab
from swipepay.cli.harness.processes import child_env, swipepay_argv
from tests.support.pty import spawn_swipepay


def spawn(*args: str) -> pexpect.spawn:
    return spawn_swipepay(*args, timeout=20, dimensions=(40, 100))


def test_phone_run_on_a_terminal_is_the_phone_screen_and_pays(lab: Lab) -> None:
    phone = spawn("phone", "run", "--profile", str(lab.phone_path("alice-phone")),
                  "--link", "tcp:127.0.0.1:0", "--timeout", "30")  # fmt: skip
    try:
        phone.expect(r"tcp:127\.0\.0\.1:(\d+)")
        url = f"tcp:127.0.0.1:{phone.match.group(1)}"
        phone.expect("Hold the phone to a terminal")
        phone.send("y\r")  # typed ahead: answers nothing
        term = subprocess.Popen(
            swipepay_argv("terminal", "run", "--home", str(lab.root), "--center", "local",
                          "--phone", url, "--card", "mock:alice-visa?via=tap",
                          "--type", "purchase", "--amount", "8.88", "--json"),
            stdout=subprocess.PIPE, text=True, env=child_env(),
        )  # fmt: skip
        phone.expect("8.88 EUR")
        phone.expect("Corner Coffee|s to answer")
        phone.send("y")
        phone.expect("Enter your PIN")
        phone.send(lab.pins()["alice-visa"] + "\r")
        out, _ = term.communicate(timeout=30)
        assert json.loads(out)["ending"] == "APPROVED"
        phone.expect("Approved")
        phone.sendcontrol("c")
        phone.expect(pexpect.EOF)
        assert re.search(r"stopped \(last: Approved", phone.before or "")
    finally:
        phone.terminate(force=True)


def test_phone_run_with_line_keeps_the_prompts(lab: Lab) -> None:
    phone = spawn("phone", "run", "--profile", str(lab.phone_path("alice-phone")),
                  "--link", "tcp:127.0.0.1:0", "--line")  # fmt: skip
    try:
        phone.expect(r"listening on tcp:127\.0\.0\.1:\d+")
    finally:
        phone.terminate(force=True)


def test_terminal_run_menu_on_a_terminal_is_the_console_and_ctrl_c_quits_130(lab: Lab) -> None:
    term = spawn("terminal", "run", "--home", str(lab.root), "--center", "local",
                 "--card", "mock:", "--phone", "mock:alice-phone")  # fmt: skip
    try:
        term.expect("Corner Coffee")
        term.expect("Purchase")
        term.sendcontrol("c")
        term.expect(pexpect.EOF)
        term.close()
        assert term.exitstatus == 130
    finally:
        term.terminate(force=True)


def test_terminal_run_with_line_keeps_the_prompts(lab: Lab) -> None:
    term = spawn("terminal", "run", "--home", str(lab.root), "--center", "local",
                 "--card", "mock:", "--phone", "mock:alice-phone", "--line")  # fmt: skip
    try:
        term.expect(r"transaction \(number or name")
    finally:
        term.terminate(force=True)
