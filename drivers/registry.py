"""One registry of URL schemes for every driver role (the pyserial ``serial_for_url`` idea).

A URL's scheme picks a driver class, imported only when used, so ``swipepay --help`` and the
demo never load pyscard or nfcpy.  The same terminal code then runs on hardware and on mocks.

Each row is a loader that imports its class and returns it as the role's driver Protocol, so
mypy checks every driver against the contract of :mod:`drivers.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Final, TypeVar
from urllib.parse import parse_qsl

from swipepay.drivers.base import (
    NO_CONTEXT,
    CardReader,
    CardReaderDriver,
    DriverContext,
    PhoneLink,
    PhoneLinkDriver,
    PhoneServer,
    PhoneServerDriver,
)
from swipepay.firmware_sim.errors import ConfigError

D = TypeVar("D")
Loader = Callable[[], type[D]]


def split_url(url: str) -> tuple[str, str]:
    """``"pcsc:ACR122"`` -> ``("pcsc", "ACR122")``; ``"mock:"`` has an empty rest."""
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme.replace("-", "_").isidentifier():
        raise ConfigError(f"not a driver URL: {url!r} (expected scheme:rest, e.g. mock:alice)")
    return scheme.lower(), rest


def url_options(url: str, known: Collection[str]) -> tuple[str, dict[str, str]]:
    """``"mock:alice-visa?via=tap"`` -> ``("alice-visa", {"via": "tap"})``: a URL's part after
    the scheme and its ``?key=value&...`` options, each of ``known`` at most once.  An option
    not in ``known`` or given twice is a :class:`ConfigError` (a mistyped ``?vai=tap`` would
    else be ignored without a word)."""
    _scheme, rest = split_url(url)
    name, _sep, query = rest.partition("?")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in known:
            expected = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{url!r}: unknown option {key!r} (options: {expected})")
        if key in options:
            raise ConfigError(f"{url!r}: option {key!r} given twice")
        options[key] = value
    return name, options


# -- card readers (``--card URL``) -----------------------------------------------------------


def _mock_card() -> type[CardReaderDriver]:
    from swipepay.drivers.mock_card import MockCardReader

    return MockCardReader


def _nfcpy_card() -> type[CardReaderDriver]:
    from swipepay.drivers.nfcpy_link import NfcpyCardReader

    return NfcpyCardReader


def _serial_card() -> type[CardReaderDriver]:
    from swipepay.drivers.serial_reader import SerialCardReader

    return SerialCardReader


def _keyboard_card() -> type[CardReaderDriver]:
    from swipepay.drivers.keyboard_reader import KeyboardCardReader

    return KeyboardCardReader


def _pcsc_card() -> type[CardReaderDriver]:
    from swipepay.drivers.pcsc import PcscCardReader

    return PcscCardReader


# -- the terminal's phone link (``--phone URL``) ---------------------------------------------


def _mock_phone() -> type[PhoneLinkDriver]:
    from swipepay.drivers.mock_phone import MockPhoneLink

    return MockPhoneLink


def _nfcpy_phone() -> type[PhoneLinkDriver]:
    from swipepay.drivers.nfcpy_link import NfcpyPhoneLink

    return NfcpyPhoneLink


def _tcp_phone() -> type[PhoneLinkDriver]:
    from swipepay.drivers.tcp_link import TcpPhoneLink

    return TcpPhoneLink


def _pcsc_phone() -> type[PhoneLinkDriver]:
    from swipepay.drivers.pcsc import PcscPhoneLink

    return PcscPhoneLink


# -- the phone's own side of the link (``swipepay phone run --link URL``) --------------------


def _tcp_serve() -> type[PhoneServerDriver]:
    from swipepay.drivers.tcp_link import TcpPhoneServer

    return TcpPhoneServer


def _vpcd_serve() -> type[PhoneServerDriver]:
    from swipepay.drivers.vpcd import VpcdPhoneServer

    return VpcdPhoneServer


def _vpcd_listen_serve() -> type[PhoneServerDriver]:
    from swipepay.drivers.vpcd_listen import VpcdListenServer

    return VpcdListenServer


def _nfcpy_serve() -> type[PhoneServerDriver]:
    from swipepay.drivers.nfcpy_link import NfcpyPhoneServer

    return NfcpyPhoneServer


CARD_READERS: Final[Mapping[str, Loader[CardReaderDriver]]] = {
    "mock": _mock_card,
    "nfcpy": _nfcpy_card,
    "serial": _serial_card,
    "keyboard": _keyboard_card,
    "pcsc": _pcsc_card,
}
PHONE_LINKS: Final[Mapping[str, Loader[PhoneLinkDriver]]] = {
    "mock": _mock_phone,
    "nfcpy": _nfcpy_phone,
    "tcp": _tcp_phone,
    "pcsc": _pcsc_phone,
}
PHONE_SERVERS: Final[Mapping[str, Loader[PhoneServerDriver]]] = {
    "tcp": _tcp_serve,
    "vpcd": _vpcd_serve,
    "vpcd-listen": _vpcd_listen_serve,
    "nfcpy": _nfcpy_serve,
}


def driver_class(role: str, table: Mapping[str, Loader[D]], url: str) -> type[D]:
    """The class the scheme of ``url`` names in ``table``; ConfigError listing the known ones."""
    scheme, _ = split_url(url)
    load = table.get(scheme)
    if load is None:
        known = ", ".join(f"{s}:" for s in sorted(table))
        raise ConfigError(f"unknown {role} URL scheme {scheme!r}; known: {known}")
    return load()


def open_card_reader(url: str, context: DriverContext = NO_CONTEXT) -> CardReader:
    """Open the card reader a URL names (``context``: the lab's cards, the amount, ...)."""
    return driver_class("card", CARD_READERS, url).from_url(url, context)


def open_phone_link(url: str, context: DriverContext = NO_CONTEXT) -> PhoneLink:
    """Open the terminal's phone link a URL names."""
    return driver_class("phone", PHONE_LINKS, url).from_url(url, context)


def open_phone_server(url: str, context: DriverContext = NO_CONTEXT) -> PhoneServer:
    """Open the phone's side of the link a URL names."""
    return driver_class("phone-serve", PHONE_SERVERS, url).from_url(url, context)
