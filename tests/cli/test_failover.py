"""``swipepay terminal run`` with several centers (``--center A,B`` or a terminal.toml list):
the first that answers serves, the user is told which one and what was skipped; a request
left unanswered is retransmitted to the next center; and two real centers on one PostgreSQL
database, the first SIGKILLed under load, lose and double nothing."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.cli.app.terminal_app import TerminalApp
from swipepay.cli.app.terminal_settings import TerminalSettings, load_settings
from swipepay.cli.harness.processes import (
    child_env,
    free_port,
    kill,
    start_center,
    stop,
    swipepay_argv,
)
from swipepay.cli.main import main
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.terminal import Ending
from tests.support.lab_center import ServerThread
from tests.support.silent_center import SilentCenter

PAY = ("--phone", "mock:alice-phone", "--card", "mock:alice-visa?via=tap", "--type", "purchase")


def run(lab: Lab, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(main, ["terminal", "run", "--home", str(lab.root), *args])
    out: Any = result.output
    if "--json" in args and result.exit_code in {e.exit_code for e in Ending}:
        out = json.loads(result.stdout)
    return result.exit_code, out


def test_the_second_center_serves_when_the_first_refuses(server: ServerThread) -> None:
    down, up = f"127.0.0.1:{free_port()}", f"127.0.0.1:{server.port}"
    code, out = run(server.lab, "--center", f"{down},{up}", *PAY, "--amount", "5", "--json")
    assert (code, out["ending"]) == (0, "APPROVED"), out
    assert out["center"] == up
    assert out["centers_skipped"] == [f"{down} refused the connection"]
    code, text = run(server.lab, "--center", f"{down}, {up}", *PAY, "--amount", "1")
    assert code == 0, text
    assert (f"center {up} answered; skipped {down} refused the connection — check that "
            "center") in text  # fmt: skip


def test_a_silent_first_center_is_skipped_within_the_host_timeout(
    server: ServerThread, silent: SilentCenter
) -> None:
    quiet, up = f"127.0.0.1:{silent.port}", f"127.0.0.1:{server.port}"
    code, out = run(server.lab, "--center", f"{quiet},{up}", "--host-timeout", "4", *PAY,
                    "--amount", "2", "--json")  # fmt: skip
    assert (code, out["ending"]) == (0, "APPROVED"), out
    assert (out["center"], out["centers_skipped"]) == (up, [f"{quiet} did not answer in time"])


def test_every_center_down_ends_the_run_naming_each(lab: Lab) -> None:
    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    code, out = run(lab, "--center", f"{first},{second}", *PAY, "--amount", "2", "--json")
    assert (code, out["ending"]) == (Ending.HOST_UNAVAILABLE.exit_code, "HOST_UNAVAILABLE")
    assert out["message"].startswith(
        f"no center reachable ({first} refused the connection; {second} refused the connection)"
        " — is `swipepay center serve` running at one of them"
    )
    assert out["apdu_count"] == 0 and out["reversals_queued_after"] == 0


def test_terminal_toml_takes_a_list_of_centers(server: ServerThread) -> None:
    lab = server.lab
    down, up = f"127.0.0.1:{free_port()}", f"127.0.0.1:{server.port}"
    (lab.root / "terminal.toml").write_text(f'center = ["{down}", "{up}"]\n')
    assert load_settings(lab.root, None, {}).center == f"{down},{up}"
    code, out = run(lab, *PAY, "--amount", "3", "--json")
    assert (code, out["center"]) == (0, up), out


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("center = []", "center must be a string or a list of strings"),
        ("center = [8583]", "center must be a string or a list of strings"),
        ('center = ["local", "127.0.0.1:8583"]', "'local' cannot be combined"),
        ('center = "127.0.0.1:8583,"', "an empty address"),
        ('center = "127.0.0.1"', "--center must be HOST:PORT or 'local'"),
    ],
)
def test_bad_center_lists_are_one_line_errors(lab: Lab, toml: str, message: str) -> None:
    (lab.root / "terminal.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(lab.root, None, {})


# -- two real centers on one PostgreSQL database -------------------------------------------------

#: Purchases the load makes, and after how many approvals center 1 is killed.
LOAD, KILL_AFTER = 40, 10


def test_two_centers_on_one_postgres_first_killed_mid_load(pg_url: str, tmp_path: Path) -> None:
    """The terminal keeps paying through center 2 after center 1 is SIGKILLed at a random point
    of a transaction; every approval is in the database once and the ledger balances."""
    home = tmp_path / "lab"
    done = subprocess.run(swipepay_argv("init", str(home), "--db", pg_url), env=child_env(),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    ports = [free_port(), free_port()]
    centers = [start_center(home, port, "--db", pg_url) for port in ports]
    approved: list[int] = []
    try:
        settings = TerminalSettings(
            center=",".join(f"127.0.0.1:{p}" for p in ports),
            phone="mock:alice-phone",
            host_timeout=10.0,
        )
        killed = threading.Event()

        def killer() -> None:
            while len(approved) < KILL_AFTER:
                if killed.wait(0.005):
                    return
            kill(centers[0])  # mid-load: whatever the terminal is doing right now
            killed.set()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        answered_by: set[str | None] = set()
        with TerminalApp.open(home, settings) as app:
            host = app.open_center()
            try:
                for n in range(LOAD):
                    order = app.order("purchase", f"{n % 7 + 1}.00", None)
                    reader = app.open_reader("mock:alice-visa?via=tap", order)
                    result = app.run(order, reader=reader, link=app.open_phone_link(),
                                     host=host, sleep=lambda s: None)  # fmt: skip
                    assert result.outcome.ending is Ending.APPROVED, result.outcome
                    approved.append(order.amount)
                    answered_by.add(result.center)
            finally:
                host.close()
        thread.join(10)
        assert killed.is_set()
        assert answered_by == {f"127.0.0.1:{p}" for p in ports}
    finally:
        for proc in centers:
            stop(proc)
    lab = Lab(home)
    account = lab.card_account("alice-visa")
    with Center.open(pg_url, lab.center_keys()) as center:
        assert center.check_balanced()
        assert center.ledger_balance(account) == 1_500_00 - sum(approved)
    report = subprocess.run(
        swipepay_argv("center", "report", "--home", str(home), "--db", pg_url, "--format",
                      "json"),
        env=child_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr  # the report reconciles with the ledger
