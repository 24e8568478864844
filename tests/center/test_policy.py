"""Terminal-kind table and expiry dates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from swipepay.center.policy import TERMINAL_KINDS, is_expired, parse_expiry
from swipepay.firmware_sim.transaction import TxnType


def test_every_type_is_allowed_on_exactly_one_terminal_kind() -> None:
    for t in TxnType:
        kinds = [k for k, spec in TERMINAL_KINDS.items() if t in spec.allowed]
        assert len(kinds) == 1, (t, kinds)
    assert TxnType.WITHDRAWAL in TERMINAL_KINDS["atm"].allowed
    assert TxnType.PURCHASE in TERMINAL_KINDS["pos"].allowed


@pytest.mark.parametrize(
    ("yymm", "expected"),
    [("2506", (2025, 6)), ("0001", (2000, 1)), ("2513", None), ("25", None),
     ("12²²", None), ("٢٥٠٦", None)],
)  # fmt: skip
def test_parse_expiry(yymm: str, expected: tuple[int, int] | None) -> None:
    assert parse_expiry(yymm) == expected


def test_card_is_valid_through_its_expiry_month() -> None:
    assert not is_expired("2506", datetime(2025, 6, 30, 23, 59, tzinfo=UTC))
    assert is_expired("2506", datetime(2025, 7, 1, tzinfo=UTC))
    assert is_expired("2412", datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        is_expired("99", datetime(2025, 1, 1, tzinfo=UTC))
