"""A balance inquiry's balance is shown by the phone and never by the terminal: not in its
output, its ``--json`` or its logs (hardware_notes/design.md §1 step 8); a purchase's JSON has
no balance at all.  The terminal runs in this process on the lab's center core; the phone is a
``swipepay phone run`` process on ``tcp:`` (or the in-process ``mock:`` phone)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from click.testing import CliRunner, Result

from swipepay.center.lab import Lab
from swipepay.cli.main import main

#: alice-checking opens at 1500.00; after the 12.34 purchase the available balance is 1487.66.
FIGURES = re.compile(r"1[,.]?487[.,]66|(?<![0-9A-Fa-f])148766(?![0-9A-Fa-f])")


def terminal(lab: Lab, phone: str, *args: str) -> Result:
    return CliRunner().invoke(main, [
        "--log-level", "debug", "terminal", "run", "--home", str(lab.root), "--center", "local",
        "--phone", phone, "--card", "mock:alice-visa?via=tap", *args,
    ])  # fmt: skip


def buy(lab: Lab) -> dict[str, Any]:
    result = terminal(lab, "mock:alice-phone", "--type", "purchase", "--amount", "12.34", "--json")
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def balance_keys(value: Any) -> list[str]:
    """Every key, at any depth, that names a balance."""
    if isinstance(value, dict):
        return [k for k in value if "balance" in k] + [
            k for v in value.values() for k in balance_keys(v)
        ]
    if isinstance(value, list):
        return [k for v in value for k in balance_keys(v)]
    return []


def test_purchase_json_carries_no_balance(lab: Lab) -> None:
    out = buy(lab)
    assert out["ending"] == "APPROVED"
    assert balance_keys(out) == []


def test_terminal_output_json_and_logs_never_hold_the_balance(lab: Lab) -> None:
    buy(lab)
    inquiry = ("--terminal-id", "ATM00001", "--type", "balance")
    as_json = terminal(lab, "mock:alice-phone", *inquiry, "--json")
    assert as_json.exit_code == 0, as_json.output
    out = json.loads(as_json.stdout)
    assert (out["ending"], out["response_code"]) == ("APPROVED", "00")
    assert balance_keys(out) == []
    assert 148766 not in _values(out)
    as_text = terminal(lab, "mock:alice-phone", *inquiry)
    assert as_text.exit_code == 0, as_text.output
    assert "balance shown on the phone" in as_text.stdout
    for result in (as_json, as_text):
        assert FIGURES.search(result.stdout) is None, result.stdout
        assert FIGURES.search(result.stderr) is None, result.stderr


def _values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _values(v)]
    if isinstance(value, list):
        return [x for v in value for x in _values(v)]
    return [value]


def test_the_phone_shows_the_balance_the_terminal_relayed(lab: Lab) -> None:
    buy(lab)
    env = {**os.environ, "SWIPEPAY_TEST_PIN": lab.pins()["alice-visa"]}
    phone = subprocess.Popen(
        [sys.executable, "-c", "from swipepay.cli.main import main; main()",
         "phone", "run", "--profile", str(lab.phone_path("alice-phone")),
         "--link", "tcp:127.0.0.1:0", "--once", "--auto-confirm", "--pin-env", "SWIPEPAY_TEST_PIN"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert phone.stdout is not None
        first = phone.stdout.readline()  # bounded: the phone prints its address or exits
        url = re.search(r"listening on (tcp:127\.0\.0\.1:\d+)", first)
        assert url is not None, first
        result = terminal(lab, url.group(1), "--terminal-id", "ATM00001", "--type", "balance")
        assert result.exit_code == 0, result.output
        assert FIGURES.search(result.output) is None, result.output
        out, _ = phone.communicate(timeout=20)
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.communicate()
    assert "result: APPROVED 00" in out and "balance 1487.66 EUR" in out, out
