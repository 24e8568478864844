"""The phone link end to end through an in-memory link, and each way it must refuse."""

from __future__ import annotations

import pytest

from swipepay.firmware_sim.apdu import CommandApdu, ResponseApdu
from swipepay.firmware_sim.confirmation import Decision, confirmation_digest, verify_confirmation
from swipepay.firmware_sim.dukpt import derive_initial_key, derive_working_key
from swipepay.firmware_sim.errors import SecurityError
from swipepay.firmware_sim.phonelink.applet import PaymentShown, ResultShown, State
from swipepay.firmware_sim.phonelink.protocol import (
    MAX_COMMAND_DATA,
    MAX_RESPONSE_DATA,
    ConfirmationStatus,
)
from swipepay.firmware_sim.phonelink.terminal_link import PhoneNotBound, PhoneRefused
from swipepay.firmware_sim.pinblock import decode_format4
from tests.support.phonelink import BDK, IKID, NOW, PAN, Pair, make_cert, make_pair, txn


def sw(response: bytes) -> int:
    return ResponseApdu.parse(response).sw


def up_to_auth(p: Pair, card_id: bytes = PAN.encode()) -> None:
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(card_id).apdu))
    p.link.handle_authenticate(p.send(p.link.authenticate_command().apdu))


def test_full_session_confirms_with_pin_block_the_center_can_read(pair: Pair) -> None:
    up_to_auth(pair)
    t = txn()
    pair.link.handle_payment_request(pair.send(pair.link.payment_request_command(t).apdu))
    shown = pair.applet.take_events()
    assert shown == [PaymentShown("Corner Coffee", "POS00001", "purchase", 12_34, "978")]
    # The user has not acted yet: the phone answers "pending" at once.
    pending = pair.link.handle_confirmation(pair.send(pair.link.confirmation_command().apdu))
    assert pending.status is ConfirmationStatus.PENDING
    pair.applet.confirm("4321")
    answer = pair.link.handle_confirmation(pair.send(pair.link.confirmation_command().apdu))
    assert answer.status is ConfirmationStatus.APPROVED
    assert answer.pin_block and answer.ksn and answer.signature
    # Only the BDK holder can read the PIN block.
    key = derive_working_key(derive_initial_key(BDK, IKID), answer.ksn, "pin")
    assert decode_format4(answer.pin_block, PAN, key) == "4321"
    digest = confirmation_digest(
        pan=PAN,
        processing_code="000000",
        amount=12_34,
        currency="978",
        terminal_id="POS00001",
        stan="000042",
        transmitted_at="1126101500",
        decision=Decision.APPROVED,
        pin_block=answer.pin_block,
        ksn=answer.ksn,
    )
    verify_confirmation(pair.phone_key.public_key(), digest, answer.signature)
    pair.link.handle_result(pair.send(pair.link.result_command("00", "123456").apdu))
    assert ResultShown("00", "123456") in pair.applet.take_events()
    assert pair.applet.state is State.SELECTED


def test_every_apdu_fits_short_limits(pair: Pair) -> None:
    sizes: list[tuple[int, int]] = []

    def send(apdu: bytes) -> bytes:
        response = pair.send(apdu)
        sizes.append((len(CommandApdu.parse(apdu).data), len(response) - 2))
        assert CommandApdu.parse(apdu).is_short
        return response

    pair.link.handle_select(send(pair.link.select_command().apdu))
    pair.link.handle_connect(send(pair.link.connect_command(PAN.encode()).apdu))
    pair.link.handle_authenticate(send(pair.link.authenticate_command().apdu))
    pair.link.handle_payment_request(send(pair.link.payment_request_command(txn()).apdu))
    pair.applet.confirm("1234")
    pair.link.handle_confirmation(send(pair.link.confirmation_command().apdu))
    pair.link.handle_result(send(pair.link.result_command("00", "000001").apdu))
    assert len(sizes) == 6
    assert all(c <= MAX_COMMAND_DATA and r <= MAX_RESPONSE_DATA for c, r in sizes)
    assert sum(c + r for c, r in sizes) < 1000


def test_phone_bound_to_another_card_answers_6a88_and_keeps_no_state(pair: Pair) -> None:
    pair.link.handle_select(pair.send(pair.link.select_command().apdu))
    response = pair.send(pair.link.connect_command(b"5413330000000019").apdu)
    assert sw(response) == 0x6A88
    assert pair.applet.state is State.SELECTED
    assert pair.applet._session is None
    with pytest.raises(PhoneNotBound):
        pair.link.handle_connect(response)


def test_rogue_terminal_certificate_from_another_ca_is_refused() -> None:
    p = make_pair()
    rogue_ca = make_pair().ca_key
    p.link.certificate = make_cert(rogue_ca, p.terminal_key)
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu))
    response = p.send(p.link.authenticate_command().apdu)
    assert sw(response) == 0x6982
    assert p.applet.state is State.SELECTED


