"""The signature verifier: wire format, the child's loop, and the real child process."""

from __future__ import annotations

import asyncio
import io
import os
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.center import verifier
from swipepay.center.verifier import SignatureCheck, VerifierGone, VerifierProcess
from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.errors import DecodeError

KEY = ecc.generate_key()
POINT = ecc.encode_point(KEY.public_key())
DIGEST = bytes(range(32))
GOOD = SignatureCheck(POINT, DIGEST, ecc.sign_prehashed(KEY, DIGEST))
BAD = SignatureCheck(POINT, bytes(32), GOOD.signature)  # same signature, other digest
NOT_A_POINT = SignatureCheck(b"\x02" + b"\xff" * 32, DIGEST, GOOD.signature)


def test_check_tells_good_from_bad() -> None:
    assert verifier.check(GOOD) is True
    assert verifier.check(BAD) is False
    assert verifier.check(NOT_A_POINT) is False


def test_item_lengths_are_enforced() -> None:
    with pytest.raises(DecodeError):
        SignatureCheck(POINT, DIGEST, GOOD.signature[:63])
    with pytest.raises(DecodeError):
        SignatureCheck(POINT[:32], DIGEST, GOOD.signature)


@given(
    st.lists(
        st.tuples(
            st.binary(min_size=33, max_size=33),
            st.binary(min_size=32, max_size=32),
            st.binary(min_size=64, max_size=64),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_request_round_trip(raw: list[tuple[bytes, bytes, bytes]]) -> None:
    items = [SignatureCheck(*r) for r in raw]
    data = verifier.encode_request(items)
    count = int.from_bytes(data[:2], "big")
    assert verifier.decode_items(count, data[2:]) == items


@given(st.integers(0, 5), st.binary(max_size=600))
def test_any_request_body_decodes_or_is_a_decode_error(count: int, body: bytes) -> None:
    try:
        items = verifier.decode_items(count, body)
    except DecodeError:
        return
    assert len(items) == count > 0


@given(st.binary(max_size=50))
def test_results_decode_or_are_a_decode_error(data: bytes) -> None:
    try:
        results = verifier.decode_results(data)
    except DecodeError:
        assert any(b > 1 for b in data)
        return
    assert verifier.encode_results(results) == data


def test_child_loop_answers_in_order_and_stops_on_garbage() -> None:
    source = io.BytesIO(verifier.encode_request([GOOD, BAD, GOOD]) + b"\x00\x05garbage")
    sink = io.BytesIO()
    assert verifier.serve(source, sink) == 2  # the malformed second request stops it
    assert sink.getvalue() == b"\x01\x00\x01"
    sink = io.BytesIO()
    assert verifier.serve(io.BytesIO(verifier.encode_request([BAD])), sink) == 0
    assert sink.getvalue() == b"\x00"


def test_process_checks_and_fails_cleanly_when_killed() -> None:
    async def run() -> None:
        proc = await VerifierProcess.start()
        try:
            futures = [proc.submit(i) for i in (GOOD, BAD, NOT_A_POINT, GOOD)]
            results = await asyncio.wait_for(
                asyncio.gather(*(f for f in futures if f is not None)), 10
            )
            assert results == [True, False, False, True]
            assert proc.answered == 4
            if hasattr(os, "SCHED_BATCH"):  # Linux: the child must not preempt the event loop
                assert os.sched_getscheduler(proc.pid) == os.SCHED_BATCH
            os.kill(proc.pid, signal.SIGKILL)
            late = proc.submit(GOOD)
            assert late is not None  # not known to be dead yet
            with pytest.raises(VerifierGone):
                await asyncio.wait_for(late, 10)
            assert proc.failed
            assert proc.submit(GOOD) is None  # the server verifies inline from now on
        finally:
            await proc.close()

    asyncio.run(run())
