from __future__ import annotations

import pytest

from swipepay.drivers.base import DriverContext
from swipepay.drivers.registry import open_card_reader
from swipepay.firmware_sim.cards.spec import CardSpec
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout
from swipepay.firmware_sim.tracks import SwipeError

CARDS = {
    "alice": CardSpec("alice", "4761739001010119", "2912", "MARTIN/ALICE"),
    "carol": CardSpec("carol", "4761739001012347", "2912", "DIAZ/CAROL", ("contactless",), True),
}


@pytest.mark.parametrize(
    ("url", "source", "mode"),
    [
        ("mock:alice?via=tap", "emv-contactless", "07"),
        ("mock:alice?via=insert", "emv-contact", "05"),
        ("mock:alice?via=swipe", "magstripe", "90"),
        ("mock:carol", "emv-contactless", "07"),
    ],
)
def test_cards_are_read_through_the_real_read_paths(url: str, source: str, mode: str) -> None:
    card = open_card_reader(url, DriverContext(cards=CARDS)).read_card(1)
    assert card.pan == CARDS[url[5:].split("?")[0]].pan
    assert (card.source, card.entry_mode, card.expiry) == (source, mode, "2912")


def test_no_card_times_out_and_garbage_asks_to_swipe_again() -> None:
    with pytest.raises(LinkTimeout):
        open_card_reader("mock:none", DriverContext(cards=CARDS)).read_card(1)
    with pytest.raises(SwipeError, match=r"(?i)swipe"):
        open_card_reader("mock:garbage", DriverContext(cards=CARDS)).read_card(1)


def test_unknown_card_and_impossible_presentation() -> None:
    with pytest.raises(ConfigError, match="alice"):
        open_card_reader("mock:zed", DriverContext(cards=CARDS)).read_card(1)
    with pytest.raises(ConfigError, match="cannot be read by swipe"):
        open_card_reader("mock:carol?via=swipe", DriverContext(cards=CARDS)).read_card(1)
    with pytest.raises(ConfigError, match="tap"):
        open_card_reader("mock:alice?via=wave", DriverContext(cards=CARDS)).read_card(1)
