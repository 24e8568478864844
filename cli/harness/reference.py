"""A fixed unit of work timed in the same run as a benchmark: the machine's speed, so that CPU
figures taken on different machines, or on one machine at different moments, can be compared.

Why: CPU time per approval moves less with the machine than throughput does, but it still
moves.  On one 2-core machine here a P-256 verification took 66 µs of CPU at one hour and
87-95 µs half an hour later (a busier host under the same virtual machine), and the center's
CPU per approval rose with it, from 475 to 615 µs, without a line of code changing.  Dividing
by a reference measured in the same run takes that slow drift out; it does not take out the
contention inside a run (runs of one build back to back still spread by ±20 % here), so compare
the medians of several interleaved runs.

Two references, independent of swipepay's own code so that a change to the center never moves
them:

* ``verify_us``: one ECDSA P-256 verification through ``cryptography`` (OpenSSL): the same
  operation the center performs once per approval, and what ``openssl speed ecdsap256`` shows;
* ``python_us``: a fixed piece of pure Python (dict, str, sort, json of the standard library):
  the interpreter's speed, which is most of the center's CPU.

Each is the median CPU time (``time.process_time``) of several rounds, so a round that lost the
core to another process does not count.  Measured on an otherwise idle machine (between
benchmark runs): it tells the machine's base speed, not the contention the benchmark's own
load adds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Operations per round and rounds per measurement: ~0.2 s in all on a 2026 x86-64 core.
_VERIFIES = 200
_PYTHON_UNITS = 200
_ROUNDS = 5


@dataclass(frozen=True)
class MachineReference:
    """CPU microseconds of the two reference operations on this machine, now."""

    verify_us: float
    python_us: float

    @staticmethod
    def mean(a: MachineReference, b: MachineReference) -> MachineReference:
        """The reference for a run measured between ``a`` (before) and ``b`` (after)."""
        return MachineReference((a.verify_us + b.verify_us) / 2, (a.python_us + b.python_us) / 2)


def python_unit() -> int:
    """The fixed pure-Python work: build, sort, format and serialise 100 small records."""
    records = [
        {"id": f"T{n:05d}", "amount": (n * 7919) % 10_007, "ok": n % 3 != 0} for n in range(100)
    ]
    records.sort(key=lambda r: (r["amount"], r["id"]))
    text = json.dumps(records, separators=(",", ":"))
    return len(text) + sum(len(f"{r['id']}:{r['amount']}") for r in records if r["ok"])


def _verify_unit() -> Callable[[], None]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    data = b"swipepay machine reference"
    algorithm = ec.ECDSA(hashes.SHA256())
    signature = key.sign(data, algorithm)

    def verify() -> None:
        public.verify(signature, data, algorithm)

    return verify


def _median_us(work: Callable[[], object], count: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(count):
            work()
        samples.append((time.process_time() - t0) * 1e6 / count)
    return statistics.median(samples)


def measure(rounds: int = _ROUNDS) -> MachineReference:
    """Time both references now (median of ``rounds`` rounds each)."""
    verify = _verify_unit()
    verify()  # first call: lazy initialisation inside OpenSSL
    python_unit()
    return MachineReference(
        verify_us=_median_us(verify, _VERIFIES, rounds),
        python_us=_median_us(python_unit, _PYTHON_UNITS, rounds),
    )
