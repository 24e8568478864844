"""One test per normative statement of hardware_notes/phone-link.md that an outside phone
implementation would otherwise have to guess (the profile, the signed bytes, edge cases).

The signed message is rebuilt here byte by byte from the note, not with the project's own
``confirmation_digest``, so a drift between note and code fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from swipepay.center.lab import PhoneProfile
from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.apdu import ResponseApdu
from swipepay.firmware_sim.dukpt import DukptDevice, derive_initial_key
from swipepay.firmware_sim.errors import DecodeError, SecurityError
from swipepay.firmware_sim.phonelink.applet import PaymentShown, PhoneApplet, State
from swipepay.firmware_sim.phonelink.protocol import (
    ConfirmationBody,
    ConfirmationStatus,
    Ins,
    PaymentRequestBody,
    bcd,
)
from swipepay.firmware_sim.transaction import Transaction, TxnType
from tests.support.phonelink import BDK, IKID, NOW, PAN, Pair, make_pair, txn

FCI = bytes.fromhex("6F0E8407F0535750415901A503C00101")


def sw(response: bytes) -> int:
    return ResponseApdu.parse(response).sw


def up_to_auth(p: Pair) -> None:
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu))
    p.link.handle_authenticate(p.send(p.link.authenticate_command().apdu))


def confirmed(p: Pair, t: Transaction) -> ConfirmationBody:
    up_to_auth(p)
    p.link.handle_payment_request(p.send(p.link.payment_request_command(t).apdu))
    p.applet.confirm("1234")
    return p.link.handle_confirmation(p.send(p.link.confirmation_command().apdu))


def lp(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def signed_message(t: Transaction, processing_code: str, answer: ConfirmationBody) -> bytes:
    """The confirmation message exactly as phone-link.md §5 spells it."""
    assert answer.pin_block is not None and answer.ksn is not None
    return b"".join(
        lp(x)
        for x in (
            b"swipepay/confirm/v1",
            t.pan.encode(),
            processing_code.encode(),
            t.amount.to_bytes(8, "big"),
            t.currency.encode(),
            b"POS00001",
            t.stan.encode(),
            t.transmitted_at.encode(),
            b"\x01",  # decision: ONE byte 01
            answer.pin_block,
            answer.ksn,
        )
    )


def verify_sha256_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> None:
    """What a JVM does with ``Signature("SHA256withECDSA")`` over the message itself."""
    der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
    key.verify(der, message, ec.ECDSA(hashes.SHA256()))


# -- §5 the confirmation signature -------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "amount", "processing_code"),
    [
        (TxnType.PURCHASE, 12_34, "000000"),
        (TxnType.PREAUTH, 50_00, "000000"),
        (TxnType.WITHDRAWAL, 20_00, "010000"),
        (TxnType.DEPOSIT, 5_00, "210000"),
        (TxnType.BALANCE, 0, "310000"),
    ],
)
def test_signature_is_sha256_ecdsa_over_the_documented_bytes(
    type_: TxnType, amount: int, processing_code: str
) -> None:
    # ECDSA P-256 over SHA-256(message): the same signature verifies as "SHA256withECDSA" over
    # the message and as a prehashed signature over its digest; decision is one byte; the
    # balance inquiry (D1 40) signs processing code 310000.
    p = make_pair()
    t = txn(amount, type_)
    answer = confirmed(p, t)
    assert answer.signature is not None
    verify_sha256_ecdsa(p.phone_key.public_key(), answer.signature,
                        signed_message(t, processing_code, answer))


def test_signed_currency_is_the_value_of_d3() -> None:
    p = make_pair()
    t = Transaction(
        type=TxnType.PURCHASE, amount=7_00, pan=PAN, expiry="2912", terminal_id="POS00001",
        merchant_id="MERCH0000000001", stan="000042", transmitted_at="1126101500", currency="840",
    )
    answer = confirmed(p, t)
    assert answer.signature is not None
    verify_sha256_ecdsa(p.phone_key.public_key(), answer.signature,
                        signed_message(t, "000000", answer))
    assert [e.currency for e in p.applet.take_events() if isinstance(e, PaymentShown)] == ["840"]


def test_d3_with_a_nonzero_first_digit_is_6a80(pair: Pair) -> None:
    up_to_auth(pair)
    body = PaymentRequestBody(0x00, 1_00, "1978", "000042", "1126101500").encode()
    assert sw(pair.send(pair.link._sealed(Ins.PAYMENT_REQUEST, body).apdu)) == 0x6A80
    assert pair.applet.state is State.SELECTED


# -- §2 balance inquiry ------------------------------------------------------------------


def test_balance_inquiry_with_an_amount_is_6a80_and_wipes(pair: Pair) -> None:
    up_to_auth(pair)
    body = PaymentRequestBody(0x40, 1, "978", "000042", "1126101500").encode()
    assert sw(pair.send(pair.link._sealed(Ins.PAYMENT_REQUEST, body).apdu)) == 0x6A80
    assert pair.applet.state is State.SELECTED
    assert not [e for e in pair.applet.take_events() if isinstance(e, PaymentShown)]


# -- §1/§2 SELECT and Le -----------------------------------------------------------------


@pytest.mark.parametrize(
    "apdu",
    [
        "00A4040007F053575041590100",  # P2 00, Le 00
        "00A4040C07F053575041590100",  # P2 0C, Le 00
        "00A4040C07F0535750415901",  # P2 0C, no Le
        "00A4040007F0535750415901",  # P2 00, no Le
        "00A4040007F053575041590101",  # Le 01, shorter than the FCI
    ],
)
def test_select_answers_the_full_fci_whatever_p2_and_le(pair: Pair, apdu: str) -> None:
    assert pair.send(bytes.fromhex(apdu)) == FCI + b"\x90\x00"
    assert pair.applet.state is State.SELECTED


def test_le_shorter_than_the_answer_gets_the_full_answer(pair: Pair) -> None:
    pair.send(pair.link.select_command().apdu)
    connect = pair.link.connect_command(PAN.encode()).apdu
    short_le = connect[:-1] + b"\x01"  # Le 01; the answer is 53 bytes (C4 + C5)
    response = pair.send(short_le)
    assert sw(response) == 0x9000 and len(response) == 53 + 2


# -- §3 reflection -----------------------------------------------------------------------


def test_phone_refuses_its_own_ephemeral_key_at_connect_with_6982(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair.send(pair.link.select_command().apdu)
    connect = pair.link.connect_command(PAN.encode()).apdu
    # Make the phone's fresh key equal the terminal's C3 (the only way C3 can be "ours").
    terminal_ephemeral = pair.link._ephemeral
    assert terminal_ephemeral is not None
    monkeypatch.setattr(ecc, "generate_key", lambda: terminal_ephemeral)
    assert sw(pair.send(connect)) == 0x6982
    assert pair.applet.state is State.SELECTED


def test_terminal_refuses_its_own_key_reflected_in_the_connect_answer(pair: Pair) -> None:
    pair.send(pair.link.select_command().apdu)
    connect = pair.link.connect_command(PAN.encode()).apdu
    c3 = connect[5 + 2 + 16 + 2 + 16 + 2 : 5 + 2 + 16 + 2 + 16 + 2 + 33]
    reflected = bytes([0xC4, 16]) + os.urandom(16) + bytes([0xC5, 33]) + c3 + b"\x90\x00"
    with pytest.raises(SecurityError, match="own ephemeral key"):
        pair.link.handle_connect(reflected)


# -- §2 the phone's own confirmation timeout ----------------------------------------------


def test_user_timeout_answers_03_then_repeats_it(pair: Pair) -> None:
    up_to_auth(pair)
    pair.link.handle_payment_request(pair.send(pair.link.payment_request_command(txn()).apdu))
    pair.applet.expire()
    for _ in range(2):
        answer = pair.link.handle_confirmation(pair.send(pair.link.confirmation_command().apdu))
        assert answer.status is ConfirmationStatus.TIMED_OUT and answer.pin_block is None


# -- §0 the phone profile ----------------------------------------------------------------


def profile(tmp_path: Path, counter: int = 0, **extra: object) -> PhoneProfile:
    key = ecc.generate_key()
    ca = ecc.generate_key()
    data = {
        "name": "alice-phone",
        "card": "alice-visa",
        "pan": PAN,
        "signing_key_pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "dukpt_initial_key": derive_initial_key(BDK, IKID).hex(),
        "dukpt_ikid": IKID.hex(),
        "dukpt_counter": counter,
        "ca_keys": {"1": ecc.encode_point(ca.public_key()).hex()},
        **extra,
    }
    path = tmp_path / "alice-phone.json"
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return PhoneProfile.load(path)


def test_profile_fields_are_the_documented_ones(tmp_path: Path) -> None:
    p = profile(tmp_path)
    assert set(p.to_json()) == {
        "name", "card", "pan", "signing_key_pem", "dukpt_initial_key", "dukpt_ikid",
        "dukpt_counter", "ca_keys", "revoked_terminals",
    }
    assert p.revoked_terminals == ()  # a profile without the list (older labs) still opens


@pytest.mark.parametrize(
    ("last_used", "next_used"),
    [(0, 1), (41, 42), (0x0001FFFE, 0x00020000), (0x0000FFFF, 0x00010000)],
)
def test_dukpt_counter_is_the_last_used_and_skips_more_than_16_one_bits(
    tmp_path: Path, last_used: int, next_used: int
) -> None:
    p = profile(tmp_path, last_used)
    device = p.dukpt()
    _, ksn = device.next_pin_key()
    assert ksn == IKID + next_used.to_bytes(4, "big")
    assert device.counter == next_used  # what the phone writes back as dukpt_counter


def test_dukpt_initial_key_is_the_initial_key_not_the_bdk(tmp_path: Path) -> None:
    # The PIN key is derived from dukpt_initial_key directly (X9.24-3 initial key = derived
    # from BDK and IKID by the lab); a phone never holds the BDK.
    from swipepay.firmware_sim.dukpt import derive_working_key

    p = profile(tmp_path)
    key, ksn = DukptDevice(p.initial_key, p.ikid).next_pin_key()
    assert key == derive_working_key(derive_initial_key(BDK, IKID), ksn, "pin")
    assert p.initial_key != BDK


def test_revoked_terminals_from_the_profile_are_refused_with_6982(tmp_path: Path) -> None:
    base = make_pair()
    p = profile(tmp_path, revoked_terminals=["POS00001"])
    identity = p.identity()
    applet = PhoneApplet(
        type(identity)(identity.card_id, identity.pan, identity.signing_key,
                       {1: base.ca_key.public_key()}, identity.revoked_terminals),
        p.dukpt(),
    )
    base.applet = applet
    base.link.handle_select(base.send(base.link.select_command().apdu))
    base.link.handle_connect(base.send(base.link.connect_command(PAN.encode()).apdu))
    assert sw(base.send(base.link.authenticate_command().apdu, NOW)) == 0x6982
    assert applet.state is State.SELECTED
    # And the list survives the counter write-back.
    assert p.with_counter(5).to_json()["revoked_terminals"] == ["POS00001"]


def test_malformed_revocation_list_is_a_config_error(tmp_path: Path) -> None:
    from swipepay.firmware_sim.errors import ConfigError

    with pytest.raises(ConfigError):
        profile(tmp_path, revoked_terminals="POS00001")


@pytest.mark.parametrize("value", ["٤٢", "²", "4a"])
def test_bcd_takes_only_ascii_digits(value: str) -> None:
    with pytest.raises(DecodeError):  # bytes.fromhex's ValueError before, for "٤٢" and "²"
        bcd(value, 1)
    assert bcd("42", 2) == b"\x00\x42"
