"""A private pcscd with vsmartcard's vpcd readers for the PC/SC tests (a helper, not a test file).

One pcscd runs per machine (it ignores ``PCSCLITE_CSOCK_NAME``), so: when one already runs and
lists both virtual readers it is reused (and left running); otherwise ours is started as a child
(``pcscd -f``, never ``-x``, which quits when idle) and stopped with SIGTERM at the end.  A lock
file keeps two test sessions on one machine from fighting over the two vpcd slots.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from swipepay.drivers.vpcd import SLOTS, VpcdClient

READERS = tuple(SLOTS.values())
PORTS = {name: port for port, name in SLOTS.items()}
LOCK = Path("/tmp/swipepay-pcscd-tests.lock")


class PcscdUnavailable(RuntimeError):
    """pcscd / vpcd cannot be used here; the message says why and what to do."""


def _readers() -> list[str]:
    from smartcard.System import readers

    try:
        return [str(r) for r in readers()]
    except Exception:
        return []


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def reader_state(name: str) -> int:
    """The SCARD_STATE_* flags pcscd reports for reader ``name`` right now (0 when unknown)."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return 0
    try:
        hresult, states = scard.SCardGetStatusChange(
            context, 0, [(name, scard.SCARD_STATE_UNAWARE)]
        )
        return int(states[0][1]) if hresult == scard.SCARD_S_SUCCESS else 0
    finally:
        scard.SCardReleaseContext(context)


def wait_present(name: str, present: bool, timeout: float = 5.0) -> None:
    from smartcard import scard

    def ok() -> bool:
        state = reader_state(name)
        if present:
            return bool(state & scard.SCARD_STATE_PRESENT)
        return bool(state & scard.SCARD_STATE_EMPTY)

    if not _wait(ok, timeout):
        raise PcscdUnavailable(
            f"{name} did not become {'PRESENT' if present else 'EMPTY'} within {timeout} s"
        )


@dataclass
class Pcscd:
    """The daemon in use; ``process`` is None when someone else's pcscd was reused."""

    process: subprocess.Popen[bytes] | None
    lock: IO[str]
    slots: dict[str, Slot] = field(default_factory=dict)

    @classmethod
    def start(cls, timeout: float = 10.0, lock_wait: float = 180.0) -> Pcscd:
        binary = shutil.which("pcscd") or next(
            (p for p in ("/usr/sbin/pcscd", "/sbin/pcscd") if os.path.exists(p)), None
        )
        if binary is None:
            raise PcscdUnavailable("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
        if not os.path.exists("/usr/lib/pcsc/drivers/serial/libifdvpcd.so"):
            raise PcscdUnavailable(
                "vsmartcard-vpcd is not installed (apt-get install vsmartcard-vpcd)"
            )
        lock = LOCK.open("a")
        if not _wait(lambda: _try_lock(lock), lock_wait):
            lock.close()
            raise PcscdUnavailable(
                f"another test session held {LOCK} for {lock_wait:.0f} s (the vpcd slots are busy)"
            )
        try:
            return cls._start(binary, lock, timeout)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _start(cls, binary: str, lock: IO[str], timeout: float) -> Pcscd:
        if _running():
            if not _wait(lambda: all(r in _readers() for r in READERS), 2.0):
                raise PcscdUnavailable(
                    f"a pcscd is already running without the vpcd readers {READERS} "
                    f"(listed: {_readers()}); stop it or install vsmartcard-vpcd"
                )
            return cls(None, lock)
        deadline = time.monotonic() + timeout
        while True:
            # stderr to a file, not a pipe nobody drains: a chatty pcscd must never block.
            with tempfile.TemporaryFile() as log:
                process = subprocess.Popen([binary, "-f"], stdout=subprocess.DEVNULL, stderr=log)
                ready = _wait(
                    functools.partial(_up, process), max(deadline - time.monotonic(), 0.1)
                )
                if process.poll() is None:
                    break
                log.seek(0)
                err = log.read().decode(errors="replace")[-500:]
            # A pcscd stopped just before may still be an unreaped zombie holding its pid file
            # ("Another pcscd seems to be running"): try again until the deadline.
            if "Another pcscd" not in err or time.monotonic() > deadline:
                raise PcscdUnavailable(f"pcscd exited with {process.returncode}: {err.strip()}")
            time.sleep(0.2)
        if not ready:
            _terminate(process)
            raise PcscdUnavailable(f"pcscd did not list {READERS} within {timeout} s")
        return cls(process, lock)

    @property
    def ours(self) -> bool:
        """Whether this session started the daemon (only then may it stop or restart it)."""
        return self.process is not None

    def stop_daemon(self) -> None:
        """Stop our pcscd but keep the lock (fault tests: "pcscd not running"); wait until no
        pcscd answers.  Never stops someone else's daemon."""
        if self.process is None:
            raise PcscdUnavailable("this pcscd was not started by the tests: not stopping it")
        for slot in self.slots.values():
            slot.remove(wait=False)
        _terminate(self.process)
        if not _wait(lambda: not _running(), 5.0):
            raise PcscdUnavailable("a pcscd still answers after ours was stopped")

    def start_daemon(self, timeout: float = 10.0) -> None:
        """Start our pcscd again after :meth:`stop_daemon`, under the same lock."""
        if self.process is None:
            raise PcscdUnavailable("this pcscd was not started by the tests: not restarting it")
        if self.process.poll() is None:
            return
        binary = shutil.which("pcscd") or "/usr/sbin/pcscd"
        again = type(self)._start(binary, self.lock, timeout)
        if again.process is None:
            raise PcscdUnavailable("another pcscd started while ours was stopped")
        self.process = again.process

    def slot(self, reader: str) -> Slot:
        if reader not in self.slots:
            self.slots[reader] = Slot(reader, PORTS[reader])
        return self.slots[reader]

    def stop(self) -> None:
        for slot in self.slots.values():
            slot.remove(wait=False)
        if self.process is not None:
            _terminate(self.process)
        self.lock.close()


def _up(process: subprocess.Popen[bytes]) -> bool:
    """Done waiting: the daemon died, or it lists both virtual readers."""
    return process.poll() is not None or all(r in _readers() for r in READERS)


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _running() -> bool:
    """Whether some pcscd answers on the machine's socket."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return False
    scard.SCardReleaseContext(context)
    return True


def _terminate(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class Slot:
    """One vpcd slot: insert a virtual card (connect), remove it (close), wait for pcscd."""

    reader: str
    port: int
    client: VpcdClient | None = None

    def insert(self, client: VpcdClient, wait: bool = True, attempts: int = 3) -> VpcdClient:
        """Insert and wait for PRESENT.  pcscd 1.9.9 sometimes leaves a reader EMPTY although
        the card connected (a fast swap, or a busy machine missing a presence poll): then the
        card is taken out again, EMPTY awaited, and inserted once more, as a person would."""
        self.remove()
        self.client = client
        for attempt in range(attempts):
            client.insert()
            if not wait:
                return client
            try:
                wait_present(self.reader, True, timeout=3.0)
                return client
            except PcscdUnavailable:
                if attempt == attempts - 1:
                    raise
                client.remove()
                wait_present(self.reader, False)
        return client

    def remove(self, wait: bool = True) -> None:
        """Take the card out; wait for EMPTY so the next insert is seen (pcscd 1.9.9 race)."""
        client, self.client = self.client, None
        if client is None:
            return
        client.remove()
        if wait:
            wait_present(self.reader, False)