def test_expired_certificate_is_refused() -> None:
    p = make_pair()
    p.link.certificate = make_cert(
        p.ca_key, p.terminal_key, not_before=NOW - 1000, not_after=NOW - 1
    )
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu))
    assert sw(p.send(p.link.authenticate_command().apdu)) == 0x6982


def test_revoked_terminal_is_refused() -> None:
    p = make_pair(revoked=frozenset({"POS00001"}))
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu))
    assert sw(p.send(p.link.authenticate_command().apdu)) == 0x6982


def test_terminal_signature_by_another_key_is_refused() -> None:
    p = make_pair()
    stolen_cert_holder = make_pair()
    # A certificate that is genuine but whose private key the attacker does not hold.
    p.link._signing_key = stolen_cert_holder.terminal_key
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu))
    assert sw(p.send(p.link.authenticate_command().apdu)) == 0x6982


def test_tampered_ciphertext_wipes_the_session(pair: Pair) -> None:
    up_to_auth(pair)
    apdu = bytearray(pair.link.payment_request_command(txn()).apdu)
    apdu[12] ^= 0x01
    assert sw(pair.send(bytes(apdu))) == 0x6982
    assert pair.applet.state is State.SELECTED and pair.applet._session is None


def test_replayed_command_is_refused(pair: Pair) -> None:
    up_to_auth(pair)
    request = pair.link.payment_request_command(txn()).apdu
    pair.link.handle_payment_request(pair.send(request))
    poll = pair.link.confirmation_command().apdu
    pair.send(poll)
    assert sw(pair.send(poll)) == 0x6982


def test_commands_out_of_order_get_6985(pair: Pair) -> None:
    pair.link.handle_select(pair.send(pair.link.select_command().apdu))
    # AUTHENTICATE before CONNECT
    assert sw(pair.send(bytes.fromhex("8012000002C100") + b"\x00")) == 0x6985


def test_not_selected_wrong_aid_wrong_class_unknown_ins_extended() -> None:
    p = make_pair()
    assert sw(p.send(bytes.fromhex("8010000000"))) == 0x6985  # not selected
    assert sw(p.send(bytes.fromhex("00A4040007F053575041590200"))) == 0x6A82
    p.send(p.link.select_command().apdu)
    assert sw(p.send(bytes.fromhex("9010000000"))) == 0x6E00
    assert sw(p.send(bytes.fromhex("8099000000"))) == 0x6D00
    assert sw(p.send(bytes.fromhex("80100000000001") + b"\x01")) == 0x6700  # extended
    assert sw(p.send(bytes.fromhex("8010"))) in (0x6700, 0x6A80)  # truncated header


def test_decline_and_user_timeout(pair: Pair) -> None:
    up_to_auth(pair)
    pair.link.handle_payment_request(pair.send(pair.link.payment_request_command(txn()).apdu))
    pair.applet.decline()
    answer = pair.link.handle_confirmation(pair.send(pair.link.confirmation_command().apdu))
    assert answer.status is ConfirmationStatus.DECLINED and answer.pin_block is None


def test_terminal_detects_forged_response(pair: Pair) -> None:
    up_to_auth(pair)
    response = bytearray(pair.send(pair.link.payment_request_command(txn()).apdu))
    response[0] ^= 0xFF
    with pytest.raises(SecurityError):
        pair.link.handle_payment_request(bytes(response))


def test_refused_status_is_reported_by_name(pair: Pair) -> None:
    with pytest.raises(PhoneRefused) as info:
        pair.link.handle_select(bytes.fromhex("6A82"))
    assert info.value.sw == 0x6A82


def test_balance_is_forwarded_to_the_phone_only_in_the_result(pair: Pair) -> None:
    """The sealed balance's own refusals are in test_sealed_balance.py."""
    from swipepay.firmware_sim.balance_seal import BalanceContext, seal_balance
    from swipepay.firmware_sim.transaction import TxnType

    up_to_auth(pair)
    t = txn(0, TxnType.BALANCE)
    pair.link.handle_payment_request(pair.send(pair.link.payment_request_command(t).apdu))
    shown = pair.applet.take_events()
    assert isinstance(shown[0], PaymentShown) and shown[0].txn_type == "balance"
    pair.applet.confirm("1234")
    answer = pair.link.handle_confirmation(pair.send(pair.link.confirmation_command().apdu))
    assert answer.ksn is not None
    key = derive_working_key(derive_initial_key(BDK, IKID), answer.ksn, "data-decrypt")
    sealed = seal_balance(key, answer.ksn, BalanceContext(t.terminal_id, t.stan, t.transmitted_at),
                          -12_34, "978")  # fmt: skip
    pair.link.handle_result(pair.send(pair.link.result_command("00", "123456", sealed).apdu))
    assert ResultShown("00", "123456", -12_34, "978") in pair.applet.take_events()
