"""Faults: the center and the terminal SIGKILLed, the disk failing a commit, the phone leaving a
real (tcp:) link at each protocol step.  The loops are cli.harness.faults' (what ``swipepay bench
faults`` runs 20 times), here at a few iterations."""

from __future__ import annotations

from pathlib import Path

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.policy import MessageState
from swipepay.center.storage import MessageKey
from swipepay.cli.app.terminal_app import TerminalApp
from swipepay.cli.app.terminal_settings import TerminalSettings
from swipepay.cli.harness import faults
from swipepay.drivers.base import DriverContext
from swipepay.drivers.host_tls import TlsHost
from swipepay.drivers.registry import open_phone_link
from swipepay.firmware_sim.terminal import Ending, Order
from swipepay.firmware_sim.transaction import TxnType
from tests.support.phones import Served


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
    kills: list[int] = []
    report = faults.terminal_kill_loop(lab.root, kills=3, progress=lambda n, r: kills.append(n))
    assert report.kills == 3 and kills == [1, 2, 3] and report.finished > 0
    assert report.ok, report
    assert report.left_in_queue == 0 and report.lost == 0 and report.unbalanced == 0


def test_the_killed_terminal_is_the_terminal_command(lab: Lab) -> None:
    """The fault loop kills ``swipepay terminal run`` itself, not a copy of the terminal."""
    argv = faults.terminal_argv(lab.root, 1234)
    assert argv[argv.index("terminal"):][:2] == ["terminal", "run"] and "--json" in argv


def test_reversal_journalled_before_a_kill_is_sent_by_the_restarted_terminal(
    lab: Lab, tmp_path: Path
) -> None:
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
        assert len(faults.pending_reversals(lab.root)) == 1
        result = faults.run_terminal(lab.root, port, tmp_path)
    finally:
        faults.kill(center)
    stored = faults.stored_messages(lab.db_path)
    assert stored[MessageKey(faults.POS, "777001", faults.LOAD_AT)].state == MessageState.REVERSED
    assert faults.pending_reversals(lab.root) == set()
    # The terminal's own purchase came after the reversal (the signer saved the phone's DUKPT
    # counter it used, so the phone's next KSN is fresh: approved).
    assert result["reversals_queued_before"] == 1 and result["reversals_queued_after"] == 0
    assert result["ending"] == "APPROVED", result
    assert balance(lab, signer.account) == before - 1
    assert faults.ledger_balanced(lab.root)


def test_disk_failing_a_commit_answers_96_and_writes_nothing(lab: Lab) -> None:
    report = faults.disk_fault_check(lab.root, failures=2)
    assert (report.failed_commits, report.answered_96, report.half_written) == (2, 2, 0)
    assert report.balance_after_fault == report.balance_before
    assert report.retry_code == "00" and report.unbalanced == 0
    assert report.ok


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
    settings = TerminalSettings(terminal_id=faults.POS, center="local", phone_timeout=5.0)
    app = TerminalApp.open(lab.root, settings)
    center = app.open_center()
    try:
        order = Order(TxnType.PURCHASE, 3_00)
        report = app.run(
            order,
            reader=app.open_reader("mock:alice-visa", order),
            link=open_phone_link(served.url, DriverContext(response_timeout=5.0)),
            host=center,
            sleep=lambda s: None,
        ).report
    finally:
        center.close()
        app.close()
        served.close()
    assert faults.ledger_balanced(lab.root)
    if leave_after is None:
        assert report.outcome.ending is Ending.APPROVED
        assert balance(lab, "alice-checking") == before - 3_00
        return
    assert report.outcome.ending is Ending.PHONE_GONE, report.outcome
    assert [e.ins for e in report.exchanges][-1] == STEPS[leave_after]
    assert balance(lab, "alice-checking") == before
    if leave_after == 5:  # approved, then reversed because the result never reached the phone
        assert report.reversal == "00"
