"""The one HOST:PORT parser: defaults, IPv6 brackets, port ranges, one-sentence errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.address import Address, parse_address
from swipepay.firmware_sim.errors import ConfigError


def test_host_and_port() -> None:
    assert parse_address("127.0.0.1:8583", "--listen") == ("127.0.0.1", 8583)
    assert parse_address("localhost:1", "x") == Address("localhost", 1)
    assert parse_address("[::1]:7000", "x") == ("::1", 7000)


def _vpcd(text: str) -> Address:
    return parse_address(text, "vpcd", default_host="127.0.0.1", default_port=35963)


def test_defaults_fill_what_is_left_out() -> None:
    assert _vpcd("") == ("127.0.0.1", 35963)
    assert _vpcd("h") == ("h", 35963)
    assert _vpcd("h:") == ("h", 35963)
    assert _vpcd(":35964") == ("127.0.0.1", 35964)
    assert _vpcd("::1") == ("::1", 35963)
    assert _vpcd("[::1]") == ("::1", 35963)


def test_port_zero_only_for_listening() -> None:
    assert parse_address("127.0.0.1:0", "--listen", any_port=True).port == 0
    with pytest.raises(ConfigError, match="out of range"):
        parse_address("127.0.0.1:0", "--center")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no host"),
        ("host", "no port"),
        ("host:", "no port"),
        (":7000", "no host"),
        ("host:port", "not a number"),
        ("host:99999", "out of range"),
        ("host:-1", "not a number"),
        ("host:٣", "not a number"),
        ("::1:7000", "no port"),
        ("[::1", "no host"),
        ("[::1]x", "no host"),
    ],
)
def test_errors_are_one_config_error_naming_the_source(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_address(text, "--center", alternative=" or 'local'")
    message = str(caught.value)
    assert message.startswith("--center must be HOST:PORT or 'local', not ")
    assert reason in message and "\n" not in message


def test_the_expected_form_shows_the_defaults() -> None:
    with pytest.raises(ConfigError, match=r"must be \[HOST\]\[:PORT\]"):
        parse_address("h:x", "vpcd: URL", default_host="127.0.0.1", default_port=1)


hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(hosts, st.integers(1, 65535))
def test_str_parses_back(host: str, port: int) -> None:
    address = Address(host, port)
    assert parse_address(str(address), "x") == address


@given(st.text(max_size=30))
def test_any_text_parses_or_is_a_config_error(text: str) -> None:
    try:
        host, port = parse_address(text, "x", default_host="h", default_port=1, any_port=True)
    except ConfigError:
        return
    assert host and 0 <= port <= 65535
