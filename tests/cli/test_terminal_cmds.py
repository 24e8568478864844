"""``swipepay terminal run`` in one process: mock card reader, mock phone, the lab's center core.

The three-process versions of these flows are in test_three_processes.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.center.lab import Lab
from swipepay.cli.app.terminal_settings import load_settings
from swipepay.cli.main import main
from swipepay.cli.terminal_cmds import card_from_text, resolve_card_choice
from swipepay.drivers.logsetup import redact, setup_logging, transaction
from swipepay.firmware_sim.errors import ConfigError, SwipepayError
from swipepay.firmware_sim.terminal import Ending


def run(lab: Lab, *args: str, input: str | None = None) -> tuple[int, Any]:
    result = CliRunner().invoke(
        main, ["terminal", "run", "--home", str(lab.root), "--center", "local", *args], input=input
    )
    out: Any = result.output
    if "--json" in args and result.exit_code in {e.exit_code for e in Ending}:
        out = json.loads(result.stdout)
    return result.exit_code, out


def test_one_shot_purchase_is_approved_with_json(lab: Lab) -> None:
    code, out = run(lab, "--phone", "mock:alice-phone", "--card", "mock:alice-visa?via=tap",
                    "--type", "purchase", "--amount", "12.34", "--json")  # fmt: skip
    assert code == 0
    assert out["ending"] == "APPROVED" and out["response_code"] == "00"
    assert out["txn_id"] == f"POS00001-{out['stan']}"
    assert [s["step"] for s in out["steps"]] == list(range(1, 9))


def test_preauth_then_completion_of_it(lab: Lab) -> None:
    code, pre = run(lab, "--phone", "mock:alice-phone", "--card", "mock:alice-visa?via=insert",
                    "--type", "preauth", "--amount", "80", "--json")  # fmt: skip
    assert code == 0
    code, done = run(lab, "--phone", "mock:", "--type", "completion", "--amount", "64.50",
                     "--completes", pre["stan"], "--json")  # fmt: skip
    assert (code, done["ending"]) == (0, "APPROVED")
    code, again = run(lab, "--phone", "mock:", "--type", "completion", "--amount", "1")
    assert code == ConfigError("").exit_code and "no approved pre-authorization" in again


@pytest.mark.parametrize(
    ("phone", "card", "amount", "ending"),
    [
        ("mock:bob-phone", "mock:alice-visa?via=tap", "5", Ending.NO_PHONE),
        ("mock:bob-phone", "mock:bob-debit?via=insert", "500", Ending.DECLINED_BY_HOST),
        ("mock:carol-phone?decline", "mock:carol-qvsdc", "7.50", Ending.DECLINED_BY_USER),
        ("mock:alice-phone", "mock:none", "5", Ending.CARD_ERROR),
    ],
)
def test_decline_classes_have_their_exit_codes(
    lab: Lab, phone: str, card: str, amount: str, ending: Ending
) -> None:
    code, out = run(lab, "--phone", phone, "--card", card, "--card-timeout", "0.1",
                    "--type", "purchase", "--amount", amount, "--json")  # fmt: skip
    assert (code, out["ending"]) == (ending.exit_code, ending.name)


def test_help_documents_every_exit_code() -> None:
    text = CliRunner().invoke(main, ["terminal", "run", "--help"]).output
    for ending in Ending:
        assert re.search(rf"\b{ending.exit_code}\s+{ending.name}\b", text), ending


def test_card_data_accepts_tracks_and_a_lab_pan(lab: Lab) -> None:
    spec = lab.cards()["bob-debit"]
    t1, t2 = spec.tracks()
    for data in (t1 + t2, spec.pan):
        code, out = run(lab, "--phone", "mock:bob-phone", "--card-data", data,
                        "--type", "withdrawal", "--amount", "20", "--terminal-id", "ATM00001",
                        "--json")  # fmt: skip
        assert (code, out["ending"]) == (0, "APPROVED")


def test_interactive_console_offers_lab_cards(lab: Lab) -> None:
    # an ATM offers withdrawal, deposit, balance: balance inquiry (3) with card 2 (alice-visa
    # by insert), then quit
    code, out = run(lab, "--phone", "mock:alice-phone", "--card", "mock:",
                    "--terminal-id", "ATM00001", input="3\n2\nq\n")  # fmt: skip
    assert code == 0, out
    assert "Purchase" not in out  # the center refuses it from an ATM: not offered
    assert "insert alice-visa" in out and "[8] forwarding the result to the phone" in out
    assert "APPROVED 00" in out and "balance shown on the phone" in out


def test_settings_file_is_overridden_by_options(lab: Lab) -> None:
    (lab.root / "terminal.toml").write_text(
        'terminal_id = "ATM00001"\nphone = "mock:bob-phone"\nhost_timeout = 2\n'
    )
    s = load_settings(lab.root, None, {"phone": "mock:alice-phone", "card": None})
    assert (s.terminal_id, s.phone, s.host_timeout) == (
        "ATM00001", "mock:alice-phone", 2.0,
    )  # fmt: skip
    (lab.root / "terminal.toml").write_text("pin = 1234\n")
    with pytest.raises(ConfigError, match="unknown key 'pin'"):
        load_settings(lab.root, None, {})
    (lab.root / "terminal.toml").write_text("terminal_id = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(lab.root, None, {})


@pytest.mark.parametrize("wait", ["inf", "nan", "0", "-5", "1e9"])
def test_a_wait_that_is_no_wait_is_a_one_line_error(lab: Lab, wait: str) -> None:
    code, out = run(lab, "--type", "balance", "--phone", "mock:alice-phone",
                    "--host-timeout", wait)  # fmt: skip
    # Before: inf ended in an OverflowError traceback (seconds to milliseconds), the others
    # ran with a wait of no time or for ever.  The option is refused as it is parsed; the
    # same rule for terminal.toml is the test below.
    assert code == 2 and "Invalid value for '--host-timeout'" in out, out
    assert "Traceback" not in out


def test_settings_file_numbers_out_of_range_and_no_file(lab: Lab, tmp_path: Path) -> None:
    for line, key in [("card_timeout = inf", "card_timeout"),
                      ("poll_interval_ms = 0", "poll_interval_ms"),
                      ("confirm_timeout = -1.5", "confirm_timeout")]:  # fmt: skip
        (lab.root / "terminal.toml").write_text(line + "\n")
        with pytest.raises(ConfigError, match=f"^{key}( \\(--[a-z-]+\\))? must be above 0"):
            load_settings(lab.root, None, {})
    fifo = tmp_path / "settings.toml"
    os.mkfifo(fifo)  # before: the run waited for a writer for ever
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(lab.root, fifo, {})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('merchant_id = "MERCH00000000012345"', "merchant_id must be 1 to 15 printable ASCII"),
        ('merchant_id = "MÉRCH0000000001"', "merchant_id must be 1 to 15 printable ASCII"),
        ('terminal_id = "POS1"', "terminal_id must be 8 printable ASCII"),
    ],
)
def test_ids_the_request_cannot_carry_are_refused_before_anything_runs(
    lab: Lab, line: str, message: str
) -> None:
    # Before: the card was read and the user typed the PIN on the phone, then the request
    # failed to encode ("Field data is 19 bytes, expecting 15: field 42").
    (lab.root / "terminal.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(lab.root, None, {})


def test_bad_inputs_are_one_line_errors(lab: Lab) -> None:
    code, out = run(lab, "--type", "purchase", "--amount", "12,34", "--phone", "mock:")
    assert code != 0 and "use a point" in out and "Traceback" not in out
    code, out = run(lab, "--type", "purchase", "--amount", "1", "--phone", "mock:",
                    "--card-data", "%B garbage")  # fmt: skip
    assert code != 0 and "Traceback" not in out
    code, out = run(lab, "--json")
    assert code == ConfigError("").exit_code and "--json needs --type" in out


def test_resolve_card_choice(lab: Lab) -> None:
    cards = lab.cards()
    assert resolve_card_choice("1", cards)[0] == "mock:alice-visa?via=tap"
    assert resolve_card_choice("bob-debit swipe", cards)[0] == "mock:bob-debit?via=swipe"
    with pytest.raises(ConfigError):
        resolve_card_choice("carol-qvsdc swipe", cards)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_pasted_card_text_never_crashes(text: str) -> None:
    with contextlib.suppress(SwipepayError):
        card_from_text(text, {})


def test_log_lines_carry_txn_id_and_no_pan() -> None:
    stream = io.StringIO()
    setup_logging(json_lines=True, level="info", stream=stream)
    try:
        with transaction("POS00001-000042"):
            logging.getLogger("swipepay.test").info("read ;4761739001010119=28122011?")
        line = json.loads(stream.getvalue().splitlines()[-1])
    finally:
        setup_logging()
    assert line["txn"] == "POS00001-000042"
    assert "4761739001010119" not in line["msg"] and "476173******0119" in line["msg"]
    assert redact("PAN 5413330000000019 ok") == "PAN 541333******0019 ok"


@pytest.mark.parametrize(
    ("amount", "says"),
    [
        ("0", "more than 0"),
        ("-5", "must be positive"),
        ("1.234", "at most two decimals"),
        ("12,34", "use a point"),
        ("99999999999", "too large"),
        ("abc", "not an amount"),
    ],
)
def test_bad_amounts_are_refused_before_anything_is_opened(
    lab: Lab, amount: str, says: str
) -> None:
    # no phone link, no center, no card exists here: a refusal must come first
    code, out = run(lab, "--phone", "tcp:127.0.0.1:1", "--center", "127.0.0.1:1",
                    "--type", "purchase", "--amount", amount)  # fmt: skip
    assert code != 0 and says in out and "Traceback" not in out, out


def test_console_asks_the_amount_again(lab: Lab) -> None:
    code, out = run(lab, "--phone", "mock:alice-phone", "--card", "mock:",
                    input="1\n0\n1,5\n1.50\n1\nq\n")  # fmt: skip
    assert code == 0, out
    assert "more than 0" in out and "use a point" in out
    assert "APPROVED 00" in out


def test_host_decline_says_the_reason_in_full(lab: Lab) -> None:
    code, out = run(lab, "--phone", "mock:alice-phone", "--card", "mock:alice-visa?via=tap",
                    "--type", "balance")  # a POS may not ask for a balance: 58
    assert code == Ending.DECLINED_BY_HOST.exit_code, out
    assert "transaction not permitted to terminal" in out
    assert "present the card" in out
