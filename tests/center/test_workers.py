"""``center serve --workers N``: real worker processes on one port, on a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from swipepay.center.core import Center
from swipepay.center.lab import Lab, create_lab
from swipepay.center.workers import WorkerSettings, check_storage, reserve_port
from swipepay.cli.harness.faults import POS, LabSigner, ledger_balanced
from swipepay.cli.harness.processes import (
    free_port,
    listening_pids,
    serving_pids,
    start_center,
    stop,
    wait_for,
)
from swipepay.cli.main import main
from swipepay.drivers.host_tls import TlsHost
from swipepay.firmware_sim.errors import ConfigError

STAN_AT = "1201120000"


@pytest.fixture
def pg_home(tmp_path: Path, pg_url: str) -> Path:
    return create_lab(tmp_path / "lab", database=pg_url).root


def _workers(port: int, supervisor: int) -> set[int]:
    return listening_pids(port) - {supervisor}


def test_sqlite_refuses_more_than_one_worker(tmp_path: Path) -> None:
    home = create_lab(tmp_path / "lab").root
    result = CliRunner().invoke(
        main, ["center", "serve", "--home", str(home), "--workers", "2", "--listen",
               "127.0.0.1:0"],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "--workers 2 needs PostgreSQL" in result.output
    assert "Traceback" not in result.output


def test_check_storage_accepts_one_worker_on_sqlite(tmp_path: Path) -> None:
    check_storage(str(tmp_path / "center.db"), 1)
    with pytest.raises(ConfigError, match="one writer"):
        check_storage(str(tmp_path / "center.db"), 3)


def test_worker_settings_reject_bad_json() -> None:
    with pytest.raises(ConfigError, match="bad worker settings"):
        WorkerSettings.from_json(b'{"home": 1}')
    with pytest.raises(ConfigError, match="bad worker settings"):
        WorkerSettings.from_json(b"not json")


def test_reserved_port_takes_no_connections() -> None:
    """The supervisor's socket holds the port but never listens: nothing connects to it."""
    import socket

    with reserve_port("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_two_workers_listen_and_stop_with_the_supervisor(pg_home: Path) -> None:
    port = free_port()
    proc = start_center(pg_home, port, "--workers", "2")
    try:
        workers = _workers(port, proc.pid)
        assert len(workers) == 2
        for pid in workers:  # children of the supervisor, each a process of its own
            assert Path(f"/proc/{pid}/stat").read_text().split()[3] == str(proc.pid)
    finally:
        stop(proc)
    assert proc.returncode == 0
    wait_for(lambda: not listening_pids(port), 10, "the workers to exit")
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()


def test_workers_exit_when_the_supervisor_is_killed(pg_home: Path) -> None:
    port = free_port()
    proc = start_center(pg_home, port, "--workers", "2")
    workers = _workers(port, proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # PR_SET_PDEATHSIG: each worker gets SIGTERM when its parent is gone.
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), 15,
             "the orphaned workers to exit")  # fmt: skip
    assert not listening_pids(port)


def test_a_killed_worker_is_started_again(pg_home: Path) -> None:
    port = free_port()
    proc = start_center(pg_home, port, "--workers", "2")
    try:
        victim = min(_workers(port, proc.pid))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(_workers(port, proc.pid) - {victim}) == 2, 30,
                 "a new worker")  # fmt: skip
        assert proc.poll() is None
    finally:
        stop(proc)


def test_a_retransmission_to_another_worker_gets_the_same_answer(pg_home: Path) -> None:
    """Exactly-once across processes: the request is answered by one worker, its copy sent on
    a new connection that the kernel gives to the other worker gets the stored answer, and the
    account is debited once."""
    lab = Lab(pg_home)
    signer = LabSigner(lab, "alice-phone")
    with Center.open(lab.database_url, lab.center_keys()) as center:
        opening = center.ledger_balance(signer.account)
    req = signer.request("000123", amount=250)
    port = free_port()
    proc = start_center(pg_home, port, "--workers", "2")
    try:
        first = TlsHost.for_lab(pg_home, POS, "127.0.0.1", port, connect_timeout=2)
        answer = first.authorize(req, 15)
        assert answer.response_code == "00"
        (served_by,) = serving_pids(port)
        first.settle(req.txn)
        first.close()
        wait_for(lambda: not serving_pids(port), 10, "the first connection to close")
        for _ in range(64):  # SO_REUSEPORT hashes each new connection: soon the other worker
            second = TlsHost.for_lab(pg_home, POS, "127.0.0.1", port, connect_timeout=2)
            second.echo(POS, "000124", STAN_AT, 15)
            (worker,) = serving_pids(port)
            if worker != served_by:
                break
            second.close()
            wait_for(lambda: not serving_pids(port), 10, "the connection to close")
        else:
            pytest.fail("64 connections all went to one worker")
        again = second.authorize(req, 15)
        second.settle(req.txn)
        second.close()
    finally:
        stop(proc)
    assert (again.response_code, again.auth_code) == (answer.response_code, answer.auth_code)
    with Center.open(lab.database_url, lab.center_keys()) as center:
        assert center.ledger_balance(signer.account) == opening - 250
    assert ledger_balanced(pg_home)


def test_worker_error_before_listening_is_reported(pg_home: Path) -> None:
    """A port another program already listens on: every worker fails, the supervisor says so
    and exits 3 (no restart loop)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable, "-m", "swipepay", "center", "serve", "--home", str(pg_home),
                "--listen", f"127.0.0.1:{port}", "--workers", "2",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    assert "cannot listen" in run.stderr
