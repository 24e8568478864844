"""A throwaway PostgreSQL cluster: ``initdb`` in a temporary directory, one ``postgres`` server
as our child, removed at the end.  Used by the tests, ``bench center`` and ``bench faults``.

* The Debian ``postgresql`` package's server binaries are found on ``PATH`` or under
  ``/usr/lib/postgresql/<version>/bin`` (the newest); a missing server or psycopg is a
  :class:`ConfigError` that says what to install.
* PostgreSQL refuses to run as root: when we are root, the cluster's directory is handed to the
  unprivileged user ``nobody`` and ``initdb``/``postgres`` run as that user.  The directory is
  made directly in the system's temporary folder, so ``nobody`` can reach it.
* Clients connect over the cluster's Unix socket (in its directory), trust authentication:
  loopback-only, for tests and benches, never a production setting.
* The server runs in a process group of its own, so :meth:`PostgresCluster.kill` can SIGKILL the
  postmaster *and* its backends at once (a real crash: killing the postmaster alone leaves its
  backends serving open connections); :meth:`PostgresCluster.start` then restarts it with crash
  recovery, on the same port.
* Durability settings stay PostgreSQL's defaults (``fsync``, ``synchronous_commit`` on): the
  benches measure real commits.
* :meth:`PostgresCluster.standby_of` makes a streaming-replication standby of a running cluster
  (``pg_basebackup -R``), and :meth:`PostgresCluster.promote` makes it the primary: the failover
  of ``hardware_notes/center-scale.md``, on one machine.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import quote

from swipepay.cli.harness.processes import free_port, wait_for
from swipepay.firmware_sim.errors import ConfigError

#: Where Debian installs the server binaries (not on PATH): /usr/lib/postgresql/<major>/bin.
DEBIAN_ROOT: Final = Path("/usr/lib/postgresql")
#: The unprivileged user the server runs as when we are root.
RUN_AS: Final = "nobody"
#: The role ``initdb`` creates; every URL connects as it.
SUPERUSER: Final = "swipepay"
#: Server settings of a throwaway cluster: small, loopback only, quick to notice a deadlock.
SETTINGS: Final = {
    "listen_addresses": "",  # Unix socket only
    "max_connections": "200",
    "shared_buffers": "64MB",
    "deadlock_timeout": "200ms",
    "log_min_messages": "warning",
}


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found is not None and (Path(found).resolve().parent / "postgres").exists():
        return Path(found).resolve().parent
    versions = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def missing() -> str | None:
    """Why a throwaway cluster cannot run here (None when it can): what to install."""
    if server_binaries() is None:
        return "the PostgreSQL server is not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'swipepay[postgres]')"
    return None


class PostgresCluster:
    """One throwaway cluster; a context manager (started on enter, removed on exit)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        primary: PostgresCluster | None = None,
        name: str = "standby1",
    ) -> None:
        """A new cluster by ``initdb``; or, with ``primary``, a standby of that running cluster
        named ``name`` (its ``application_name``, what ``synchronous_standby_names`` lists).
        ``settings``: server settings on top of :data:`SETTINGS`."""
        reason = missing()
        if reason is not None:
            raise ConfigError(reason)
        bindir = server_binaries()
        assert bindir is not None
        self._bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="swipepay-pg-"))
        self.data = self.dir / "data"
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        self._log = self.dir / "server.log"
        if os.geteuid() == 0:
            self._user = RUN_AS
            entry = pwd.getpwnam(RUN_AS)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._databases = 0
        self.settings = {**SETTINGS, **(settings or {})}
        try:
            if primary is None:
                self._run(
                    [
                        str(self._bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                        "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
                        "--no-instructions",
                    ]
                )  # fmt: skip
            else:
                # -R: standby.signal and primary_conninfo (with our application_name) written
                # for us; -X stream: the WAL of the copy comes along.
                self._run(
                    [
                        str(self._bin / "pg_basebackup"), "-D", str(self.data), "-R",
                        "-X", "stream", "--no-sync", "-d",
                        f"host={primary.dir} port={primary.port} user={SUPERUSER} "
                        f"application_name={name}",
                    ]
                )  # fmt: skip
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @classmethod
    def standby_of(cls, primary: PostgresCluster, name: str = "standby1") -> PostgresCluster:
        """A hot standby of the running ``primary``, streaming its WAL (not started)."""
        return cls(primary=primary, name=name)

    def promote(self, timeout: float = 30.0) -> None:
        """Make this standby the primary (``pg_ctl promote``); return once it takes writes."""
        self._run([str(self._bin / "pg_ctl"), "promote", "-D", str(self.data), "-w"])
        wait_for(lambda: not self.in_recovery(), timeout, "the promoted standby to take writes")

    def in_recovery(self) -> bool:
        """True while this server is a standby (read-only, replaying WAL)."""
        import psycopg

        with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return bool(row and row[0])

    def replication(self) -> list[tuple[str, str]]:
        """``(application_name, sync_state)`` of each standby streaming from this server."""
        import psycopg

        with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name, sync_state FROM pg_stat_replication ORDER BY 1"
            ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(  # noqa: S603 - PostgreSQL's own binaries, our arguments
            argv, user=self._user, capture_output=True, cwd=self.dir, check=False
        )
        if done.returncode != 0:
            text = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise ConfigError(f"{Path(argv[0]).name} failed ({done.returncode}): {text[-400:]}")

    # -- addresses ------------------------------------------------------------------------------

    def url_for(self, database: str) -> str:
        """The URL of ``database`` in this cluster (Unix socket, the superuser role)."""
        return (
            f"postgresql://{SUPERUSER}@/{quote(database)}"
            f"?host={quote(str(self.dir))}&port={self.port}"
        )

    @property
    def url(self) -> str:
        """The admin URL (the ``postgres`` maintenance database)."""
        return self.url_for("postgres")

    @property
    def pid(self) -> int | None:
        """The postmaster's process ID while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- life cycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (again, after :meth:`stop` or :meth:`kill`); return once it accepts
        connections."""
        if self.pid is not None:
            return
        argv = [
            str(self._bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-k", str(self.dir),
        ]  # fmt: skip
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - PostgreSQL's own binary
                argv, user=self._user, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir,
            )  # fmt: skip
        proc = self._proc

        def accepting() -> bool:
            if proc.poll() is not None:
                tail = self._log.read_text(errors="replace")[-600:]
                raise ConfigError(f"postgres exited with {proc.returncode}: {tail}")
            return self._accepts()

        wait_for(accepting, timeout, "the PostgreSQL server to accept connections")

    def _accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open sessions are ended, the data checkpointed)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend (the whole process group): a crash."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # SIGKILL is delivered asynchronously: a backend may still hold its client's socket for
        # a moment after the postmaster is reaped.  Return once every one is gone.
        wait_for(lambda: not _group_members(proc.pid), 10, "the PostgreSQL backends to die")

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg
        from psycopg import sql

        if name is None:
            self._databases += 1
            name = f"swipepay_{self._databases}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def close(self) -> None:
        """Stop the server and remove the cluster's directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members
