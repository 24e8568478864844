"""Phone-signature checks in a helper process, so they run on the other core.

Why: the center decides on one event-loop thread (the only user of the SQLite connection), and
under load that thread is the bottleneck while the second core is mostly idle.  The ECDSA
verification of the phone's confirmation is the largest piece of its work that needs no
database state.  A helper *thread* would fight the loop for the GIL at every hand-over; a child
*process* shares no GIL (CHANGELOG.md has the figures).  The server sends each
check as its request arrives and collects the answer when the request's batch is cut, so the
verification of a batch happens while the batch before it is decided and committed.

Wire format between the center and its verifier (the child's stdin/stdout: our own two
processes, never the network)::

    request  = count (2 bytes, big-endian) || count x item
    item     = phone key (33, compressed P-256 point) || digest (32) || signature (64, r||s)
    response = count x result byte (:data:`RESULT`), in the order of the items

Only public data crosses it: enrolled public keys, digests and signatures.  The child checks
with :func:`check`, the very function the center uses inline, so a result from either place
means the same.  If the child is gone, answers nonsense or keeps a batch waiting longer than the
server allows (:meth:`VerifierProcess.give_up`), every open check fails, new ones are refused,
and the center verifies inline again for the rest of its run (it does not restart the child).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final

from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.firmware_sim.confirmation import verify_confirmation
from swipepay.firmware_sim.ecc import POINT_LEN, SIGNATURE_LEN, decode_point
from swipepay.firmware_sim.errors import DecodeError, SwipepayError

_log = logging.getLogger(__name__)

DIGEST_LEN: Final = 32
ITEM_LEN: Final = POINT_LEN + DIGEST_LEN + SIGNATURE_LEN
COUNT_LEN: Final = 2
MAX_ITEMS: Final = 0xFFFF
#: Result byte per item.
RESULT: Final[dict[bool, int]] = {True: 0x01, False: 0x00}
_RESULT_OF: Final[dict[int, bool]] = {v: k for k, v in RESULT.items()}


@dataclass(frozen=True)
class SignatureCheck:
    """One confirmation to check: the card's enrolled phone key, the digest, the signature."""

    phone_key: bytes
    digest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        lengths = (len(self.phone_key), len(self.digest), len(self.signature))
        if lengths != (POINT_LEN, DIGEST_LEN, SIGNATURE_LEN):
            raise DecodeError(f"signature check item has lengths {lengths}")


@functools.lru_cache(maxsize=4096)
def _public_key(point: bytes) -> ec.EllipticCurvePublicKey:
    """Enrolled phone keys, decoded once (point decompression costs on every request)."""
    return decode_point(point)


def check(item: SignatureCheck) -> bool:
    """True if ``item.signature`` is the phone's signature of ``item.digest``."""
    try:
        verify_confirmation(_public_key(item.phone_key), item.digest, item.signature)
    except SwipepayError:  # SecurityError, or DecodeError for a key that is not a point
        return False
    return True


# -- the wire format (sans-IO) ------------------------------------------------------------------


def encode_request(items: Sequence[SignatureCheck]) -> bytes:
    if not 0 < len(items) <= MAX_ITEMS:
        raise DecodeError(f"a verifier request holds 1..{MAX_ITEMS} items")
    return len(items).to_bytes(COUNT_LEN, "big") + b"".join(
        i.phone_key + i.digest + i.signature for i in items
    )


def decode_items(count: int, body: bytes) -> list[SignatureCheck]:
    """The ``count`` items of a request body (everything after the count)."""
    if count == 0 or len(body) != count * ITEM_LEN:
        raise DecodeError(f"verifier request: {len(body)} bytes for {count} items")
    out = []
    for n in range(count):
        item = body[n * ITEM_LEN : (n + 1) * ITEM_LEN]
        out.append(
            SignatureCheck(
                item[:POINT_LEN],
                item[POINT_LEN : POINT_LEN + DIGEST_LEN],
                item[POINT_LEN + DIGEST_LEN :],
            )
        )
    return out


