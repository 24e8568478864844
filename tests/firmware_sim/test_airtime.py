"""The ISO 14443-A air-time formula: hand-computed cases, chaining, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.airtime import EMVCO, ISO_106, AirSpec, air_time, frame_etu

ETU_US = 128 / 13.56


def test_etu_and_frame_length() -> None:
    assert ISO_106.etu_s * 1e6 == pytest.approx(9.4395, abs=1e-3)
    assert round(ISO_106.bit_rate) == 105_938
    assert frame_etu(1) == 11
    assert frame_etu(43) == 9 * 43 + 2


def test_the_fact_sheet_example() -> None:
    # 40-byte command + 100-byte response: (43*9+2) + (103*9+2) etu + 2 gaps of 1172/fc.
    t = air_time([(b"\x00" * 40, b"\x90" * 100)])
    expected_etu = 389 + 929 + 2 * 1172 / 128
    assert t.seconds == pytest.approx(expected_etu * ETU_US / 1e6)
    assert t.ms == pytest.approx(12.6, abs=0.1)
    assert (t.frames, t.bytes_to_card, t.bytes_to_reader, t.air_bytes) == (2, 40, 100, 146)


def test_lengths_or_bytes_give_the_same() -> None:
    assert air_time([(5, 2), (300, 258)]) == air_time(
        [(b"1" * 5, b"2" * 2), (b"3" * 300, b"4" * 258)]
    )


def test_chaining_adds_blocks_and_acks() -> None:
    spec = AirSpec(fsc=32, fsd=32)  # 29 data bytes per block
    t = air_time([(60, 30)], spec)
    # command: 29 + 29 + 2 -> 3 I-blocks + 2 R(ACK); response: 29 + 1 -> 2 I-blocks + 1 R(ACK)
    assert t.frames == 8
    assert t.air_bytes == (32 + 32 + 5) + 2 * 3 + (32 + 4) + 3


def test_emvco_gap_is_slower() -> None:
    ex = [(10, 20)] * 6
    assert air_time(ex, EMVCO).seconds > air_time(ex).seconds


def test_empty_and_invalid() -> None:
    assert air_time([]).seconds == 0
    with pytest.raises(ValueError):
        air_time([(0, 2)])
    with pytest.raises(ValueError):
        air_time([(5, 1)])
    with pytest.raises(ValueError):
        frame_etu(0)
    with pytest.raises(ValueError):
        air_time([(5, 2)], AirSpec(fsc=3))


@given(st.lists(st.tuples(st.integers(1, 2000), st.integers(2, 2000)), max_size=20))
def test_monotone_and_counts(exchanges: list[tuple[int, int]]) -> None:
    t = air_time(exchanges)
    assert t.bytes_to_card == sum(c for c, _ in exchanges)
    assert t.air_bytes >= t.bytes_to_card + t.bytes_to_reader + 6 * len(exchanges)
    bigger = air_time([*exchanges, (1, 2)])
    assert bigger.seconds > t.seconds
    assert "106 kbit/s" in ISO_106.describe()
