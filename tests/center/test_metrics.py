"""The center's Prometheus metrics: the hooks' values as a scrape sees them over a real loopback
socket, /healthz following the health callable, bad and slow HTTP clients disconnected without
harm to the endpoint, and the workers' files summed by the supervisor's registry (gauges only
over live workers).

This process stays in prometheus_client's in-memory mode; the multiprocess tests run the
workers as child processes that get ``PROMETHEUS_MULTIPROC_DIR`` in the environment they start
with, as a supervisor's workers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from swipepay.center.lab import Lab
from swipepay.center.metrics import (
    DATABASE_ERRORS,
    MULTIPROC_ENV,
    MetricsEndpoint,
    PrometheusMetrics,
    ServerMetrics,
    approvals_kind,
    clear_directory,
    multiprocess_registry,
    worker_exited,
)
from swipepay.center.response_codes import RC
from swipepay.center.server import new_event_loop
from swipepay.cli.harness.processes import child_env
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest
from swipepay.firmware_sim.transaction import Transaction, TxnType
from tests.support.waiting import until

P = "swipepay_center_"
#: urllib without the environment's proxies: every request here goes to loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """Status, Content-Type and body of ``method path`` on the endpoint (blocking)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with _OPENER.open(req, timeout=5) as resp:
            return int(resp.status), str(resp.headers["Content-Type"]), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, str(err.headers["Content-Type"]), err.read()


async def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    return await asyncio.to_thread(_get, port, path, method)


def parse(body: bytes) -> Samples:
    """Every sample of a text-format scrape: (name, labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(P + name, frozenset(labels.items()))]


#: The event loops the endpoint runs on: asyncio's, and uvloop's (the center's where installed).
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if find_spec("uvloop") is not None:
    LOOPS["uvloop"] = new_event_loop


@pytest.fixture(params=sorted(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    factory: Callable[[], asyncio.AbstractEventLoop] = LOOPS[request.param]
    return factory


def serving(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    registry: CollectorRegistry,
    test: Callable[[int], Awaitable[None]],
    health: Callable[[], tuple[bool, str]] = lambda: (True, "serving"),
    *,
    timeout: float = 5.0,
    max_clients: int = 16,
) -> None:
    """Run ``test(port)`` against an endpoint on a free loopback port, on a loop from
    ``loop_factory``, then close it."""

    async def main() -> None:
        endpoint = MetricsEndpoint(registry, health, timeout=timeout, max_clients=max_clients)
        port = await endpoint.start("127.0.0.1", 0)
        try:
            await test(port)
        finally:
            await endpoint.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# -- one process --------------------------------------------------------------------------------


def test_the_hooks_values_are_scraped_with_their_labels(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    metrics = PrometheusMetrics()
    for seconds in (0.0007, 0.003, 0.004):
        metrics.answered("purchase", "00", seconds)
    metrics.answered("withdrawal", "51", 0.3)
    metrics.batch(3, 0.0004)
    metrics.batch(1, 0.002)
    metrics.connection_opened()
    metrics.connection_opened()
    metrics.connection_closed()
    metrics.verifier(True)
    metrics.database_error("unavailable")
    metrics.database_error("unavailable")
    metrics.database_error("commit_unknown")

    async def test(port: int) -> None:
        status, ctype, body = await fetch(port, "/metrics")
        assert (status, ctype) == (200, CONTENT_TYPE_LATEST)
        s = parse(body)
        assert value(s, "requests_total", kind="purchase", code="00") == 3
        assert value(s, "requests_total", kind="withdrawal", code="51") == 1
        assert value(s, "request_seconds_count") == 4
        assert value(s, "request_seconds_sum") == pytest.approx(0.3077)
        assert value(s, "request_seconds_bucket", le="0.001") == 1
        assert value(s, "request_seconds_bucket", le="0.005") == 3
        assert value(s, "request_seconds_bucket", le="0.5") == 4
        assert value(s, "request_seconds_bucket", le="+Inf") == 4
        assert value(s, "batch_size_count") == 2
        assert value(s, "batch_size_sum") == 4
        assert value(s, "batch_size_bucket", le="1.0") == 1
        assert value(s, "commit_seconds_count") == 2
        assert value(s, "commit_seconds_sum") == pytest.approx(0.0024)
        assert value(s, "open_connections") == 1
        assert value(s, "verifier_up") == 1
        assert value(s, "database_errors_total", kind="unavailable") == 2
        assert value(s, "database_errors_total", kind="commit_unknown") == 1
        # Every known kind exists from the start, so a rate over it is defined.
        for kind in DATABASE_ERRORS:
            assert (P + "database_errors_total", frozenset({("kind", kind)})) in s

        metrics.verifier(False)
        metrics.answered("purchase", "00", 0.001)
        s = parse((await fetch(port, "/metrics"))[2])
        assert value(s, "verifier_up") == 0
        assert value(s, "requests_total", kind="purchase", code="00") == 4

    serving(loop_factory, metrics.registry, test)


def test_labels_stay_bounded_whatever_the_caller_passes() -> None:
    metrics = PrometheusMetrics()
    metrics.answered("refund", "00", 0.001)
    metrics.answered("purchase", "0\n", 0.001)
    metrics.answered("purchase", "000", 0.001)
    metrics.database_error("disk on fire")
    metrics.answered(TxnType.DEPOSIT, RC.APPROVED, 0.001)  # the enums are their strings
    r = metrics.registry
    assert r.get_sample_value(P + "requests_total", {"kind": "deposit", "code": "00"}) == 1
    assert r.get_sample_value(P + "requests_total", {"kind": "other", "code": "00"}) == 1
    assert r.get_sample_value(P + "requests_total", {"kind": "purchase", "code": "invalid"}) == 2
    assert r.get_sample_value(P + "database_errors_total", {"kind": "other"}) == 1


def test_each_instance_has_its_own_registry() -> None:
    a, b = PrometheusMetrics(), PrometheusMetrics()
    a.answered("deposit", "00", 0.001)
    assert a.registry is not b.registry
    assert (
        b.registry.get_sample_value(P + "requests_total", {"kind": "deposit", "code": "00"}) is None
    )
    shared = CollectorRegistry()
    PrometheusMetrics(shared).connection_opened()
    assert shared.get_sample_value(P + "open_connections") == 1


def test_healthz_follows_the_health_callable(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    state: dict[str, tuple[bool, str] | Exception] = {"now": (True, "2 workers")}

    def health() -> tuple[bool, str]:
        now = state["now"]
        if isinstance(now, Exception):
            raise now
        return now

    async def test(port: int) -> None:
        assert await fetch(port, "/healthz") == (
            200,
            "text/plain; charset=utf-8",
            b"ok 2 workers\n",
        )
        state["now"] = (False, "database unavailable")
        assert (await fetch(port, "/healthz"))[::2] == (503, b"database unavailable\n")
        state["now"] = RuntimeError("bug in the health check")
        assert (await fetch(port, "/healthz"))[::2] == (503, b"health check failed\n")
        state["now"] = (True, "")
        assert (await fetch(port, "/healthz?verbose=1"))[::2] == (200, b"ok\n")

    serving(loop_factory, PrometheusMetrics().registry, test, health)


def test_other_paths_and_methods_are_refused(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def test(port: int) -> None:
        for path in ("/", "/metrics/", "/metricsx", "/../metrics"):
            assert (await fetch(port, path))[::2] == (404, b"not found\n"), path
        assert (await fetch(port, "/metrics", "POST"))[0] == 405
        assert (await fetch(port, "/metrics", "DELETE"))[0] == 405
        status, ctype, body = await fetch(port, "/metrics", "HEAD")
        assert (status, ctype, body) == (200, CONTENT_TYPE_LATEST, b"")

    serving(loop_factory, PrometheusMetrics().registry, test)


async def _exchange(port: int, data: bytes, *, eof: bool = False) -> tuple[bytes, float]:
    """Send ``data`` raw (then end the stream if ``eof``); everything the endpoint sends back
    until it closes, and how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        async with asyncio.timeout(5):
            answer = await reader.read()
    except ConnectionResetError:  # closed with our bytes unread: the kernel resets
        answer = b""
    finally:
        writer.close()
    return answer, loop.time() - start


