"""An in-memory center world: a center with a POS, an ATM, a funded account and an enrolled card
+ phone (fixtures ``keys``, ``db_path``, ``world``; ``pg_world`` is the same world on a
PostgreSQL database), and the phone that signs its requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.center.core import AuthRequest, AuthResponse, Center
from swipepay.center.keystore import CenterKeys
from swipepay.firmware_sim.balance_seal import KEY_USAGE as BALANCE_KEY_USAGE
from swipepay.firmware_sim.balance_seal import BalanceContext, open_balance
from swipepay.firmware_sim.confirmation import Decision, confirmation_digest, sign_confirmation
from swipepay.firmware_sim.dukpt import DukptDevice, derive_initial_key
from swipepay.firmware_sim.ecc import encode_point, generate_key
from swipepay.firmware_sim.pinblock import encode_format4
from swipepay.firmware_sim.transaction import TXN_TYPES, Transaction, TxnType

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
PAN = "4111111111111111"
EXPIRY = "2712"
PIN = "9753"  # digits that occur nowhere else in the fixtures, for the leak test
ACCOUNT = "ACC-ALICE"
OPENING = 100_00
POS = "POS00001"
ATM = "ATM00001"
MERCHANT = "MERCH0001"
BANK = "BANK0001"


@dataclass
class Phone:
    """The cardholder's phone as the center sees it: DUKPT PIN keys and a signing key."""

    key: ec.EllipticCurvePrivateKey
    device: DukptDevice
    pin: str = field(default=PIN, repr=False)

    def request(
        self,
        txn: Transaction,
        *,
        pin: str | None = None,
        signed_amount: int | None = None,
        decision: Decision = Decision.APPROVED,
        pin_block: bytes | None = None,
    ) -> AuthRequest:
        """What the terminal sends after the user confirmed ``txn`` on this phone.

        ``signed_amount``, ``decision`` and ``pin_block`` let a test sign something other than
        an honest phone would.
        """
        pin_key, ksn = self.device.next_pin_key()
        block = pin_block or encode_format4(pin or self.pin, txn.pan, pin_key)
        digest = confirmation_digest(
            pan=txn.pan,
            processing_code=TXN_TYPES[txn.type].processing_code,
            amount=txn.amount if signed_amount is None else signed_amount,
            currency=txn.currency,
            terminal_id=txn.terminal_id,
            stan=txn.stan,
            transmitted_at=txn.transmitted_at,
            decision=decision,
            pin_block=block,
            ksn=ksn,
        )
        return AuthRequest(txn, block, ksn, sign_confirmation(self.key, digest))

    def balance(self, req: AuthRequest, resp: AuthResponse) -> int:
        """What this phone shows for the center's answer ``resp`` to its balance inquiry
        ``req``: the balance opened from the sealed field (the terminal cannot do this)."""
        assert req.ksn is not None and resp.sealed_balance is not None
        t = req.txn
        key = self.device.working_key(req.ksn, BALANCE_KEY_USAGE)
        context = BalanceContext(t.terminal_id, t.stan, t.transmitted_at)
        balance, currency = open_balance(key, req.ksn, context, resp.sealed_balance)
        assert currency == t.currency
        return balance


class Stans:
    """Fresh STANs after ``start``, so every test message has its own retransmission key (safe
    to call from several threads)."""

    def __init__(self, start: int = 0) -> None:
        self.n = start
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.n += 1
            return f"{self.n:06d}"


def make_txn(
    type_: TxnType, amount: int, stan: str, *, terminal: str | None = None, **kw: Any
) -> Transaction:
    atm = type_ in (TxnType.WITHDRAWAL, TxnType.DEPOSIT, TxnType.BALANCE)
    values: dict[str, Any] = {
        "type": type_,
        "amount": amount,
        "pan": PAN,
        "expiry": EXPIRY,
        "terminal_id": terminal or (ATM if atm else POS),
        "merchant_id": BANK if atm else MERCHANT,
        "stan": stan,
        "transmitted_at": "0615120000",
    }
    values.update(kw)
    return Transaction(**values)


@pytest.fixture
def keys() -> CenterKeys:
    return CenterKeys.generate(bdk_id=bytes.fromhex("12345678"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "center.db"


@dataclass
class World:
    center: Center
    phone: Phone
    keys: CenterKeys
    db_path: Path | str  # a SQLite file, or a database URL
    stan: Stans

    def txn(self, type_: TxnType, amount: int, **kw: Any) -> Transaction:
        return make_txn(type_, amount, self.stan(), **kw)

    def signed(self, type_: TxnType, amount: int, **kw: Any) -> AuthRequest:
        return self.phone.request(self.txn(type_, amount, **kw))

    def reopen(self) -> Center:
        self.center.close()
        self.center = Center.open(self.db_path, self.keys)
        return self.center


def new_world(keys: CenterKeys, database: Path | str) -> World:
    """A center on ``database`` with a funded account, a POS, an ATM and one enrolled card."""
    ikid = keys.bdk_id + bytes.fromhex("00000001")
    phone_key = generate_key()
    phone = Phone(phone_key, DukptDevice(derive_initial_key(keys.bdk, ikid), ikid))
    center = Center.open(database, keys)
    center.open_account(ACCOUNT, "Alice", OPENING)
    center.register_terminal(POS, MERCHANT, "Corner Shop", "pos")
    center.register_terminal(ATM, BANK, "Main Street ATM", "atm")
    center.enroll(
        pan=PAN,
        expiry=EXPIRY,
        account_id=ACCOUNT,
        phone_key=encode_point(phone_key.public_key()),
        ikid=ikid,
        pin=PIN,
    )
    return World(center, phone, keys, database, Stans())


@pytest.fixture
def world(keys: CenterKeys, db_path: Path) -> Iterator[World]:
    w = new_world(keys, db_path)
    yield w
    w.center.close()


@pytest.fixture
def pg_world(keys: CenterKeys, pg_url: str) -> Iterator[World]:
    """:func:`world` on a fresh PostgreSQL database."""
    w = new_world(keys, pg_url)
    yield w
    w.center.close()
