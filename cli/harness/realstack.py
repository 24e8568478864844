"""The three programs (and the bench's virtual cards) as real processes over pcscd/vpcd and TLS.

Used by ``swipepay demo --real-stack`` and the process-level tests.  Every wait is bounded,
every process started here is stopped here (SIGTERM, then SIGKILL after a grace period), and
a missing pcscd / vsmartcard-vpcd / pyscard is a :class:`ConfigError` that says what to install.

pcscd is one per machine: a running pcscd that lists both vpcd readers is reused (and left
running); otherwise ``pcscd -f`` is started as our child and stopped at the end.  vpcd slot 0
(``Virtual PCD 00 00``, port 35963) holds the card, slot 1 (``Virtual PCD 00 01``, port 35964)
the phone.  A slot is PRESENT while a virtual card's TCP connection is up; after a card leaves,
:meth:`Stack.wait_slot` waits for EMPTY before the next one goes in (the pcscd 1.9.9 race in
hardware_notes/pcsc.md).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from swipepay.cli.harness.pcscd import CARD_SLOT, PHONE_SLOT, Pcscd, missing_stack, slot_state
from swipepay.cli.harness.processes import (
    child_env,
    free_port,
    port_open,
    stop,
    swipepay_argv,
    wait_for,
)
from swipepay.firmware_sim.errors import ConfigError

#: The PIN reaches ``swipepay phone run`` through this environment variable, never argv.
PIN_ENV: Final = "SWIPEPAY_PHONE_PIN"


# -- swipepay processes -----------------------------------------------------------------------


@dataclass
class Proc:
    """A swipepay subprocess whose output goes to a log file (never a pipe nobody drains)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stdin: IO[bytes] | None = None

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop(self.process)
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.output().strip().splitlines()[-3:]
            code = self.process.returncode
            raise ConfigError(f"{self.name} exited with {code}: {' | '.join(tail)}")


