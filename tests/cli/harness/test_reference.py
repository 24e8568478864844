"""The machine reference of the benchmarks: two fixed units of work, timed in CPU."""

from __future__ import annotations

from swipepay.cli.harness import reference
from swipepay.cli.harness.reference import MachineReference


def test_python_unit_is_fixed_work() -> None:
    """Same result every time: the unit does not depend on state, input or the clock."""
    assert reference.python_unit() == reference.python_unit() > 0


def test_measure_gives_positive_cpu_times() -> None:
    ref = reference.measure(rounds=1)
    assert ref.verify_us > 0 and ref.python_us > 0


def test_mean_of_before_and_after() -> None:
    before, after = MachineReference(60.0, 100.0), MachineReference(80.0, 140.0)
    assert MachineReference.mean(before, after) == MachineReference(70.0, 120.0)
