"""The three programs as real processes: ``swipepay center serve`` (TLS), ``swipepay phone run``
on vpcd slot 1, ``swipepay card serve`` on vpcd slot 0, and ``swipepay terminal run`` reading
both through pcscd.  Also the nfcpy ``udp:`` phone link with a magstripe card on a pty pair.

One lab and one center process per module; the pcscd fixture (and its slot lock) is the one of
every PC/SC test (tests/support/pcsc.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from swipepay.center.lab import Lab
from swipepay.cli.harness.pcscd import Pcscd
from swipepay.cli.harness.processes import free_port, wait_for
from swipepay.cli.harness.realstack import Stack
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.terminal import Ending
from tests.support.labs import copy_lab

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def stack(
    pcscd: Pcscd, lab_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = copy_lab(lab_template, tmp_path_factory.mktemp("three")).root
    with Stack.open(root, pcsc=False) as s:
        s.start_center()
        yield s


def pin(stack: Stack, phone: str, wrong: bool = False) -> str:
    lab = Lab(stack.home)
    real = lab.pins()[lab.phones()[phone]]
    return f"{(int(real) + 1) % 10_000:04d}" if wrong else real


def amount_args(kind: str, amount: str | None, tid: str = "POS00001") -> list[str]:
    return ["--type", kind, "--terminal-id", tid, *(["--amount", amount] if amount else [])]


def test_all_types_over_pcscd(stack: Stack) -> None:
    card = stack.start_card("alice-visa", "tap")
    phone = stack.start_phone("alice-phone", pin=pin(stack, "alice-phone"))
    try:
        code, buy = stack.terminal(*amount_args("purchase", "12.34"))
        assert (code, buy["ending"], buy["response_code"]) == (0, "APPROVED", "00"), buy
        code, pre = stack.terminal(*amount_args("preauth", "80.00"))
        assert code == 0, pre
        code, bal = stack.terminal(*amount_args("balance", None, "ATM00001"))
        assert code == 0 and not any("balance" in key for key in bal), bal  # phone-only
    finally:
        stack.stop(card)
        stack.stop(phone)
    code, done = stack.terminal(*amount_args("completion", "64.50"), "--completes", pre["stan"])
    assert (code, done["ending"]) == (0, "APPROVED"), done

    card = stack.start_card("bob-debit", "insert")
    phone = stack.start_phone("bob-phone", pin=pin(stack, "bob-phone"))
    try:
        code, cash = stack.terminal(*amount_args("withdrawal", "20.00", "ATM00001"))
        assert (code, cash["response_code"]) == (0, "00"), cash
    finally:
        stack.stop(card)
        stack.stop(phone)
    card = stack.start_card("carol-qvsdc")
    phone = stack.start_phone("carol-phone", pin=pin(stack, "carol-phone"))
    try:
        code, dep = stack.terminal(*amount_args("deposit", "100.00", "ATM00001"))
        assert (code, dep["response_code"]) == (0, "00"), dep
    finally:
        stack.stop(card)
        stack.stop(phone)


def test_wrong_pin_and_wrong_phone(stack: Stack) -> None:
    card = stack.start_card("alice-visa", "tap")
    phone = stack.start_phone("alice-phone", pin=pin(stack, "alice-phone", wrong=True))
    try:
        code, out = stack.terminal(*amount_args("purchase", "5.00"))
        assert (code, out["response_code"]) == (Ending.DECLINED_BY_HOST.exit_code, "55"), out
    finally:
        stack.stop(phone)
    phone = stack.start_phone("bob-phone", pin=pin(stack, "bob-phone"))
    try:
        code, out = stack.terminal(*amount_args("purchase", "5.00"))
        assert (code, out["ending"]) == (Ending.NO_PHONE.exit_code, "NO_PHONE"), out
        assert out["apdu_count"] == 2  # SELECT, CONNECT -> 6A88; nothing else on the air
    finally:
        stack.stop(card)
        stack.stop(phone)


def test_phone_leaving_while_the_user_thinks(stack: Stack) -> None:
    card = stack.start_card("alice-visa", "tap")
    phone = stack.start_phone("alice-phone", prompt=True)  # asks on stdin: nobody answers
    try:
        term = stack.terminal_start(*amount_args("purchase", "9.99"))
        wait_for(lambda: "PAY Corner Coffee" in phone.output(), 15, "the phone to show the payment")
        stack.stop(phone)  # the phone leaves the field
        term.process.wait(30)
        code, out = stack.terminal_result(term)
        assert (code, out["ending"]) == (Ending.PHONE_GONE.exit_code, "PHONE_GONE"), out
        assert out["response_code"] is None  # the center was never asked
    finally:
        stack.stop(card)
        stack.stop(phone)


def test_center_down_ends_before_the_card_then_works(stack: Stack) -> None:
    card = stack.start_card("alice-visa", "tap")
    phone = stack.start_phone("alice-phone", pin=pin(stack, "alice-phone"))
    try:
        down = f"127.0.0.1:{free_port()}"
        code, out = stack.terminal(*amount_args("purchase", "3.00"), center=down)
        assert (code, out["ending"]) == (Ending.HOST_UNAVAILABLE.exit_code, "HOST_UNAVAILABLE")
        assert "swipepay center serve" in out["message"], out
        # nothing was asked of the card or the phone, and nothing is queued
        assert out["steps"] == [] and out["apdu_count"] == 0, out
        assert out["reversals_queued_after"] == 0, out
        code, out = stack.terminal(*amount_args("purchase", "3.00"))
        assert code == 0, out
    finally:
        stack.stop(card)
        stack.stop(phone)


# -- nfcpy udp: phone link + magstripe card on a pseudo-terminal ------------------------------


def holds_open(process: subprocess.Popen[bytes], path: str) -> bool:
    """Whether ``process`` has ``path`` open."""
    target = os.path.realpath(path)
    try:
        return any(os.readlink(fd) == target for fd in Path(f"/proc/{process.pid}/fd").iterdir())
    except OSError:  # the process ended, or closed a descriptor while we looked
        return False


def test_nfcpy_udp_phone_and_magstripe_on_a_pty(
    stack: Stack, pty_pair: tuple[str, str]
) -> None:
    if not CI:
        pytest.importorskip("nfc")
    reader_end, device_end = pty_pair
    udp = f"udp:127.0.0.1:{free_port()}"
    phone = stack.start_phone("bob-phone", pin=pin(stack, "bob-phone"), link=f"nfcpy:{udp}")
    t1, t2 = Lab(stack.home).cards()["bob-debit"].tracks()
    try:
        term = stack.terminal_start(*amount_args("withdrawal", "10.00", "ATM00001"),
                                    card=f"serial:{reader_end}?proto=raw",
                                    phone=f"nfcpy:{udp}")  # fmt: skip
        wait_for(lambda: term.process.poll() is not None or holds_open(term.process, reader_end),
                 20, "the terminal to open its serial port")  # fmt: skip

        def taken() -> bool:
            return term.process.poll() is not None or "PAY" in phone.output()

        fd = os.open(device_end, os.O_WRONLY | os.O_NOCTTY)
        try:
            # pyserial empties a port's input while it opens it: a swipe typed in that instant
            # is lost, and the cardholder swipes again.
            for _ in range(3):
                os.write(fd, f"{t1}\r\n{t2}\r\n".encode())
                with contextlib.suppress(ConfigError):
                    wait_for(taken, 10, "the terminal to take the swipe")
                if taken():
                    break
        finally:
            os.close(fd)
        term.process.wait(30)
        code, out = stack.terminal_result(term)
        assert (code, out["ending"], out["response_code"]) == (0, "APPROVED", "00"), out
    finally:
        stack.stop(phone)


def test_real_stack_demo_prints_a_clear_message_without_pcscd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    import swipepay.cli.harness.pcscd as pcscd
    from swipepay.cli.main import main

    monkeypatch.setattr(pcscd, "VPCD_DRIVER", tmp_path / "missing.so")
    result = CliRunner().invoke(main, ["demo", "--real-stack"])
    assert result.exit_code != 0
    assert "vsmartcard-vpcd is not installed" in result.output
    assert "Traceback" not in result.output
