"""ISO/IEC 7816-4 status words: the values the design and the standards fix, and the families."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import DecodeError, LocalError, SecurityError, WrongLength
from swipepay.firmware_sim.statuswords import DESCRIPTIONS, SW, describe, tries_left

# Values fixed by hardware_notes/design.md §4 and hardware_notes/standards.md.
FIXED = {
    "OK": 0x9000,
    "WRONG_LENGTH": 0x6700,
    "SECURITY_NOT_SATISFIED": 0x6982,
    "AUTH_METHOD_BLOCKED": 0x6983,
    "CONDITIONS_NOT_SATISFIED": 0x6985,
    "WRONG_DATA": 0x6A80,
    "FILE_NOT_FOUND": 0x6A82,
    "RECORD_NOT_FOUND": 0x6A83,
    "REFERENCED_DATA_NOT_FOUND": 0x6A88,
    "WRONG_P1P2": 0x6B00,
    "INS_NOT_SUPPORTED": 0x6D00,
    "CLA_NOT_SUPPORTED": 0x6E00,
    "NO_PRECISE_DIAGNOSIS": 0x6F00,
}


@pytest.mark.parametrize(("name", "value"), sorted(FIXED.items()))
def test_fixed_values(name: str, value: int) -> None:
    assert SW[name] == value


def test_every_member_is_described_and_unique() -> None:
    assert set(DESCRIPTIONS) == set(SW)
    assert len({int(m) for m in SW}) == len(SW)  # no aliases hiding a typo
    assert len(set(DESCRIPTIONS.values())) == len(DESCRIPTIONS)


def test_error_hierarchy_status_words_are_known() -> None:
    """The shared error classes answer with status words this table can describe."""
    for error in (DecodeError, WrongLength, SecurityError, LocalError):
        assert "unknown" not in describe(error.status_word)


@pytest.mark.parametrize(
    ("sw", "words"),
    [
        (0x9000, ["9000", "normal"]),
        (0x6A88, ["6A88", "referenced data"]),
        (0x6110, ["6110", "16 response bytes"]),
        (0x6100, ["6100", "256 response bytes"]),
        (0x6C1C, ["6C1C", "wrong Le", "28"]),
        (0x63C2, ["63C2", "2 tries left"]),
        (0x63C0, ["0 tries left"]),
        (0x6A99, ["6A99", "wrong parameters", "unknown SW2"]),
        (0x1234, ["1234", "unknown status word"]),
    ],
)
def test_describe(sw: int, words: list[str]) -> None:
    text = describe(sw)
    for word in words:
        assert word in text


@given(st.integers(0, 0xFFFF))
def test_describe_any_16_bit_value(sw: int) -> None:
    text = describe(sw)
    assert text.startswith(f"{sw:04X} ")
    family = sw & 0xFF00 in (0x6100, 0x6C00) or sw & 0xFFF0 == 0x63C0
    assert family or sw in set(SW) or "unknown" in text


@pytest.mark.parametrize("sw", [-1, 0x10000])
def test_describe_rejects_non_status_words(sw: int) -> None:
    with pytest.raises(LocalError):
        describe(sw)


def test_tries_left() -> None:
    assert tries_left(0x63C3) == 3
    assert tries_left(0x63C0) == 0
    assert tries_left(0x6300) is None
    assert tries_left(0x9000) is None