def encode_results(results: Sequence[bool]) -> bytes:
    return bytes(RESULT[r] for r in results)


def decode_results(data: bytes) -> list[bool]:
    if any(b not in _RESULT_OF for b in data):
        raise DecodeError("verifier answered a byte that is not a result")
    return [_RESULT_OF[b] for b in data]


# -- the child process --------------------------------------------------------------------------


def serve(source: BinaryIO, sink: BinaryIO) -> int:
    """Answer requests from ``source`` on ``sink`` until end of input: 0, or 2 on a malformed
    request (the parent never sends one; it means the pipe is out of step, so stop)."""
    while True:
        head = source.read(COUNT_LEN)
        if not head:
            return 0
        count = int.from_bytes(head, "big")
        try:
            if len(head) != COUNT_LEN:
                raise DecodeError("verifier request: truncated count")
            items = decode_items(count, source.read(count * ITEM_LEN))
        except DecodeError as exc:
            print(f"swipepay verifier: {exc}", file=sys.stderr)
            return 2
        sink.write(encode_results([check(i) for i in items]))
        sink.flush()


def _no_wakeup_preemption() -> None:
    """Run as SCHED_BATCH (Linux): a woken batch task does not preempt the running one.

    Without it, the center's every write to our stdin tends to wake us on the CPU the event loop
    is running on and preempt the loop for the whole verification, which is the opposite of the
    point; as a batch task we wait for (or migrate to) the other core instead.
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))


def main() -> int:
    _no_wakeup_preemption()
    try:
        return serve(sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


# -- the parent's side ------------------------------------------------------------------------


class VerifierProcess:
    """The child as seen from the center's event loop.

    :meth:`submit` queues a check and returns a future for its result; every check submitted in
    one loop iteration goes out in one write, and results come back in order.  When the child
    fails, every open future gets :class:`VerifierGone` and :meth:`submit` returns ``None``.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._outbox: list[SignatureCheck] = []
        self._waiting: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._flush_scheduled = False
        self._reader = asyncio.get_running_loop().create_task(self._read_results())
        self.failed = False
        #: Results received so far (for tests and figures).
        self.answered = 0

    @classmethod
    async def start(cls) -> VerifierProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from swipepay.center.verifier import main; sys.exit(main())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def submit(self, item: SignatureCheck) -> asyncio.Future[bool] | None:
        if self.failed:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._outbox.append(item)
        self._waiting.append(fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        items, self._outbox = self._outbox, []
        if self.failed or not items:
            return
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            for start in range(0, len(items), MAX_ITEMS):
                stdin.write(encode_request(items[start : start + MAX_ITEMS]))
        except (OSError, RuntimeError) as exc:  # pipe closed under us
            self._fail(exc)

    async def _read_results(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while True:
                data = await stdout.read(65536)
                if not data:
                    raise EOFError("verifier process ended")
                results = decode_results(data)
                if len(results) > len(self._waiting):
                    raise DecodeError("verifier answered more results than were asked")
                self.answered += len(results)
                for ok in results:
                    fut = self._waiting.popleft()
                    if not fut.done():
                        fut.set_result(ok)
        except (OSError, EOFError, DecodeError) as exc:
            self._fail(exc)

    def give_up(self, why: str) -> None:
        """Stop using a child that does not answer in time (hung, or starved): every open check
        fails now, later ones are verified inline, and the child is killed."""
        self._fail(TimeoutError(why))
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()

    def _fail(self, exc: BaseException) -> None:
        if not self.failed:
            _log.error(
                "signature verifier process failed (%s); verifying inline from now on",
                type(exc).__name__,
            )
        self.failed = True
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(VerifierGone("signature verifier process failed"))

    async def close(self) -> None:
        self.failed = True
        if self._proc.returncode is None and self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self._fail(EOFError("closed"))


class VerifierGone(Exception):
    """The verifier process cannot answer; the center verifies inline instead."""
