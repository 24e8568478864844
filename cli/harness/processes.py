"""Starting, waiting for and stopping swipepay processes: the one place the harness, the
benchmarks and the tests get a free port, a child's environment or a running center.

Every wait here is bounded and polls a real condition (the port accepting, the child still
alive); every child started here can be stopped with :func:`stop` (SIGTERM, then SIGKILL after
a grace period) or :func:`kill` (SIGKILL at once, as the fault loops need).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final

import swipepay
from swipepay.firmware_sim.errors import ConfigError

#: The folder that holds the ``swipepay`` import package (``src/`` in the repository, the
#: site-packages folder when installed): first on a child's ``PYTHONPATH``.
PACKAGE_PARENT: Final = Path(swipepay.__file__).parent.parent


def swipepay_argv(*args: str) -> list[str]:
    """The command line of ``swipepay ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "swipepay", *args]


def swipepay_command() -> list[str]:
    """The installed ``swipepay`` script beside this interpreter, else :func:`swipepay_argv`."""
    script = Path(sys.executable).parent / "swipepay"
    return [str(script)] if script.exists() else swipepay_argv()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child: unbuffered output, this package first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")])
    )
    env.update(extra or {})
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms for up to ``timeout`` s; :class:`ConfigError` naming
    ``what`` when it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ConfigError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def spawn(
    args: Sequence[str],
    *,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``swipepay ARGS`` as a child process of this interpreter."""
    return subprocess.Popen(  # noqa: S603 - this interpreter and our own arguments
        swipepay_argv(*args), stdout=stdout, stderr=stderr, stdin=stdin, env=child_env(env)
    )


def center_argv(home: Path, port: int, *extra: str, host: str = "127.0.0.1") -> list[str]:
    """The arguments of ``swipepay center serve`` for the lab at ``home`` on ``host:port``."""
    return ["center", "serve", "--home", str(home), "--listen", f"{host}:{port}", *extra]


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, timeout: float, what: str,
    host: str = "127.0.0.1",
) -> None:
    """Return once ``host:port`` accepts; :class:`ConfigError` (and the child stopped) when the
    child exits first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if proc.poll() is not None:
            raise ConfigError(f"{what} exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            stop(proc)
            raise ConfigError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.02)


#: TCP states in ``/proc/net/tcp``.
_LISTEN, _ESTABLISHED = "0A", "01"


def listening_pids(port: int) -> set[int]:
    """Processes holding a TCP socket in LISTEN state on ``port`` (any address), from Linux's
    ``/proc/net/tcp{,6}`` and ``/proc/*/fd``: the workers of ``center serve --workers N`` each
    hold their own (SO_REUSEPORT).  Empty where ``/proc`` is not Linux's."""
    return _socket_pids(port, _LISTEN)


def serving_pids(port: int) -> set[int]:
    """Processes holding an established TCP connection whose local port is ``port``: the
    workers serving terminals right now (:func:`listening_pids`)."""
    return _socket_pids(port, _ESTABLISHED)


def _socket_pids(port: int, want: str) -> set[int]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state == want and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    pids: set[int] = set()
    if not inodes:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        pids.add(int(entry.name))
                        break
    return pids


def _worker_count(extra: Sequence[str]) -> int:
    """The ``--workers N`` among ``center serve`` arguments (1 without)."""
    args = list(extra)
    for n, arg in enumerate(args):
        if arg == "--workers" and n + 1 < len(args):
            return int(args[n + 1])
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
    return 1


def start_center(
    home: Path, port: int, *extra: str, timeout: float = 15.0,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """``swipepay center serve`` for the lab at ``home`` on 127.0.0.1:``port``; returns once
    it accepts connections (with ``--workers N``: once all N workers listen, so a load that
    connects at once is spread over all of them)."""
    proc = spawn(center_argv(home, port, *extra), stdout=stdout, stderr=subprocess.STDOUT
                 if stdout is not subprocess.DEVNULL else subprocess.DEVNULL)
    wait_listening(proc, port, timeout, "the center")
    workers = _worker_count(extra)
    if workers > 1:
        try:
            wait_for(
                lambda: len(listening_pids(port)) >= workers or proc.poll() is not None,
                timeout, f"{workers} center workers to listen",
            )  # fmt: skip
        except ConfigError:
            stop(proc)
            raise
    return proc


@contextlib.contextmanager
def center_process(
    home: Path, port: int, *extra: str, timeout: float = 15.0
) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_center` as a context: the center is stopped on exit."""
    proc = start_center(home, port, *extra, timeout=timeout)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM a child we started, SIGKILL it after ``grace`` s, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(grace)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child we started (a crash, as the fault loops need) and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
