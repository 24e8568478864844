"""A terminal and a phone joined through an in-memory link, with a lab-like CA and keys
(fixture ``pair``), and the conformance suite's context for that phone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.certificate import TerminalCertificate, issue_certificate
from swipepay.firmware_sim.conformance import Context
from swipepay.firmware_sim.dukpt import DukptDevice, derive_initial_key
from swipepay.firmware_sim.phone import Choice, Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.applet import PhoneApplet, PhoneIdentity
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.transaction import Transaction, TxnType

NOW = 1_800_000_000
PAN = "4761739001010119"
BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = bytes.fromhex("1234567890123456")


@dataclass
class Pair:
    ca_key: ec.EllipticCurvePrivateKey
    cert: TerminalCertificate
    terminal_key: ec.EllipticCurvePrivateKey
    phone_key: ec.EllipticCurvePrivateKey
    applet: PhoneApplet
    link: TerminalLink

    def send(self, apdu: bytes, now: int = NOW) -> bytes:
        return self.applet.process(apdu, now)


def make_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    terminal_key: ec.EllipticCurvePrivateKey,
    *,
    not_before: int = NOW - 100,
    not_after: int = NOW + 86_400,
    terminal_id: str = "POS00001",
) -> TerminalCertificate:
    return issue_certificate(
        ca_key,
        1,
        terminal_id=terminal_id,
        merchant_id="MERCH0000000001",
        merchant_name="Corner Coffee",
        public_key=ecc.encode_point(terminal_key.public_key()),
        not_before=not_before,
        not_after=not_after,
    )


def make_pair(pan: str = PAN, revoked: frozenset[str] = frozenset()) -> Pair:
    ca_key = ecc.generate_key()
    terminal_key = ecc.generate_key()
    phone_key = ecc.generate_key()
    cert = make_cert(ca_key, terminal_key)
    identity = PhoneIdentity(
        card_id=pan.encode(),
        pan=pan,
        signing_key=phone_key,
        ca_keys={1: ca_key.public_key()},
        revoked_terminals=revoked,
    )
    applet = PhoneApplet(identity, DukptDevice(derive_initial_key(BDK, IKID), IKID))
    return Pair(ca_key, cert, terminal_key, phone_key, applet, TerminalLink(cert, terminal_key))


def txn(amount: int = 12_34, type_: TxnType = TxnType.PURCHASE) -> Transaction:
    return Transaction(
        type=type_,
        amount=amount,
        pan=PAN,
        expiry="2912",
        terminal_id="POS00001",
        merchant_id="MERCH0000000001",
        stan="000042",
        transmitted_at="1126101500",
    )


@pytest.fixture
def pair() -> Pair:
    return make_pair()


def conformance_setup(choice: Choice = Choice.CONFIRM) -> tuple[Context, Phone]:
    """The conformance context of a fresh pair's terminal, and its phone whose user answers
    ``choice`` (PIN 1234) after two polls."""
    pair = make_pair()
    phone = Phone(pair.applet, ScriptedUser(choice, lambda: "1234", delay_polls=2), lambda: NOW)
    ctx = Context(
        certificate=pair.cert, signing_key=pair.terminal_key, ca_key=pair.ca_key, ca_key_index=1,
        pan=PAN, expiry="2912", now=NOW, phone_key=pair.phone_key.public_key(), max_polls=10,
    )
    return ctx, phone
