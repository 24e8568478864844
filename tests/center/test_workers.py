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


# -- metrics: scraped while terminals pay --------------------------------------------------------


def _scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _approved(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    key = ("swipepay_center_requests_total", frozenset({("kind", "purchase"), ("code", "00")}))
    return samples.get(key, 0.0)


def _scrape_during_load(home: Path, port: int, metrics_port: int, workers: int) -> None:
    """Two terminals pay until the scrape has seen 10 approvals; the final scrape counts
    exactly the approvals they got, and the gauges show live connections and verifiers."""
    import threading

    lab = Lab(home)
    signers = [LabSigner(lab, "alice-phone"), LabSigner(lab, "bob-phone")]
    stop_load = threading.Event()
    approved: list[int] = [0, 0]
    connected = threading.Barrier(3)

    def load(n: int) -> None:
        host = TlsHost.for_lab(home, POS, "127.0.0.1", port, connect_timeout=2)
        try:
            host.echo(POS, f"{900_000 + n:06d}", STAN_AT, 15)
            connected.wait(30)
            stan = 100_000 + n * 10_000
            while not stop_load.is_set():
                stan += 1
                req = signers[n].request(f"{stan:06d}")
                if host.authorize(req, 15).approved:
                    host.settle(req.txn)
                    approved[n] += 1
        finally:
            host.close()

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    try:
        connected.wait(30)
        wait_for(lambda: _approved(_samples(_scrape(metrics_port)[1])) >= 10, 60,
                 "10 approvals in the metrics")  # fmt: skip
        during = _samples(_scrape(metrics_port)[1])  # the load is still running
        assert during[("swipepay_center_open_connections", frozenset())] == 2
        assert during[("swipepay_center_verifier_up", frozenset())] == workers
        assert during[("swipepay_center_batch_size_count", frozenset())] >= 1
        assert during[("swipepay_center_commit_seconds_count", frozenset())] >= 1
        assert during[("swipepay_center_request_seconds_count", frozenset())] >= 10
        status, health = _scrape(metrics_port, "/healthz")
        assert status == 200, health
    finally:
        stop_load.set()
        for t in threads:
            t.join(60)
    after = _samples(_scrape(metrics_port)[1])
    assert _approved(after) == sum(approved)
    errors = {k: v for k, v in after.items() if k[0] == "swipepay_center_database_errors_total"}
    assert errors and not any(errors.values())


def test_metrics_of_one_process_scraped_during_load(tmp_path: Path) -> None:
    home = create_lab(tmp_path / "lab").root
    port, metrics_port = free_port(), free_port()
    proc = start_center(home, port, "--metrics", f"127.0.0.1:{metrics_port}")
    try:
        _scrape_during_load(home, port, metrics_port, workers=1)
    finally:
        stop(proc)


def test_metrics_summed_over_workers_scraped_during_load(pg_home: Path) -> None:
    port, metrics_port = free_port(), free_port()
    proc = start_center(pg_home, port, "--workers", "2", "--metrics",
                        f"127.0.0.1:{metrics_port}")  # fmt: skip
    try:
        status, text = _scrape(metrics_port, "/healthz")
        assert (status, text.strip()) == (200, "ok 2/2 workers ready")
        _scrape_during_load(pg_home, port, metrics_port, workers=2)
        victim = min(_workers(port, proc.pid))
        os.kill(victim, signal.SIGKILL)
        # While the supervisor restarts it: unhealthy, and its gauges leave the sums.
        wait_for(lambda: _scrape(metrics_port, "/healthz")[0] == 503 or
                 len(_workers(port, proc.pid) - {victim}) == 2, 30, "the kill to be seen")
        wait_for(lambda: _scrape(metrics_port, "/healthz")[0] == 200, 30, "healthy again")
        samples = _samples(_scrape(metrics_port)[1])
        assert samples[("swipepay_center_verifier_up", frozenset())] == 2
        assert samples[("swipepay_center_open_connections", frozenset())] == 0
    finally:
        stop(proc)


def test_ctrl_c_on_a_terminal_stops_every_worker(pg_home: Path) -> None:
    """``center serve --workers 2`` run by a person: Ctrl-C in its terminal stops the
    supervisor and both workers (each gets SIGINT too), says so, exits 0, frees the port."""
    import pexpect

    from tests.support.pty import spawn_swipepay

    port = free_port()
    child = spawn_swipepay("center", "serve", "--home", str(pg_home), "--listen",
                           f"127.0.0.1:{port}", "--workers", "2", timeout=30)  # fmt: skip
    try:
        child.expect(f"center listening on 127.0.0.1:{port} .*2 workers")
        workers = _workers(port, child.pid)
        assert len(workers) == 2
        child.sendintr()
        child.expect("stopped")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in (child.before or "")
    assert not listening_pids(port)
    for pid in workers:  # stopped and reaped by the supervisor before it exited
        assert not Path(f"/proc/{pid}").exists()


def test_a_second_center_on_the_port_of_a_running_one_is_refused(pg_home: Path) -> None:
    """SO_REUSEPORT would let a second ``--workers`` center of the same user join the first
    one's port and take half its terminals: it is refused, and the first keeps serving."""
    port = free_port()
    proc = start_center(pg_home, port, "--workers", "2")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "swipepay", "center", "serve", "--home", str(pg_home),
             "--listen", f"127.0.0.1:{port}", "--workers", "2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 3, run.stderr
        assert "cannot listen" in run.stderr and "Traceback" not in run.stderr
        assert len(_workers(port, proc.pid)) == 2 and proc.poll() is None
    finally:
        stop(proc)


def test_metrics_directories_of_killed_supervisors_are_removed(tmp_path: Path) -> None:
    from swipepay.center.workers import metrics_directory

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"swipepay-metrics-{dead.stdout.strip()}-abc"
    (stale / "sub").mkdir(parents=True)
    live = tmp_path / f"swipepay-metrics-{os.getpid()}-xyz"
    live.mkdir()
    with metrics_directory(tmp_path) as path:
        assert path.is_dir() and path.name.startswith(f"swipepay-metrics-{os.getpid()}-")
        assert not stale.exists() and live.exists()
    assert not path.exists()
