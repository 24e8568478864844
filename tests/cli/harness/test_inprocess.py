"""Whole transactions in one process on the lab's real SQLite ledger, through the runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swipepay.center.lab import Lab
from swipepay.cli.harness.inprocess import InProcessBench, PhoneSetup
from swipepay.drivers.runner import TxnReport
from swipepay.firmware_sim.phone import Choice
from swipepay.firmware_sim.terminal import Ending, Order
from swipepay.firmware_sim.transaction import TxnType


@pytest.fixture
def bench(lab: Lab) -> Iterator[InProcessBench]:
    with InProcessBench.open(lab.root) as b:
        yield b


def purchase(
    bench: InProcessBench, amount: int, phone: PhoneSetup | None, card: str = "alice-visa"
) -> TxnReport:
    order = Order(TxnType.PURCHASE, amount)
    return bench.run("POS00001", order, card_url=f"mock:{card}", phone=phone)


def test_purchase_moves_money_once_and_ledger_balances(bench: InProcessBench) -> None:
    before = bench.center.available_balance("alice-checking")
    report = purchase(bench, 3_21, PhoneSetup("alice-phone", delay_polls=2))
    assert report.outcome.ending is Ending.APPROVED
    assert report.outcome.polls == 3
    assert bench.center.available_balance("alice-checking") == before - 3_21
    assert bench.center.check_balanced()


def test_dukpt_counter_is_persisted_in_the_phone_profile(bench: InProcessBench) -> None:
    before = bench.lab.phone_profile("alice-phone").counter
    purchase(bench, 1_00, PhoneSetup("alice-phone"))
    assert bench.lab.phone_profile("alice-phone").counter > before


@pytest.mark.parametrize("exchanges", [0, 1, 2, 3, 4])
def test_phone_leaving_before_the_host_moves_no_money(
    bench: InProcessBench, exchanges: int
) -> None:
    before = bench.center.available_balance("alice-checking")
    report = purchase(bench, 2_00, PhoneSetup("alice-phone", leave_after=exchanges))
    # gone before it answered anything: there was no phone
    assert report.outcome.ending is (Ending.NO_PHONE if exchanges == 0 else Ending.PHONE_GONE)
    assert bench.center.available_balance("alice-checking") == before


def test_phone_leaving_before_the_result_reverses_the_approval(bench: InProcessBench) -> None:
    before = bench.center.available_balance("alice-checking")
    report = purchase(bench, 2_50, PhoneSetup("alice-phone", leave_after=5))
    assert report.outcome.ending is Ending.PHONE_GONE
    assert report.reversal == "00"
    assert bench.center.available_balance("alice-checking") == before
    assert bench.center.check_balanced()


def test_decline_and_wrong_phone_never_reach_the_center(bench: InProcessBench) -> None:
    before = bench.center.available_balance("alice-checking")
    declined = purchase(bench, 1_00, PhoneSetup("alice-phone", Choice.DECLINE))
    assert declined.outcome.ending is Ending.DECLINED_BY_USER
    silent = purchase(bench, 1_00, PhoneSetup("bob-phone"))
    assert silent.outcome.ending is Ending.NO_PHONE
    assert silent.apdu_count == 2
    nobody = purchase(bench, 1_00, None)
    assert nobody.outcome.ending is Ending.NO_PHONE
    assert bench.center.available_balance("alice-checking") == before


def test_bad_swipe_ends_as_card_error(bench: InProcessBench) -> None:
    report = purchase(bench, 1_00, PhoneSetup("alice-phone"), card="garbage")
    assert report.outcome.ending is Ending.CARD_ERROR
    assert "swipe" in report.outcome.message.lower()
