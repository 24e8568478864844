"""``mock:`` — the terminal's phone link to a simulated phone in the same process.

A :class:`MockField` is the RF field in front of the terminal: a phone can be put in it or taken
out (a phone taken out mid-transaction looks exactly like a phone leaving a real field).
"""

from __future__ import annotations

from dataclasses import dataclass

from swipepay.drivers.base import NO_CONTEXT, DriverContext
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError
from swipepay.firmware_sim.phone import Phone


@dataclass
class MockField:
    phone: Phone | None = None
    #: Remove the phone after this many more exchanges (None: never) — to test phone-gone.
    leave_after: int | None = None

    def place(self, phone: Phone | None, leave_after: int | None = None) -> None:
        if self.phone is not None and self.phone is not phone:
            self.phone.deactivate()
        self.phone = phone
        self.leave_after = leave_after


class MockPhoneLink:
    def __init__(self, url: str, field: MockField) -> None:
        self.url = url
        self.field = field
        self._phone: Phone | None = None

    @classmethod
    def from_url(cls, url: str, context: DriverContext = NO_CONTEXT) -> MockPhoneLink:
        if context.field is None:
            raise ConfigError("mock: phone link needs an in-process field (demo and tests only)")
        return cls(url, context.field)

    def connect(self, timeout: float) -> None:
        if self.field.phone is None:
            raise LinkTimeout(f"no phone in the field within {timeout:.0f} s")
        self._phone = self.field.phone

    def transmit(self, apdu: bytes) -> bytes:
        phone = self._phone
        if phone is None or self.field.phone is not phone:
            raise TransportError("the phone left the field")
        if self.field.leave_after is not None:
            if self.field.leave_after <= 0:
                self.field.place(None)
                raise TransportError("the phone left the field")
            self.field.leave_after -= 1
        return phone.process(apdu)

    def disconnect(self) -> None:
        if self._phone is not None:
            self._phone.deactivate()
        self._phone = None
