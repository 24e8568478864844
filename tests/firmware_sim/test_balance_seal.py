"""The balance sealed by the center for the phone (firmware_sim/balance_seal.py): the worked
example of hardware_notes/phone-link.md and iso8583.md byte for byte, and every way an altered
or misplaced sealed balance is refused."""

from __future__ import annotations

import pytest

from swipepay.firmware_sim.balance_seal import (
    SEALED_LEN,
    BalanceContext,
    balance_field,
    open_balance,
    seal_balance,
)
from swipepay.firmware_sim.dukpt import derive_initial_key, derive_working_key, make_ksn
from swipepay.firmware_sim.errors import DecodeError, LocalError, SecurityError

BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = bytes.fromhex("1234567890123456")
KSN = make_ksn(IKID, 1)
KEY = derive_working_key(derive_initial_key(BDK, IKID), KSN, "data-decrypt")
CONTEXT = BalanceContext("ATM00001", "000042", "1126120000")
#: The documented example: 1500.00 EUR under the published BDK, KSN counter 1.
EXAMPLE = bytes.fromhex("5C06F9529A278FD26EC90B8BFC89A880884C69BF479F9993BE0CC2C043C34AD043B70810")


def test_documented_example_byte_for_byte() -> None:
    assert bytes.fromhex("16292C6EA8F64C5420A0584BFBC577BE") == KEY
    assert CONTEXT.aad() == b"swipepay/balance/v1ATM000010000421126120000"
    assert balance_field(1_500_00, "978") == b"0002978C000000150000"
    assert seal_balance(KEY, KSN, CONTEXT, 1_500_00, "978") == EXAMPLE
    assert len(EXAMPLE) == SEALED_LEN == 36
    assert open_balance(KEY, KSN, CONTEXT, EXAMPLE) == (1_500_00, "978")


def test_the_sealed_bytes_do_not_hold_the_figure() -> None:
    assert b"150000" not in EXAMPLE and b"\x15\x00\x00" not in EXAMPLE


@pytest.mark.parametrize("balance", [0, 1, -1, -12_34, 10**12 - 1])
def test_round_trip_in_both_signs(balance: int) -> None:
    sealed = seal_balance(KEY, KSN, CONTEXT, balance, "840")
    assert open_balance(KEY, KSN, CONTEXT, sealed) == (balance, "840")


def test_every_altered_bit_is_refused() -> None:
    for i in range(SEALED_LEN * 8):
        altered = bytearray(EXAMPLE)
        altered[i // 8] ^= 1 << (i % 8)
        with pytest.raises(SecurityError):
            open_balance(KEY, KSN, CONTEXT, bytes(altered))


@pytest.mark.parametrize(
    "context",
    [
        BalanceContext("ATM00002", "000042", "1126120000"),
        BalanceContext("ATM00001", "000043", "1126120000"),
        BalanceContext("ATM00001", "000042", "1126120001"),
    ],
)
def test_sealed_for_another_transaction_is_refused(context: BalanceContext) -> None:
    with pytest.raises(SecurityError):
        open_balance(KEY, KSN, context, EXAMPLE)


def test_another_key_or_ksn_is_refused() -> None:
    ik = derive_initial_key(BDK, IKID)
    for usage in ("data-encrypt", "data-both", "pin"):
        with pytest.raises(SecurityError):
            open_balance(derive_working_key(ik, KSN, usage), KSN, CONTEXT, EXAMPLE)
    ksn2 = make_ksn(IKID, 2)
    with pytest.raises(SecurityError):
        open_balance(derive_working_key(ik, ksn2, "data-decrypt"), ksn2, CONTEXT, EXAMPLE)


def test_wrong_length_is_a_decode_error_and_bad_inputs_are_local_errors() -> None:
    with pytest.raises(DecodeError):
        open_balance(KEY, KSN, CONTEXT, EXAMPLE[:-1])
    with pytest.raises(LocalError):
        seal_balance(KEY, KSN, CONTEXT, 10**12, "978")
    with pytest.raises(LocalError):
        seal_balance(KEY, KSN, CONTEXT, 1, "EUR")
    with pytest.raises(LocalError):
        BalanceContext("ATM1", "000042", "1126120000").aad()
    # Digits of other scripts are no digits here (they failed later, to encode, before).
    with pytest.raises(LocalError):
        seal_balance(KEY, KSN, CONTEXT, 1, "٩٧٨")
    with pytest.raises(LocalError):
        BalanceContext("ATM00001", "٠٠٠٠٤٢", "1126120000").aad()


def test_the_notes_show_these_bytes() -> None:
    """phone-link.md §5 and iso8583.md document the same example the code produces."""
    from pathlib import Path

    notes = Path(__file__).resolve().parents[2] / "hardware_notes"
    for name in ("phone-link.md", "iso8583.md"):
        text = (notes / name).read_text(encoding="utf-8")
        assert EXAMPLE.hex().upper() in text, name
        assert KEY.hex().upper() in text and "0002978C000000150000" in text, name