def test_bad_and_slow_clients_are_disconnected_and_the_endpoint_carries_on(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def test(port: int) -> None:
        answer, _ = await _exchange(port, b"\x16\x03\x01 not http at all\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
        answer, _ = await _exchange(port, b"GET /metrics SMTP/2\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
        # Ends its stream before finishing the request head: closed, nothing to answer.
        assert (await _exchange(port, b"GET /metr", eof=True))[0] == b""
        # Never finishes its request head: closed after the timeout.
        answer, took = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x")
        assert answer == b""
        assert 0.2 <= took < 3
        # A head over the cap: refused without reading it all.
        answer, _ = await _exchange(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        status, _, body = await fetch(port, "/metrics")
        assert status == 200
        assert value(parse(body), "open_connections") == 0

    serving(loop_factory, PrometheusMetrics().registry, test, timeout=0.25)


def test_connections_beyond_max_clients_are_closed_on_arrival(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def main() -> None:
        endpoint = MetricsEndpoint(PrometheusMetrics().registry, lambda: (True, ""), max_clients=2)
        port = await endpoint.start("127.0.0.1", 0)
        try:
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await until(lambda: endpoint.clients == 2)
            answer, took = await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert answer == b""
            assert took < 4  # not after the 5 s request timeout: at once
            assert endpoint.clients == 2
            for _, w in idle:
                w.close()
            await until(lambda: endpoint.clients == 0)
            assert (await fetch(port, "/metrics"))[0] == 200
        finally:
            await endpoint.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def test_an_address_in_use_is_a_configuration_error_naming_metrics(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # Before: an OSError that `center serve` reported as "cannot listen on <--listen>".
    async def main() -> None:
        first = MetricsEndpoint(PrometheusMetrics().registry, lambda: (True, ""))
        port = await first.start("127.0.0.1", 0)
        try:
            second = MetricsEndpoint(PrometheusMetrics().registry, lambda: (True, ""))
            with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
                await second.start("127.0.0.1", port)
        finally:
            await first.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def test_close_drops_the_clients_being_served(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def main() -> None:
        endpoint = MetricsEndpoint(PrometheusMetrics().registry, lambda: (True, ""))
        port = await endpoint.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")  # unfinished: its handler waits
        await until(lambda: endpoint.clients == 1)
        async with asyncio.timeout(2):
            await endpoint.close()
            # Dropped: an end of stream, or a reset when the handler had not read the request's
            # bytes yet (closing a socket with unread data resets it); never an answer or a hang.
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# -- worker processes ---------------------------------------------------------------------------

#: A worker: answers ``purchases`` approvals and one decline, opens a connection, reports its
#: verifier, commits one batch; prints its pid and exits.
WORKER = textwrap.dedent(
    """
    import os, sys
    from swipepay.center.metrics import PrometheusMetrics
    purchases, verifier = int(sys.argv[1]), sys.argv[2] == "up"
    m = PrometheusMetrics()
    for _ in range(purchases):
        m.answered("purchase", "00", 0.002)
    m.answered("deposit", "05", 0.004)
    m.connection_opened()
    m.verifier(verifier)
    m.batch(purchases + 1, 0.001)
    print(os.getpid())
    """
)


def run_worker(directory: Path, *args: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *args],
        env=child_env({MULTIPROC_ENV: str(directory)}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


def test_workers_are_summed_and_a_dead_workers_gauges_leave_the_sums(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    clear_directory(directory)
    first = run_worker(directory, "5", "up")
    second = run_worker(directory, "7", "down")
    assert first != second
    registry = multiprocess_registry(directory)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(P + name, labels)

    assert sample("requests_total", kind="purchase", code="00") == 12
    assert sample("requests_total", kind="deposit", code="05") == 2
    assert sample("request_seconds_count") == 14
    assert sample("request_seconds_sum") == pytest.approx(12 * 0.002 + 2 * 0.004)
    assert sample("request_seconds_bucket", le="0.002") == 12
    assert sample("batch_size_count") == 2
    assert sample("batch_size_sum") == 14
    assert sample("database_errors_total", kind="conflict") == 0
    assert sample("open_connections") == 2
    assert sample("verifier_up") == 1  # only the first worker's verifier runs

    worker_exited(directory, first)
    assert sample("open_connections") == 1
    assert sample("verifier_up") == 0
    # Counts of a dead worker stay in the totals: they never go backwards.
    assert sample("requests_total", kind="purchase", code="00") == 12

    async def scrape(port: int) -> None:
        status, _, body = await fetch(port, "/metrics")
        assert status == 200
        s = parse(body)
        assert value(s, "requests_total", kind="purchase", code="00") == 12
        assert value(s, "open_connections") == 1

    serving(asyncio.new_event_loop, registry, scrape)

    clear_directory(directory)
    assert sample("requests_total", kind="purchase", code="00") is None


def test_a_worker_that_imported_prometheus_client_before_the_variable_was_set_fails(
    tmp_path: Path,
) -> None:
    late = textwrap.dedent(
        f"""
        import os
        import prometheus_client
        os.environ[{MULTIPROC_ENV!r}] = {str(tmp_path)!r}
        from swipepay.center.metrics import PrometheusMetrics
        PrometheusMetrics()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", late], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr
    assert "imported before" in done.stderr


def test_a_center_started_with_the_variable_naming_no_directory_says_so(
    lab: Lab, tmp_path: Path
) -> None:
    # Before: "cannot listen on 127.0.0.1:0: No such file or directory" (prometheus_client
    # failing to create its value file in the missing directory).
    done = subprocess.run(
        [sys.executable, "-m", "swipepay", "center", "serve", "--home", str(lab.root),
         "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        env={**child_env(), MULTIPROC_ENV: str(tmp_path / "missing")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert f"{MULTIPROC_ENV}={tmp_path / 'missing'} is not a writable directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_multiprocess_registry_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        multiprocess_registry(tmp_path / "missing")


# -- no metrics ---------------------------------------------------------------------------------


def test_the_default_hooks_do_nothing() -> None:
    m = ServerMetrics()
    m.answered("purchase", "00", 0.001)
    m.batch(8, 0.0005)
    m.connection_opened()
    m.connection_closed()
    m.verifier(True)
    m.verifier(False)
    m.database_error("unavailable")
    assert vars(m) == {}


def test_approvals_kind_names_the_transaction_type_reversals_and_the_rest() -> None:
    for txn_type in TxnType:
        txn = Transaction(
            type=txn_type,
            amount=0 if txn_type is TxnType.BALANCE else 1250,
            pan="4000001234567899",
            expiry="2712",
            terminal_id="POS00001",
            merchant_id="MERCHANT0000001",
            stan="000001",
            transmitted_at="1126120000",
        )
        assert approvals_kind(AuthRequest(txn)) == txn_type.value
    assert approvals_kind(codec.ReversalRequest("POS00001", "000001", "1126120000", None)) == (
        "reversal"
    )
    assert approvals_kind(codec.NetworkRequest("POS00001", "000002", "1126120000", "301")) == (
        "other"
    )