@dataclass
class Stack:
    """A lab, a pcscd, and the processes started on them; ``close()`` stops all of them."""

    home: Path
    workdir: Path
    pcscd: Pcscd | None = None
    procs: list[Proc] = field(default_factory=list)
    center_port: int | None = None

    @classmethod
    @contextlib.contextmanager
    def open(cls, home: Path, *, pcsc: bool = True) -> Iterator[Stack]:
        with tempfile.TemporaryDirectory(prefix="swipepay-stack-") as tmp:
            stack = cls(home, Path(tmp), Pcscd.ensure() if pcsc else None)
            try:
                yield stack
            finally:
                stack.close()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if self.pcscd is not None:
            self.pcscd.stop()

    def spawn(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None,
        stdin: bool = False,
    ) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 (this interpreter + our own arguments)
                swipepay_argv(*args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env=child_env(env),
            )
        proc = Proc(name, process, log_path, process.stdin)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    # -- the parts ---------------------------------------------------------------------------

    def start_center(self, port: int | None = None, timeout: float = 15.0) -> Proc:
        port = port or free_port()
        proc = self.spawn(
            "center", ["center", "serve", "--home", str(self.home), "--listen", f"127.0.0.1:{port}"]
        )

        def up() -> bool:
            proc.check_alive()
            return port_open(port)

        self._wait_or_stop(proc, up, timeout, f"the center on 127.0.0.1:{port}")
        self.center_port = port
        return proc

    def start_card(self, card: str, via: str | None = None, timeout: float = 10.0) -> Proc:
        reader, port = CARD_SLOT
        self.wait_slot(reader, False)
        args = ["card", "serve", "--home", str(self.home), "--card", card,
                "--vpcd", f"127.0.0.1:{port}"]  # fmt: skip
        proc = self.spawn(f"card-{card}", [*args, *(["--via", via] if via else [])])
        self._wait_present(proc, reader, timeout)
        return proc

    def start_phone(
        self, phone: str, *, pin: str | None = None, decline: bool = False,
        link: str | None = None, timeout: float = 10.0, prompt: bool = False,
    ) -> Proc:
        """The lab phone ``phone`` on vpcd slot 1 (or ``link``): confirming with ``pin`` (given
        through the environment), declining, or prompting on stdin (``prompt``)."""
        profile = self.home / "phones" / f"{phone}.json"
        reader, port = PHONE_SLOT
        url = link or f"vpcd:127.0.0.1:{port}"
        args = ["phone", "run", "--profile", str(profile), "--link", url]
        env: dict[str, str] = {}
        if pin is not None:
            args += ["--auto-confirm", "--pin-env", PIN_ENV]
            env[PIN_ENV] = pin
        elif decline:
            args.append("--decline")
        if link is None:
            self.wait_slot(reader, False)
        proc = self.spawn(f"phone-{phone}", args, env, stdin=prompt)
        if link is None:
            self._wait_present(proc, reader, timeout)
        else:
            self._wait_or_stop(proc, lambda: "listening" in proc.output(), timeout, f"{phone}")
        return proc

    def wait_slot(self, reader: str, present: bool, timeout: float = 5.0) -> None:
        wait_for(lambda: slot_state(reader) is present, timeout,
                 f"{reader} to be {'PRESENT' if present else 'EMPTY'}")  # fmt: skip

    def _wait_present(self, proc: Proc, reader: str, timeout: float) -> None:
        def up() -> bool:
            proc.check_alive()
            return slot_state(reader) is True

        self._wait_or_stop(proc, up, timeout, f"{proc.name} in {reader}")

    def _wait_or_stop(
        self, proc: Proc, predicate: Callable[[], bool], timeout: float, what: str
    ) -> None:
        try:
            wait_for(predicate, timeout, what)
        except ConfigError:
            self.stop(proc)
            raise

    def terminal(
        self, *args: str, card: str = f"pcsc:{CARD_SLOT[0]}", phone: str = f"pcsc:{PHONE_SLOT[0]}",
        center: str | None = None, timeout: float = 60.0,
    ) -> tuple[int, dict[str, Any]]:
        """Run ``swipepay terminal run --json`` to its end; (exit code, JSON result or {})."""
        proc = self.terminal_start(*args, card=card, phone=phone, center=center)
        try:
            proc.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise ConfigError(f"the terminal did not finish within {timeout:.0f} s") from None
        return self.terminal_result(proc)

    def terminal_start(
        self, *args: str, card: str = f"pcsc:{CARD_SLOT[0]}", phone: str = f"pcsc:{PHONE_SLOT[0]}",
        center: str | None = None,
    ) -> Proc:
        center = center or f"127.0.0.1:{self.center_port}"
        argv = ["terminal", "run", "--home", str(self.home), "--card", card, "--phone", phone,
                "--center", center, "--json", *args]  # fmt: skip
        return self.spawn("terminal", argv)

    def terminal_result(self, proc: Proc) -> tuple[int, dict[str, Any]]:
        self.procs.remove(proc)
        out = proc.output()
        start = out.find("{\n")
        try:
            result = json.loads(out[start:]) if start >= 0 else {}
        except ValueError:
            result = {}
        code = proc.process.returncode
        if not result:
            result = {"error": out.strip()[-500:]}
        return int(code), result


# -- swipepay demo --real-stack --------------------------------------------------------------


