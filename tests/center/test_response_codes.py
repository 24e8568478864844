"""The field-39 table matches hardware_notes/design.md §6 and describe() never fails."""

from __future__ import annotations

from swipepay.center.response_codes import RC, RESPONSE_CODES, DeclineClass, describe

#: hardware_notes/design.md §6, field 39.
DESIGN_CODES = [
    *("00", "05", "12", "13", "14", "30", "51", "54"),
    *("55", "57", "58", "63", "75", "91", "94", "96"),
]


def test_table_holds_exactly_the_designed_codes() -> None:
    assert sorted(RESPONSE_CODES) == DESIGN_CODES
    assert sorted(c.value for c in RC) == DESIGN_CODES
    assert all(row.code == code and row.text for code, row in RESPONSE_CODES.items())


def test_only_00_is_approved() -> None:
    approved = [code for code, row in RESPONSE_CODES.items() if row.approved]
    assert approved == ["00"]


def test_decline_classes() -> None:
    assert describe("51").decline_class is DeclineClass.CARDHOLDER
    assert describe("63").decline_class is DeclineClass.SECURITY
    assert describe("30").decline_class is DeclineClass.REQUEST
    retry = sorted(code for code, row in RESPONSE_CODES.items() if row.retry_later)
    assert retry == ["91", "96"]


def test_describe_known_and_unknown() -> None:
    assert describe("55").text == "Incorrect PIN"
    unknown = describe("Z9")
    assert (unknown.code, unknown.decline_class) == ("Z9", DeclineClass.UNKNOWN)
    assert not unknown.approved and not unknown.retry_later
