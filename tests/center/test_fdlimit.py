"""The open-file limit and the connection cap: ``center serve`` raises the soft limit to the
hard one, refuses a cap that cannot fit and lowers the default one to what fits."""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Callable

import pytest

from swipepay.center import fdlimit
from swipepay.center.fdlimit import RESERVED, fit_connection_cap, raise_soft_limit
from swipepay.center.lab import Lab
from swipepay.center.server import ServerLimits
from swipepay.cli.harness.idle import open_file_limit
from swipepay.cli.harness.processes import (
    center_argv,
    child_env,
    free_port,
    port_open,
    stop,
    swipepay_argv,
    wait_for,
)
from swipepay.firmware_sim.errors import ConfigError


class Limits:
    """A fake RLIMIT_NOFILE: what getrlimit answers and what setrlimit was asked."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which: int, value: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not allowed")
        self.soft, self.hard = value


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Limits]:
    def install(soft: int, hard: int, refuse: bool = False) -> Limits:
        fake = Limits(soft, hard, refuse)
        monkeypatch.setattr(fdlimit.resource, "getrlimit", fake.get)
        monkeypatch.setattr(fdlimit.resource, "setrlimit", fake.set)
        return fake

    return install


def test_the_soft_limit_is_raised_to_the_hard_one(limits: Callable[..., Limits]) -> None:
    fake = limits(1024, 524288)
    got = raise_soft_limit()
    assert (got.soft, got.hard, got.was) == (524288, 524288, 1024)
    assert fake.soft == 524288


def test_an_unlimited_hard_limit_raises_the_soft_one_to_what_is_wanted(
    limits: Callable[..., Limits],
) -> None:
    limits(1024, resource.RLIM_INFINITY)
    got = raise_soft_limit(want=20_000)
    assert (got.soft, got.hard) == (20_000, None)


def test_a_platform_that_refuses_keeps_the_limit(limits: Callable[..., Limits]) -> None:
    limits(256, 4096, refuse=True)
    assert raise_soft_limit().soft == 256


def test_a_given_cap_that_fits_is_kept(limits: Callable[..., Limits]) -> None:
    limits(1024, 20_000)
    assert fit_connection_cap(10_000, 10_000, 256) == 10_000


def test_a_given_cap_that_cannot_fit_is_refused_saying_what_to_do(
    limits: Callable[..., Limits],
) -> None:
    limits(1024, 4096)
    fits = 4096 - 256 - RESERVED
    with pytest.raises(ConfigError) as caught:
        fit_connection_cap(10_000, 10_000, 256)
    text = str(caught.value)
    assert text.startswith("--max-connections 10000 needs about 10320 open files, but this "
                           "process may open 4096 (hard limit 4096)")  # fmt: skip
    assert f"lower --max-connections to {fits} or less" in text and "ulimit -Hn" in text


def test_the_default_cap_is_lowered_to_what_fits(
    limits: Callable[..., Limits], caplog: pytest.LogCaptureFixture
) -> None:
    limits(1024, 4096)
    assert fit_connection_cap(None, 10_000, 256) == 4096 - 256 - RESERVED
    assert "holding at most 3776 terminal connections, not 10000" in caplog.text


def test_the_default_cap_is_a_fleet() -> None:
    assert ServerLimits().max_connections == 10_000


def _with_nofile(soft: int, hard: int | None = None) -> Callable[[], None]:
    def lower() -> None:
        _, now = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, now if hard is None else hard))

    return lower


def test_center_serve_raises_its_soft_limit(lab: Lab) -> None:
    """Started with a soft limit of 256, the center serves with its hard limit in force."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    port = free_port()
    proc = subprocess.Popen(
        swipepay_argv(*center_argv(lab.root, port)), env=child_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_with_nofile(256),
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 30, "the center")
        assert proc.poll() is None
        soft = hard if hard != resource.RLIM_INFINITY else 10_000 + 256 + RESERVED
        assert open_file_limit(proc.pid) == soft
    finally:
        stop(proc)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert f"up to {min(10_000, soft - 256 - RESERVED)} terminals" in err


def test_center_serve_refuses_a_cap_above_its_hard_limit(lab: Lab) -> None:
    done = subprocess.run(
        swipepay_argv(*center_argv(lab.root, free_port(), "--max-connections", "5000")),
        env=child_env(), capture_output=True, text=True, timeout=60, check=False,
        preexec_fn=_with_nofile(256, 1024),
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "--max-connections 5000 needs about 5320 open files" in done.stderr
    assert "lower --max-connections to 704 or less" in done.stderr
