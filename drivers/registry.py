"""One registry of URL schemes for every driver role (the pyserial ``serial_for_url`` idea).

A URL's scheme picks a driver class, imported only when used, so ``swipepay --help`` and the
demo never load pyscard or nfcpy.  The same terminal code then runs on hardware and on mocks.
"""

from __future__ import annotations

import importlib
from typing import Any

from swipepay.firmware_sim.errors import ConfigError

#: role -> scheme -> "module:Class".  Later drivers add rows here, nothing else changes.
DRIVERS: dict[str, dict[str, str]] = {
    "card": {
        "mock": "swipepay.drivers.mock_card:MockCardReader",
        "nfcpy": "swipepay.drivers.nfcpy_link:NfcpyCardReader",
        "serial": "swipepay.drivers.serial_reader:SerialCardReader",
        "keyboard": "swipepay.drivers.keyboard_reader:KeyboardCardReader",
        "pcsc": "swipepay.drivers.pcsc:PcscCardReader",
    },
    "phone": {
        "mock": "swipepay.drivers.mock_phone:MockPhoneLink",
        "nfcpy": "swipepay.drivers.nfcpy_link:NfcpyPhoneLink",
        "tcp": "swipepay.drivers.tcp_link:TcpPhoneLink",
        "pcsc": "swipepay.drivers.pcsc:PcscPhoneLink",
    },
    # The phone's own side of the link (what `swipepay phone run --link URL` serves on).
    "phone-serve": {
        "tcp": "swipepay.drivers.tcp_link:TcpPhoneServer",
        "vpcd": "swipepay.drivers.vpcd:VpcdPhoneServer",
        "nfcpy": "swipepay.drivers.nfcpy_link:NfcpyPhoneServer",
    },
}


def split_url(url: str) -> tuple[str, str]:
    """``"pcsc:ACR122"`` -> ``("pcsc", "ACR122")``; ``"mock:"`` has an empty rest."""
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme.isidentifier():
        raise ConfigError(f"not a driver URL: {url!r} (expected scheme:rest, e.g. mock:alice)")
    return scheme.lower(), rest


def driver_class(role: str, url: str) -> Any:
    scheme, _ = split_url(url)
    table = DRIVERS[role]
    target = table.get(scheme)
    if target is None:
        known = ", ".join(f"{s}:" for s in sorted(table))
        raise ConfigError(f"unknown {role} URL scheme {scheme!r}; known: {known}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def open_card_reader(url: str, **context: Any) -> Any:
    """Open the card reader a URL names; ``context`` passes lab data to mock drivers."""
    return driver_class("card", url).from_url(url, **context)


def open_phone_link(url: str, **context: Any) -> Any:
    return driver_class("phone", url).from_url(url, **context)


def open_phone_server(url: str, **context: Any) -> Any:
    return driver_class("phone-serve", url).from_url(url, **context)
