"""The phone shows a balance only from the center's sealed balance, and refuses one that the
terminal altered, moved from another transaction or added to another transaction type."""

from __future__ import annotations

import pytest

from swipepay.firmware_sim.balance_seal import BalanceContext, seal_balance
from swipepay.firmware_sim.dukpt import derive_initial_key, derive_working_key
from swipepay.firmware_sim.phonelink.applet import ResultShown, SessionWiped
from swipepay.firmware_sim.phonelink.terminal_link import PhoneRefused
from swipepay.firmware_sim.transaction import Transaction, TxnType
from tests.support.phonelink import BDK, IKID, PAN, Pair, make_pair, txn

BALANCE = 1_500_00


def confirmed(type_: TxnType = TxnType.BALANCE) -> tuple[Pair, Transaction, bytes]:
    """A session where the user confirmed ``type_``; returns the pair, the txn and its KSN."""
    p = make_pair()
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu))
    p.link.handle_authenticate(p.send(p.link.authenticate_command().apdu))
    t = txn(0 if type_ is TxnType.BALANCE else 12_34, type_)
    p.link.handle_payment_request(p.send(p.link.payment_request_command(t).apdu))
    p.applet.confirm("1234")
    answer = p.link.handle_confirmation(p.send(p.link.confirmation_command().apdu))
    assert answer.ksn is not None
    p.applet.take_events()
    return p, t, answer.ksn


def center_seal(t: Transaction, ksn: bytes, usage: str = "data-decrypt", **changes: str) -> bytes:
    """What the center puts in field 63 (it derives the key from the BDK and the KSN)."""
    key = derive_working_key(derive_initial_key(BDK, IKID), ksn, usage)
    ctx = {"terminal_id": t.terminal_id, "stan": t.stan, "transmitted_at": t.transmitted_at}
    return seal_balance(key, ksn, BalanceContext(**{**ctx, **changes}), BALANCE, t.currency)


def refused(p: Pair, sealed: bytes, code: str = "00") -> int:
    with pytest.raises(PhoneRefused) as info:
        p.link.handle_result(p.send(p.link.result_command(code, "123456", sealed).apdu))
    events = p.applet.take_events()
    assert not any(isinstance(e, ResultShown) for e in events)
    assert any(isinstance(e, SessionWiped) for e in events)
    return info.value.sw


def test_phone_shows_the_balance_the_center_sealed() -> None:
    p, t, ksn = confirmed()
    p.link.handle_result(p.send(p.link.result_command("00", "123456", center_seal(t, ksn)).apdu))
    assert p.applet.take_events()[0] == ResultShown("00", "123456", BALANCE, "978")


@pytest.mark.parametrize("index", [0, 7, 19, 20, 35])
def test_a_tampered_sealed_balance_is_refused_with_6982(index: int) -> None:
    p, t, ksn = confirmed()
    sealed = bytearray(center_seal(t, ksn))
    sealed[index] ^= 0x01
    assert refused(p, bytes(sealed)) == 0x6982


@pytest.mark.parametrize("change", [{"stan": "000043"}, {"terminal_id": "ATM00001"}])
def test_a_balance_sealed_for_another_transaction_is_refused(change: dict[str, str]) -> None:
    p, t, ksn = confirmed()
    assert refused(p, center_seal(t, ksn, **change)) == 0x6982


def test_a_balance_sealed_under_another_key_usage_is_refused() -> None:
    p, t, ksn = confirmed()
    assert refused(p, center_seal(t, ksn, "data-encrypt")) == 0x6982


def test_a_sealed_balance_on_a_purchase_or_a_decline_is_refused() -> None:
    p, t, ksn = confirmed(TxnType.PURCHASE)
    assert refused(p, center_seal(t, ksn)) == 0x6A80
    p, t, ksn = confirmed()
    assert refused(p, center_seal(t, ksn), code="05") == 0x6A80


def test_the_old_clear_balance_is_refused() -> None:
    """``E7`` holds the 36 sealed bytes; the former 7-byte clear BCD balance is a format error."""
    p, _, _ = confirmed()
    assert refused(p, b"\x0c" + bytes.fromhex("000000150000")) == 0x6A80
