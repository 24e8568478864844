"""The machine's pcscd with vsmartcard's two vpcd readers: found or started, its slots locked.

Used by ``swipepay demo --real-stack``, the real-stack bench and the PC/SC tests: one manager,
so they all take turns on the same two slots.  A missing pcscd / vsmartcard-vpcd / pyscard is a
:class:`ConfigError` that says what to install.

pcscd is one per machine (it ignores ``PCSCLITE_CSOCK_NAME``): a running pcscd that lists both
vpcd readers is reused (and left running); otherwise ``pcscd -f`` is started as our child (never
``-x``, which quits when idle) and stopped with SIGTERM at the end.  A lock file in the temporary
directory keeps two sessions on one machine (a demo, a test run, a bench) off the slots at the same
time.  vpcd slot 0 (``Virtual PCD 00 00``, port 35963) holds the card, slot 1
(``Virtual PCD 00 01``, port 35964) the phone.  A slot is PRESENT while a virtual card's TCP
connection to vpcd is up; :func:`wait_slot` waits for the state pcscd reports, which follows a
connection or a close only at its next presence poll (hardware_notes/pcsc.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from swipepay.cli.harness.processes import stop, wait_for
from swipepay.firmware_sim.errors import ConfigError

VPCD_DRIVER: Final = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
CARD_SLOT: Final = ("Virtual PCD 00 00", 35963)
PHONE_SLOT: Final = ("Virtual PCD 00 01", 35964)
#: The vpcd slots are one pair per machine, so every session takes this lock before using them.
SLOT_LOCK: Final = Path(tempfile.gettempdir()) / "swipepay-pcscd-tests.lock"
#: Where pcscd (Debian's build) writes its pid; a second pcscd refuses to start while it names a
#: live process.
PID_FILE: Final = Path("/run/pcscd/pcscd.pid")
#: What pcscd logs when vpcd cannot listen on its port, and when a pcscd already runs.
BIND_FAILED: Final = "Address already in use"
ANOTHER: Final = "Another pcscd"
#: Longest wait for a vpcd port held by a closed connection: TIME_WAIT lasts 60 s on Linux.
PORT_WAIT: Final = 75.0


def missing_stack() -> str | None:
    """Why the PC/SC stack cannot run here (None when it can): what to install."""
    if _binary() is None:
        return "pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)"
    if not VPCD_DRIVER.exists():
        return "vsmartcard-vpcd is not installed (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install 'swipepay[pcsc]'; needs libpcsclite-dev)"
    return None


def slot_state(reader: str) -> bool | None:
    """Whether pcscd reports a card in ``reader`` (None when pcscd cannot tell)."""
    from swipepay.drivers.pcsc import card_present

    try:
        return card_present(reader)
    except ConfigError:
        return None


def wait_slot(reader: str, present: bool, timeout: float = 5.0) -> None:
    """Wait until pcscd reports ``reader`` PRESENT (or EMPTY); ConfigError after ``timeout``."""
    wait_for(lambda: slot_state(reader) is present, timeout,
             f"{reader} to be {'PRESENT' if present else 'EMPTY'}")  # fmt: skip


def _binary() -> str | None:
    return shutil.which("pcscd") or next(
        (p for p in ("/usr/sbin/pcscd", "/sbin/pcscd") if Path(p).exists()), None
    )


def _readers_listed() -> bool:
    from swipepay.drivers.pcsc import list_readers

    try:
        names = list_readers()
    except ConfigError:
        return False
    return CARD_SLOT[0] in names and PHONE_SLOT[0] in names


def _answering() -> bool:
    """Whether some pcscd answers on the machine's socket."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return False
    scard.SCardReleaseContext(context)
    return True


