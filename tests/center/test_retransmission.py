"""Exactly once on the wire: the same key (41, 11, 7) with any other field changed gets 94.

``hardware_notes/iso8583.md``: a retransmission is the same message, every field counted; the
same key with different content is answered 94 and changes nothing.  These go through the real
server over mutual TLS, so the check is made on what the terminal sent, not on what the codec
kept of it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swipepay.center.lab import Lab
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.transaction import TxnType
from tests.support.lab_center import RawClient, ServerThread, cardholder, ledger, signed

_DIGITS = "0123456789"
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text(_DIGITS, min_size=n, max_size=n)


def _hex(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=lo, max_size=hi).map(lambda b: b.hex().upper())


#: A valid other value of each field a 0200 carries (or may carry) apart from its key 7/11/41:
#: every one still decodes and parses, so only the retransmission check can refuse it.
OTHER_VALUES: dict[str, st.SearchStrategy[str]] = {
    "t": st.sampled_from(["0100"]),  # same fields, another message type
    "2": st.integers(12, 19).flatmap(_digits),
    "3": st.tuples(st.sampled_from(["00", "01", "21", "31"]), _digits(4)).map("".join),
    "4": _digits(12),
    "14": _digits(4),
    "22": _digits(3),
    "38": st.text(_DIGITS + "ABCDEF", min_size=6, max_size=6),  # not in the original: added
    "42": st.text(_PRINTABLE, min_size=15, max_size=15),
    "48": st.text(_PRINTABLE, min_size=1, max_size=20),  # a field we never use: added
    "49": _digits(3),
    "52": _hex(16, 16),
    "53": _hex(12, 12),
    "62": _hex(1, 64),
}


def _original(lab: Lab) -> dict[str, Any]:
    alice = cardholder(lab, "alice-phone")
    return codec.request_fields(signed(alice, TxnType.PURCHASE, 12_34, "000100"))


def _change(c: RawClient, original: dict[str, Any], field: str, value: str) -> str:
    return str(c.call({**original, field: value})["39"])


def test_processing_code_or_entry_mode_changed_is_94(server: ServerThread) -> None:
    original = _original(server.lab)
    c = RawClient(server.lab, server.port)
    try:
        first = c.call(original)
        assert first["39"] == "00"
        assert _change(c, original, "3", "000001") == "94"
        assert _change(c, original, "22", "052") == "94"
        assert c.call(original) == first  # the true retransmission: the stored answer
    finally:
        c.close()


def test_any_one_field_changed_is_94(server: ServerThread) -> None:
    original = _original(server.lab)
    alice = cardholder(server.lab, "alice-phone")
    c = RawClient(server.lab, server.port)
    try:
        first = c.call(original)
        assert first["39"] == "00"

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            st.sampled_from(sorted(OTHER_VALUES, key=lambda f: (len(f), f))).flatmap(
                lambda f: (
                    OTHER_VALUES[f].filter(lambda v: v != original.get(f)).map(lambda v: (f, v))
                )
            )
        )
        def changed(change: tuple[str, str]) -> None:
            field, value = change
            assert _change(c, original, field, value) == "94", change

        changed()
        assert c.call(original) == first
    finally:
        c.close()
    with ledger(server.lab) as center:
        assert center.check_balanced()
        assert center.ledger_balance(alice.account) == 1_500_00 - 12_34
