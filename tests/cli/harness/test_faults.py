"""Faults: the center and the terminal SIGKILLed, the disk failing a commit, the phone leaving a
real (tcp:) link at each protocol step.  The loops are cli.harness.faults' (what ``swipepay bench
faults`` runs 20 times), here at a few iterations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.local_host import LocalHost
from swipepay.center.policy import MessageState
from swipepay.center.storage import MessageKey
from swipepay.cli.harness import faults
from swipepay.drivers.base import DriverContext
from swipepay.drivers.host_tls import ReversalQueue, TlsHost
from swipepay.drivers.registry import open_card_reader, open_phone_link
from swipepay.drivers.runner import run_transaction
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.terminal import Ending, Order, Terminal
from swipepay.firmware_sim.transaction import TxnType
from tests.support.phones import Served

ROOT = Path(__file__).resolve().parents[3]


def balance(lab: Lab, account: str) -> int:
    with Center.open(lab.db_path, lab.center_keys()) as center:
        return center.ledger_balance(account)


def test_center_sigkilled_under_load_keeps_every_approval_once(lab: Lab) -> None:
    alice, carol = balance(lab, "alice-checking"), balance(lab, "carol-checking")
    seen: list[int] = []
    report = faults.center_kill_loop(
        lab.root, kills=3, per_round=8, progress=lambda n, r: seen.append(r.requests)
    )
    assert report.kills == 3 and seen == [16, 32, 48]  # checked after every kill
    assert report.ok, report
    assert report.codes == {"00": 48} and report.approvals_stored == 48
    # each approval moved one minor unit, exactly once
    assert balance(lab, "alice-checking") == alice - 24
    assert balance(lab, "carol-checking") == carol - 24


def test_terminal_sigkilled_mid_transaction_ends_consistent(lab: Lab) -> None:
    report = faults.terminal_kill_loop(lab.root, kills=3, window=(0.5, 1.2))
    assert report.kills == 3 and report.finished > 0
    assert report.ok, report
    assert report.left_in_queue == 0 and report.lost == 0 and report.unbalanced == 0


def test_reversal_journalled_before_a_kill_is_sent_by_the_restarted_terminal(lab: Lab) -> None:
    """The terminal died right after the center approved (the journal entry still queued): the
    restarted terminal reverses that approval before doing anything else."""
    port = faults.free_port()
    center = faults.start_center(lab.root, port)
    try:
        signer = faults.LabSigner(lab, "alice-phone")
        req = signer.request("777001", amount=5_00)
        host = TlsHost.for_lab(lab.root, faults.POS, "127.0.0.1", port, connect_timeout=2)
        before = balance(lab, signer.account)
        assert host.authorize(req, 10).response_code == "00"
        host.close()  # killed here: never settled
        assert balance(lab, signer.account) == before - 5_00
        log = lab.root / "worker.jsonl"
        worker = subprocess.run(
            [sys.executable, "-m", "swipepay.cli.harness.faults", "terminal", str(lab.root),
             str(port),
             "1",
             str(log)],
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert worker.returncode == 0
    finally:
        faults.kill(center)
    stored = faults.stored_messages(lab.db_path)
    assert stored[MessageKey(faults.POS, "777001", faults.LOAD_AT)].state == MessageState.REVERSED
    queue = ReversalQueue(lab.root / "terminals" / faults.POS / "reversals.db")
    try:
        assert queue.pending() == []
    finally:
        queue.close()
    # The worker's own purchase came after the reversal (declined 63 here: the signer above
    # spent the phone's next KSN without saving it).
    lines = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    assert balance(lab, signer.account) == before - (1 if lines[0]["approved"] else 0)
    assert faults.ledger_balanced(lab.root)


def test_disk_failing_a_commit_answers_96_and_writes_nothing(lab: Lab) -> None:
    report = faults.disk_fault_check(lab.root, failures=2)
    assert (report.failed_commits, report.answered_96, report.half_written) == (2, 2, 0)
    assert report.balance_after_fault == report.balance_before
    assert report.retry_code == "00" and report.unbalanced == 0
    assert report.ok


def test_worker_usage_error_is_exit_2() -> None:
    assert faults._main(["nonsense"]) == 2


# -- the phone leaving a real link at each step ------------------------------------------------

#: The phone answers this many commands, then leaves the field (tcp: session closed):
#: 1 after SELECT, 2 after CONNECT, 3 after AUTHENTICATE, 4 after PAYMENT REQUEST, 5 after
#: GET CONFIRMATION (approved by the center, RESULT undeliverable), None: stays.
STEPS = {1: "SELECT", 2: "CONNECT", 3: "AUTHENTICATE", 4: "PAYMENT_REQUEST", 5: "GET_CONFIRMATION"}


@pytest.mark.parametrize("leave_after", [*STEPS, None])
def test_phone_leaving_a_tcp_link_at_each_step_moves_no_money(
    lab: Lab, leave_after: int | None
) -> None:
    before = balance(lab, "alice-checking")
    served = Served(lab, leave_after=leave_after, once=leave_after is not None)
    cert, key = lab.terminal_link_identity(faults.POS)
    terminal = Terminal(lab.terminal_config(faults.POS), TerminalLink(cert, key), 1)
    reader = open_card_reader("mock:alice-visa", DriverContext(cards=lab.cards()))
    center = Center.open(lab.db_path, lab.center_keys())
    try:
        report = run_transaction(
            terminal,
            Order(TxnType.PURCHASE, 3_00),
            reader=reader,
            link=open_phone_link(served.url, DriverContext(response_timeout=5.0)),
            host=LocalHost(center),
            sleep=lambda s: None,
            phone_timeout=5.0,
        )
        assert center.check_balanced()
    finally:
        center.close()
        served.close()
    if leave_after is None:
        assert report.outcome.ending is Ending.APPROVED
        assert balance(lab, "alice-checking") == before - 3_00
        return
    assert report.outcome.ending is Ending.PHONE_GONE, report.outcome
    assert [e.ins for e in report.exchanges][-1] == STEPS[leave_after]
    assert balance(lab, "alice-checking") == before
    if leave_after == 5:  # approved, then reversed because the result never reached the phone
        assert report.reversal == "00"
