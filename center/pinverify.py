"""PIN verification without storing the PIN (hardware_notes/design.md §5).

The center keeps only *PIN verification data*: HMAC-SHA256 under the center's PIN verification
key over ``pan || ":" || pin``.  Binding the PAN in means two cards with the same PIN have
different data, and keying it means a stolen database alone cannot be brute-forced over the
10^4 four-digit PINs.  Comparison is constant-time so response timing says nothing about how
close a guess was.

The try counter stops guessing online: after :data:`MAX_PIN_TRIES` wrong PINs in a row every
later attempt is refused (response 75) without even looking at the PIN; a right PIN before that
resets the counter.  The rule is a table from outcome to counter update.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from swipepay.firmware_sim.errors import LocalError
from swipepay.firmware_sim.pinblock import pin_well_formed

MAX_PIN_TRIES = 3
PVD_LEN = 32


class PinOutcome(Enum):
    """Result of one PIN check."""

    CORRECT = "correct"
    WRONG = "wrong"
    BLOCKED = "blocked"  # tries were already exhausted; the PIN was not looked at


#: How each outcome changes the count of consecutive wrong PINs.
TRY_COUNTER_UPDATE: dict[PinOutcome, Callable[[int], int]] = {
    PinOutcome.CORRECT: lambda tries: 0,
    PinOutcome.WRONG: lambda tries: tries + 1,
    PinOutcome.BLOCKED: lambda tries: tries,
}


@dataclass(frozen=True)
class PinCheck:
    """The outcome and the try counter to store afterwards."""

    outcome: PinOutcome
    tries: int


def pin_verification_data(pvk: bytes, pan: str, pin: str) -> bytes:
    """HMAC-SHA256(pvk, pan || ":" || pin); raise :class:`LocalError` for a malformed PIN."""
    if not pin_well_formed(pin):
        raise LocalError("PIN must be 4 to 12 digits")  # never echo the PIN itself
    return hmac.new(pvk, f"{pan}:{pin}".encode("ascii"), hashlib.sha256).digest()


def pin_matches(pvk: bytes, pan: str, pin: str, pvd: bytes) -> bool:
    """Constant-time comparison of the PIN's verification data with the stored data."""
    if not pin_well_formed(pin):
        return False
    candidate = hmac.new(pvk, f"{pan}:{pin}".encode("ascii"), hashlib.sha256).digest()
    return hmac.compare_digest(candidate, pvd)


def tries_exhausted(tries: int) -> bool:
    return tries >= MAX_PIN_TRIES


def check_pin(pvk: bytes, pan: str, pin: str, pvd: bytes, tries: int) -> PinCheck:
    """Check ``pin`` against the stored data, honouring and updating the try counter."""
    if tries_exhausted(tries):
        outcome = PinOutcome.BLOCKED
    elif pin_matches(pvk, pan, pin, pvd):
        outcome = PinOutcome.CORRECT
    else:
        outcome = PinOutcome.WRONG
    return PinCheck(outcome, TRY_COUNTER_UPDATE[outcome](tries))
