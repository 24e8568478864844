"""PIN verification data and the try counter."""

from __future__ import annotations

import pytest

from swipepay.center.pinverify import (
    MAX_PIN_TRIES,
    PinOutcome,
    check_pin,
    pin_matches,
    pin_verification_data,
)
from swipepay.firmware_sim.errors import LocalError

PVK = bytes(range(32))
PAN = "4111111111111111"


def test_verification_data_is_keyed_and_bound_to_the_pan() -> None:
    pvd = pin_verification_data(PVK, PAN, "1234")
    assert len(pvd) == 32
    assert pvd == pin_verification_data(PVK, PAN, "1234")
    assert pvd != pin_verification_data(PVK, "4111111111111112", "1234")
    assert pvd != pin_verification_data(bytes(32), PAN, "1234")
    assert b"1234" not in pvd


def test_pin_matches() -> None:
    pvd = pin_verification_data(PVK, PAN, "1234")
    assert pin_matches(PVK, PAN, "1234", pvd)
    assert not pin_matches(PVK, PAN, "1235", pvd)
    assert not pin_matches(PVK, PAN, "12a4", pvd)


def test_malformed_pin_is_refused_without_echo() -> None:
    with pytest.raises(LocalError) as info:
        pin_verification_data(PVK, PAN, "987")
    assert "987" not in str(info.value)


@pytest.mark.parametrize("pin", ["١٢٣٤", "²²²²"])
def test_digits_of_other_scripts_are_a_malformed_pin(pin: str) -> None:
    # A regular expression's \d takes them; encoding them failed with a UnicodeEncodeError
    # that carried the PAN and PIN in its ``object``.
    with pytest.raises(LocalError) as info:
        pin_verification_data(PVK, PAN, pin)
    assert info.value.__context__ is None
    assert not pin_matches(PVK, PAN, pin, pin_verification_data(PVK, PAN, "1234"))


def test_try_counter_blocks_after_three_and_resets_on_success() -> None:
    pvd = pin_verification_data(PVK, PAN, "1234")
    tries = 0
    outcomes = []
    for pin in ["0000", "0000", "1234", "0000", "0000", "0000", "1234"]:
        check = check_pin(PVK, PAN, pin, pvd, tries)
        outcomes.append(check.outcome)
        tries = check.tries
    W, C, B = PinOutcome.WRONG, PinOutcome.CORRECT, PinOutcome.BLOCKED
    assert outcomes == [W, W, C, W, W, W, B]
    assert tries == MAX_PIN_TRIES
