"""CardData, Luhn and expiry rules."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.carddata import (
    CardData,
    is_expired,
    luhn_check_digit,
    luhn_valid,
    mask_pan,
)
from swipepay.firmware_sim.errors import DecodeError, SwipepayError


def _card(**overrides: object) -> CardData:
    fields: dict[str, object] = {
        "pan": "4111111111111111",
        "expiry": "2812",
        "name": "DOE/JOHN",
        "service_code": "201",
        "track2": "4111111111111111=28122011234",
        "entry_mode": "05",
        "source": "emv-contact",
        "aid": bytes.fromhex("A0000000031010"),
    }
    fields.update(overrides)
    return CardData(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pan",
    ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "79927398713"],
)
def test_luhn_known_valid(pan: str) -> None:
    assert luhn_valid(pan)
    assert luhn_check_digit(pan[:-1]) == pan[-1]


@pytest.mark.parametrize(
    "pan", ["4111111111111112", "79927398710", "", "7", "4111-1111", "41111111111111１1"]
)
def test_luhn_invalid(pan: str) -> None:
    assert not luhn_valid(pan)


def test_luhn_check_digit_rejects_non_digits() -> None:
    with pytest.raises(DecodeError):
        luhn_check_digit("12a")


@given(st.text(alphabet="0123456789", min_size=1, max_size=25))
def test_luhn_check_digit_completes(partial: str) -> None:
    digit = luhn_check_digit(partial)
    assert luhn_valid(partial + digit)
    # Changing any single digit always breaks Luhn (its reason to exist).
    wrong = str((int(digit) + 1) % 10)
    assert not luhn_valid(partial + wrong)


@given(st.text(max_size=30))
def test_luhn_valid_never_raises(text: str) -> None:
    assert luhn_valid(text) in (True, False)


@pytest.mark.parametrize(
    ("expiry", "today", "expired"),
    [
        ("2812", date(2028, 12, 31), False),
        ("2812", date(2029, 1, 1), True),
        ("2812", date(2028, 11, 30), False),
        ("2401", date(2024, 2, 1), True),
        ("2401", date(2023, 12, 31), False),
    ],
)
def test_is_expired(expiry: str, today: date, expired: bool) -> None:
    assert is_expired(expiry, today) is expired


@pytest.mark.parametrize("expiry", ["2813", "2800", "281", "abcd", "28-1"])
def test_is_expired_rejects_bad_expiry(expiry: str) -> None:
    with pytest.raises(DecodeError):
        is_expired(expiry, date(2025, 1, 1))


def test_card_id_and_mask() -> None:
    card = _card()
    assert card.card_id == b"4111111111111111"
    assert card.masked_pan == "411111******1111"
    assert "4111111111111111" not in repr(card)


def test_mask_short_pan_hides_the_middle() -> None:
    assert mask_pan("12345678") == "****5678"
    assert mask_pan("123456789012") == "123456**9012"


def test_uid_card() -> None:
    card = CardData.from_uid(bytes.fromhex("04A1B2C3D4E580"))
    assert card.card_id == b"uid:04a1b2c3d4e580"
    assert card.masked_pan == "uid:04a1b2c3d4e580"
    assert card.source == "uid"


@pytest.mark.parametrize(
    "overrides",
    [
        {"pan": "4111111111111112"},  # Luhn
        {"pan": "41111"},  # too short
        {"pan": "4" * 20},
        {"expiry": "2813"},
        {"service_code": "20"},
        {"source": "telepathy"},
        {"entry_mode": "90"},  # a full-track entry mode for a chip read
        {"source": "uid", "entry_mode": "07"},  # no UID given
    ],
)
def test_inconsistent_carddata_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        _card(**overrides)


@given(
    pan=st.text(max_size=22),
    expiry=st.text(max_size=5),
    service_code=st.text(max_size=4),
    entry_mode=st.sampled_from(["02", "05", "07", "90", "91", "99"]),
    source=st.sampled_from(["magstripe", "emv-contact", "emv-contactless", "uid", "x"]),
)
def test_construction_gives_card_or_typed_error(
    pan: str, expiry: str, service_code: str, entry_mode: str, source: str
) -> None:
    try:
        card = _card(
            pan=pan, expiry=expiry, service_code=service_code, entry_mode=entry_mode, source=source
        )
    except SwipepayError:
        return
    assert luhn_valid(card.pan)
    assert card.card_id == pan.encode()
