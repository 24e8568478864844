"""The benchmark helpers: statistics, the commit baseline, bench terminals, running balances."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.center.core import Center
from swipepay.center.lab import Lab, create_lab
from swipepay.center.storage import SQLiteStorage
from swipepay.cli.harness.benchmarks import (
    CpuSplit,
    _precompute,
    add_bench_terminals,
    commit_baseline,
    percentile,
    process_tree_cpu,
)
from swipepay.firmware_sim.hostmsg import AuthRequest


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 1) == 7.0


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_is_a_member_and_monotone(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p in values and p <= percentile(values, 100)


def test_process_tree_cpu_counts_descendants_and_ended_children() -> None:
    import os
    import subprocess
    import sys

    me = os.getpid()
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    before = process_tree_cpu(me)
    child = subprocess.Popen([sys.executable, "-c", busy + "input()"], stdin=subprocess.PIPE)
    try:
        from swipepay.cli.harness.processes import wait_for

        def child_busy() -> bool:
            return process_tree_cpu(me).get(child.pid, 0.0) >= 0.25

        wait_for(child_busy, 30, "the child's CPU time")
        living = process_tree_cpu(me)
        assert child.pid in living
        split = CpuSplit.between(me, before, living)
        assert split.helpers_s >= 0.25 and split.root_s >= 0
    finally:
        child.communicate(b"\n", timeout=30)
    # reaped: its time is now in this process's cutime, so the difference still counts it
    after = process_tree_cpu(me)
    assert child.pid not in after
    assert CpuSplit.between(me, before, after).total_s >= 0.25
    assert process_tree_cpu(2**22 + 1) == {}


def test_commit_baseline_cleans_up(tmp_path: Path) -> None:
    assert commit_baseline(tmp_path, 0.05) > 0
    assert list(tmp_path.iterdir()) == []


def test_bench_terminals_and_running_balances(tmp_path: Path) -> None:
    from swipepay.firmware_sim.hostlink import iso8583 as codec

    lab = create_lab(tmp_path / "lab")
    terms = add_bench_terminals(lab.root, 2)
    assert [t.kind for t in terms] == ["pos", "atm"]
    assert (lab.root / "terminals" / terms[0].terminal_id / "tls.crt").exists()
    center = Center.open(Lab(lab.root).db_path, lab.center_keys())
    try:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        for term in terms:
            for _, frame in _precompute(term, 6, 1):
                req = codec.parse_request(codec.decode(frame[2:]))
                assert isinstance(req, AuthRequest)
                assert center.authorize(req, now).approved
        assert center.check_balanced()
    finally:
        center.close()
    # The trigger-kept balances equal the sums of the entries, also for a reopened database.
    storage = SQLiteStorage(lab.db_path)
    try:
        with storage.transaction():
            db = storage._db
            sums = dict(db.execute("SELECT account_id, SUM(amount) FROM entries GROUP BY 1"))
            kept = dict(db.execute("SELECT account_id, amount FROM balances"))
            db.execute("DROP TRIGGER entries_balance")  # as a database from before the table
    finally:
        storage.close()
    assert sums == kept and len(sums) > 4
    storage = SQLiteStorage(lab.db_path)  # rebuilds the table and the trigger
    try:
        with storage.transaction():
            rebuilt = dict(storage._db.execute("SELECT account_id, amount FROM balances"))
            assert all(storage.entry_sum(a) == s for a, s in sums.items())
            assert storage.entry_sum("no-such-account") == 0
    finally:
        storage.close()
    assert rebuilt == sums


def test_precompute_mix_and_completion_reference(tmp_path: Path) -> None:
    from swipepay.firmware_sim.hostlink import iso8583 as codec

    lab = create_lab(tmp_path / "lab")
    pos = add_bench_terminals(lab.root, 1)[0]
    work = _precompute(pos, 4, 999_999)
    assert [k for k, _ in work] == ["purchase", "preauth", "completion", "purchase"]
    fields = [codec.decode(f[2:]) for _, f in work]
    assert [f["11"] for f in fields] == ["999999", "000000", "000001", "000002"]
    assert fields[2]["90"][4:10] == fields[1]["11"]  # the completion names the pre-auth
    with pytest.raises(KeyError):
        _precompute(pos.__class__(**{**pos.__dict__, "kind": "kiosk"}), 1, 1)


def test_median_run_is_a_whole_run_by_center_cpu() -> None:
    import dataclasses

    from swipepay.cli.harness.benchmarks import CenterBench, median_run

    names = [f.name for f in dataclasses.fields(CenterBench) if f.default is dataclasses.MISSING]
    base = dict.fromkeys(names, 0)

    def run(cpu: float, rate: float) -> CenterBench:
        values: dict[str, object] = {**base, "configuration": "SQLite x 1", "storage": "SQLite"}
        values.update(center_cpu_us_per_approval=cpu, approvals_per_s=rate, codes={},
                      approvals_by_type={}, errors=[])  # fmt: skip
        return CenterBench(**values)  # type: ignore[arg-type]

    runs = [run(500, 1), run(400, 2), run(450, 3), run(600, 4)]
    chosen = median_run(runs)
    assert (chosen.center_cpu_us_per_approval, chosen.approvals_per_s) == (450, 3)
    assert median_run(runs[:1]) is runs[0]
