from __future__ import annotations

import pytest

from swipepay.drivers.registry import DRIVERS, driver_class, split_url
from swipepay.firmware_sim.errors import ConfigError


def test_split_url() -> None:
    assert split_url("pcsc:ACR122U PICC") == ("pcsc", "ACR122U PICC")
    assert split_url("MOCK:") == ("mock", "")
    assert split_url("serial:loop://?proto=raw") == ("serial", "loop://?proto=raw")


@pytest.mark.parametrize("url", ["", "nocolon", ":x", "1x:y", "a b:c"])
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        split_url(url)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: .*mock:"):
        driver_class("card", "bogus:x")


def test_every_registered_driver_imports_and_has_from_url() -> None:
    for role, table in DRIVERS.items():
        for scheme in table:
            cls = driver_class(role, f"{scheme}:")
            assert callable(cls.from_url), (role, scheme)