def run_real_demo(home: Path | None, as_json: bool) -> int:
    """The demo's story (cli.demo.SCENARIOS), each part its own process; same JSON output."""
    import click

    from swipepay.center.core import Center
    from swipepay.center.lab import Lab, create_lab
    from swipepay.cli.demo import SCENARIOS

    echo: Callable[..., None] = (lambda *a, **k: None) if as_json else click.echo
    why = missing_stack()
    if why is not None:
        raise ConfigError(f"demo --real-stack needs the PC/SC stack: {why}; "
                          "or run `swipepay demo` (all in one process)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="swipepay-demo-") as tmp:
        root = home or Path(tmp) / "lab"
        if not (root / "lab.json").exists():
            create_lab(root)
        lab = Lab(root)
        pins = lab.pins()
        echo(click.style(f"swipepay demo --real-stack — lab {root}", bold=True))
        results: list[dict[str, Any]] = []
        stans: list[str | None] = []
        with Stack.open(root) as stack:
            stack.start_center()
            echo(f"center: swipepay center serve on 127.0.0.1:{stack.center_port} (TLS 1.3)")
            for n, sc in enumerate(SCENARIOS, 1):
                result = _real_scenario(stack, lab, pins, n, sc, stans, echo)
                stans.append(result.pop("_stan"))
                results.append(result)
        center = Center.open(lab.database_url, lab.center_keys())
        try:
            balanced = center.check_balanced()
        finally:
            center.close()
        good = sum(r["as_expected"] for r in results)
        echo(f"\nledger balanced: {balanced}; {good}/{len(SCENARIOS)} ended as expected")
        if as_json:
            click.echo(json.dumps(
                {"lab": str(root) if home else None, "ledger_balanced": balanced,
                 "transactions": results}, indent=2))  # fmt: skip
        return 0 if good == len(SCENARIOS) and balanced else 1


def _real_scenario(
    stack: Stack, lab: Any, pins: dict[str, str], n: int, sc: Any, stans: list[str | None],
    echo: Callable[..., None],
) -> dict[str, Any]:
    from swipepay.firmware_sim.transaction import TXN_TYPES, format_amount

    spec = TXN_TYPES[sc.type]
    amount = f" {format_amount(sc.amount)}" if spec.has_amount else ""
    merchant = lab.terminal_config(sc.terminal).merchant_name
    echo(f"\n{n}. {sc.title + ' — ' if sc.title else ''}{spec.label}{amount} at {merchant}"
         f" ({sc.terminal})")  # fmt: skip
    card, _, via = (sc.card or "").partition("?via=")
    started: list[Proc] = []
    args = ["--terminal-id", sc.terminal, "--type", sc.type.value,
            "--phone-timeout", "3", "--card-timeout", "10"]  # fmt: skip
    if spec.has_amount:
        args += ["--amount", f"{sc.amount // 100}.{sc.amount % 100:02d}"]
    try:
        if sc.completes:
            ref = stans[sc.completes - 1]
            args += ["--completes", ref or "000000"]
            echo(f"   merchant-initiated, completes the pre-authorization STAN {ref}")
        else:
            bound = lab.phones()[sc.phone]
            pin = pins[bound]
            if sc.wrong_pin:
                pin = f"{(int(pin) + 1) % 10_000:04d}"
            started.append(stack.start_card(card, "insert" if via == "insert" else "tap"
                                            if via == "tap" else None))
            started.append(stack.start_phone(sc.phone, pin=None if sc.choice == "decline"
                                             else pin, decline=sc.choice == "decline"))
            how = via if via in ("insert", "tap") else "insert (its chip; vpcd has no stripe)"
            echo(f"   card process: {card} on {CARD_SLOT[0]} by {how}; "
                 f"phone process: {sc.phone} on {PHONE_SLOT[0]}")  # fmt: skip
        code, result = stack.terminal(*args)
    finally:
        for proc in started:
            stack.stop(proc)
    if "error" in result:
        raise ConfigError(f"terminal failed (exit {code}): {result['error']}")
    by_host = result["ending"] in ("APPROVED", "DECLINED_BY_HOST")
    got = result["response_code"] if by_host else result["ending"]
    ok = got == sc.expect
    for s in result["steps"]:
        echo(f"   [{s['step']}] {s['text']:<68} {s['ms']:7.2f} ms")
    echo(f"   -> {result['ending']} {result['response_code'] or ''} exit {code};"
         f" {result['total_ms']:.1f} ms; {result['apdu_count']} APDUs"
         + ("" if ok else f"  [expected {sc.expect}]"))  # fmt: skip
    return {
        "_stan": result["stan"],
        "title": sc.title or spec.label,
        "type": sc.type.value,
        "amount": sc.amount,
        "currency": result["currency"],
        "terminal": sc.terminal,
        "card": card or None,
        "phone": sc.phone,
        "ending": result["ending"],
        "response_code": result["response_code"],
        "auth_code": result["auth_code"],
        "expected": sc.expect,
        "as_expected": ok,
        "steps": result["steps"],
        "total_ms": result["total_ms"],
        "apdu_count": result["apdu_count"],
        "bytes_to_phone": result["bytes_to_phone"],
        "bytes_from_phone": result["bytes_from_phone"],
    }
