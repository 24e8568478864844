from __future__ import annotations

import pytest

from swipepay.drivers.base import DriverContext
from swipepay.drivers.mock_card import MockCardReader
from swipepay.drivers.mock_phone import MockField, MockPhoneLink
from swipepay.drivers.registry import (
    CARD_READERS,
    PHONE_LINKS,
    PHONE_SERVERS,
    driver_class,
    open_card_reader,
    open_phone_link,
    split_url,
    url_options,
)
from swipepay.firmware_sim.errors import ConfigError


def test_split_url() -> None:
    assert split_url("pcsc:ACR122U PICC") == ("pcsc", "ACR122U PICC")
    assert split_url("MOCK:") == ("mock", "")
    assert split_url("serial:loop://?proto=raw") == ("serial", "loop://?proto=raw")


def test_url_options() -> None:
    assert url_options("mock:alice-visa?via=tap", ("via",)) == ("alice-visa", {"via": "tap"})
    assert url_options("mock:alice-phone?decline", ("decline",)) == (
        "alice-phone", {"decline": ""},
    )  # fmt: skip
    assert url_options("pcsc:ACR122U PICC", ()) == ("ACR122U PICC", {})


@pytest.mark.parametrize(
    ("url", "known", "message"),
    [
        ("mock:alice-visa?vai=tap", ("via",), "unknown option 'vai' \\(options: via\\)"),
        ("mock:alice-visa?via=tap&via=swipe", ("via",), "option 'via' given twice"),
        ("pcsc:ACR122?mode=contact", (), "unknown option 'mode' \\(options: none\\)"),
    ],
)
def test_a_mistyped_or_repeated_option_is_a_config_error(
    url: str, known: tuple[str, ...], message: str
) -> None:
    # Before: the mock reader and the PC/SC drivers ignored options they did not know.
    with pytest.raises(ConfigError, match=message):
        url_options(url, known)


def test_drivers_refuse_options_they_do_not_take() -> None:
    with pytest.raises(ConfigError, match="unknown option 'vai'"):
        open_card_reader("mock:alice-visa?vai=tap")
    with pytest.raises(ConfigError, match="unknown option 'x'"):
        open_phone_link("pcsc:Virtual PCD 00 01?x=1")


@pytest.mark.parametrize("url", ["", "nocolon", ":x", "1x:y", "a b:c"])
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        split_url(url)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: .*mock:"):
        driver_class("card", CARD_READERS, "bogus:x")


def test_every_registered_driver_imports_and_has_from_url() -> None:
    for table in (CARD_READERS, PHONE_LINKS, PHONE_SERVERS):
        for scheme in table:
            cls = driver_class("any", table, f"{scheme}:")
            assert callable(cls.from_url), scheme


def test_the_context_reaches_the_driver() -> None:
    field = MockField()
    link = open_phone_link("mock:", DriverContext(field=field))
    assert isinstance(link, MockPhoneLink) and link.field is field
    reader = open_card_reader("mock:alice", DriverContext(amount=12_34))
    assert isinstance(reader, MockCardReader) and reader.amount == 12_34
    with pytest.raises(ConfigError, match="in-process field"):
        open_phone_link("mock:")