def _pid_file_alive() -> bool:
    """Whether the process named in pcscd's pid file still exists (a zombie counts)."""
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(port: int) -> bool:
    """Whether vpcd could listen on ``port`` now: bound as vpcd binds (any address, with
    SO_REUSEADDR) and closed at once, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 (vpcd's own address; closed at once)
        except OSError:
            return False
    return True


def _wait_ports_free() -> None:
    """Wait until vpcd can listen on both its ports.

    vpcd's fixed ports lie inside Linux's ephemeral port range (32768-60999), so any outgoing
    TCP connection on the machine may get 35963 or 35964 as its local port; after it closes,
    that port stays in TIME_WAIT for 60 s, and pcscd's vpcd then fails to listen ("Address
    already in use") and lists no virtual reader.  A busy test run opens thousands of such
    connections, so this happens.
    """
    wait_for(lambda: all(_port_free(port) for _, port in (CARD_SLOT, PHONE_SLOT)), PORT_WAIT,
             f"vpcd's ports {CARD_SLOT[1]}, {PHONE_SLOT[1]} to be free (held by another "
             "connection or its TIME_WAIT)")  # fmt: skip


def _lock_slots(timeout: float) -> IO[str]:
    lock = SLOT_LOCK.open("a")

    def take() -> bool:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    try:
        wait_for(take, timeout, f"the vpcd slots (another session holds {SLOT_LOCK})")
    except BaseException:
        lock.close()
        raise
    return lock


@dataclass
class Pcscd:
    """The pcscd in use; ``process`` is None when an already running one was reused."""

    process: subprocess.Popen[bytes] | None
    lock: IO[str] | None = None

    @classmethod
    def ensure(cls, timeout: float = 10.0, lock_wait: float = 180.0) -> Pcscd:
        """Take the slot lock, then reuse the running pcscd or start ours."""
        why = missing_stack()
        if why is not None:
            raise ConfigError(why)
        lock = _lock_slots(lock_wait)
        try:
            daemon = cls._ensure(timeout)
        except BaseException:
            lock.close()
            raise
        daemon.lock = lock
        return daemon

    @classmethod
    def _ensure(cls, timeout: float) -> Pcscd:
        if _readers_listed():
            return cls(None)
        binary = _binary() or "/usr/sbin/pcscd"
        deadline = time.monotonic() + timeout
        while True:
            _wait_ports_free()
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed on every path below)
            # Our own argv (a fixed binary path), never shell input.
            process = subprocess.Popen([binary, "-f"], stdout=subprocess.DEVNULL, stderr=log)  # noqa: S603
            with contextlib.suppress(ConfigError):
                wait_for(
                    functools.partial(_pcscd_settled, process, log),
                    max(deadline - time.monotonic(), 0.1),
                    "pcscd",
                )
            if process.poll() is None and _readers_listed():
                log.close()
                return cls(process)
            if process.poll() is None:
                stop(process)
            err = _text(log).strip()[-300:]
            log.close()
            # Two passing conditions are waited out, then pcscd is started again: a vpcd port
            # taken again between the check and pcscd's bind (see _wait_ports_free), and a
            # pcscd stopped a moment ago that lingers as a zombie holding the pid file until
            # its parent reaps it ("Another pcscd seems to be running").
            if time.monotonic() > deadline or (BIND_FAILED not in err and ANOTHER not in err):
                raise ConfigError(
                    f"pcscd did not come up with the vpcd readers {CARD_SLOT[0]!r}, "
                    f"{PHONE_SLOT[0]!r}: {err or 'no error output'}"
                )
            if ANOTHER in err:
                left = max(deadline - time.monotonic(), 0.1)
                with contextlib.suppress(ConfigError):
                    wait_for(lambda: not _pid_file_alive(), left, "the previous pcscd to exit")

    @property
    def ours(self) -> bool:
        """Whether this session started the daemon (only then may it stop or restart it)."""
        return self.process is not None

    def stop_daemon(self) -> None:
        """Stop our pcscd but keep the slot lock ("pcscd not running" faults), and wait until no
        pcscd answers.  Never stops someone else's daemon."""
        if self.process is None:
            raise ConfigError("this pcscd was not started here: not stopping it")
        stop(self.process)
        wait_for(lambda: not _answering(), 5.0, "pcscd to stop answering")

    def start_daemon(self, timeout: float = 10.0) -> None:
        """Start our pcscd again after :meth:`stop_daemon`, under the same lock."""
        if self.process is None:
            raise ConfigError("this pcscd was not started here: not restarting it")
        if self.process.poll() is None:
            return
        again = type(self)._ensure(timeout)
        if again.process is None:
            raise ConfigError("another pcscd started while ours was stopped")
        self.process = again.process

    def stop(self) -> None:
        """Stop our pcscd (a reused one keeps running) and release the slot lock."""
        if self.process is not None:
            stop(self.process)
        if self.lock is not None:
            self.lock.close()


def _text(log: IO[bytes]) -> str:
    """What pcscd has written to ``log`` so far."""
    return os.pread(log.fileno(), 1 << 16, 0).decode(errors="replace")


def _pcscd_settled(process: subprocess.Popen[bytes], log: IO[bytes]) -> bool:
    """Done waiting: the daemon died, vpcd could not listen, or it lists both vpcd readers."""
    return process.poll() is not None or BIND_FAILED in _text(log) or _readers_listed()
