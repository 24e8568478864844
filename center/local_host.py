"""The payment center in the same process: the terminal calls the center core directly.

Used by the demo and the fast tests; the ISO 8583 / TLS client offers the same two methods.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.transaction import Transaction

if TYPE_CHECKING:
    from swipepay.center.core import Center


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LocalHost:
    def __init__(self, center: Center, clock: Callable[[], datetime] = _utcnow) -> None:
        self.center = center
        self._clock = clock

    def authorize(self, request: AuthRequest, timeout: float) -> AuthResponse:
        return self.center.authorize(request, self._clock())

    def reverse(self, txn: Transaction) -> AuthResponse:
        return self.center.reverse(txn.terminal_id, txn.stan, txn.transmitted_at)

    def settle(self, txn: Transaction) -> None:
        """Nothing is journaled in-process: a crash takes the center down with the terminal."""
