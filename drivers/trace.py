"""A phone link that records every APDU it carries (the pyserial ``spy://`` idea).

Wrap any :class:`~drivers.base.PhoneLink` in :class:`TracingLink` and each exchange becomes one
JSON line: time offset, direction, instruction name, command and response in hex, status word,
duration.  What is written is exactly what crossed the link: after AUTHENTICATE the bodies are
secure-channel frames, so only ciphertext is ever recorded, and the PIN never crosses the link in
clear (it travels as a format-4 PIN block under a DUKPT key, inside a sealed frame), so a trace
cannot leak it.  :class:`TracingHost` adds the terminal <-> center messages as summaries (type,
amount, STAN, response code; never the PIN block).  ``swipepay trace FILE`` renders the result
(see :mod:`firmware_sim.trace_view` for the record format).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import IO, Any

from swipepay.drivers.base import Host, PhoneLink
from swipepay.drivers.runner import Observer, RunEvent, StepBegan
from swipepay.firmware_sim.errors import SwipepayError
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.trace_view import TRACE_VERSION, instruction_name
from swipepay.firmware_sim.transaction import Transaction


class TraceWriter:
    """Appends trace records to an open text file, one JSON object per line, flushed each time
    so a trace survives a crash of the program writing it."""

    def __init__(self, out: IO[str], clock: Callable[[], float] = time.perf_counter) -> None:
        self._out = out
        self._clock = clock
        self._t0 = clock()

    def now_ms(self) -> float:
        return round((self._clock() - self._t0) * 1000, 3)

    def write(self, kind: str, **fields: Any) -> None:
        record = {"v": TRACE_VERSION, "kind": kind, "t_ms": self.now_ms(), **fields}
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._out.flush()

    def observer(self) -> Observer:
        """An observer for :func:`drivers.runner.run_transaction` that records method steps."""

        def observe(event: RunEvent) -> None:
            if isinstance(event, StepBegan):
                self.write("step", step=int(event.step), text=event.step.name)

        return observe


class TracingLink:
    """A PhoneLink that forwards to ``inner`` and records each exchange."""

    def __init__(self, inner: PhoneLink, writer: TraceWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.url = f"trace+{inner.url}"

    def connect(self, timeout: float) -> None:
        try:
            self.inner.connect(timeout)
        except SwipepayError as exc:
            self.writer.write("link", event="connect-failed", detail=str(exc))
            raise
        self.writer.write("link", event="connect", detail=self.inner.url)

    def transmit(self, apdu: bytes) -> bytes:
        started = self.writer.now_ms()
        try:
            response = self.inner.transmit(apdu)
        except SwipepayError as exc:
            self.writer.write(
                "apdu", dir="terminal->phone", ins=instruction_name(apdu), cmd=apdu.hex(),
                rsp=None, sw=None, ms=round(self.writer.now_ms() - started, 3), error=str(exc),
            )
            raise
        sw = f"{int.from_bytes(response[-2:], 'big'):04X}" if len(response) >= 2 else None
        self.writer.write(
            "apdu", dir="terminal->phone", ins=instruction_name(apdu), cmd=apdu.hex(),
            rsp=response.hex(), sw=sw, ms=round(self.writer.now_ms() - started, 3),
        )
        return response

    def disconnect(self) -> None:
        self.inner.disconnect()
        self.writer.write("link", event="disconnect")


def _txn_summary(txn: Transaction) -> str:
    return f"{txn.type.value} {txn.amount} {txn.currency} STAN {txn.stan} TID {txn.terminal_id}"


class TracingHost:
    """A Host that records what goes to the center and what comes back, as one-line summaries."""

    def __init__(self, inner: Host, writer: TraceWriter) -> None:
        self.inner = inner
        self.writer = writer

    def authorize(self, request: AuthRequest, timeout: float) -> AuthResponse:
        extra = " + PIN block + confirmation" if request.pin_block else ""
        self.writer.write("host", dir="terminal->center", text=_txn_summary(request.txn) + extra)
        return self._answer(lambda: self.inner.authorize(request, timeout))

    def reverse(self, txn: Transaction) -> AuthResponse:
        self.writer.write("host", dir="terminal->center", text="reversal " + _txn_summary(txn))
        return self._answer(lambda: self.inner.reverse(txn))

    def settle(self, txn: Transaction) -> None:
        self.inner.settle(txn)

    def _answer(self, call: Callable[[], AuthResponse]) -> AuthResponse:
        try:
            answer = call()
        except SwipepayError as exc:
            self.writer.write("host", dir="center->terminal", text=f"no answer: {exc}")
            raise
        auth = f" auth {answer.auth_code}" if answer.auth_code else ""
        self.writer.write("host", dir="center->terminal", text=f"RC {answer.response_code}{auth}")
        return answer
