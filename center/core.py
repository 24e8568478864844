"""The payment center's core (method step 7): verify, post, answer — without any network.

The ISO 8583 TLS server calls :meth:`Center.authorize` and :meth:`Center.reverse`; tests and the
in-process demo call them directly.  Each request is decided and recorded in **one** storage
transaction: the KSN counter, the PIN try counter, the postings and the stored response become
durable together before the response is returned, or (on an internal error) nothing does and
the answer is 96.

Order of the checks (each maps to a field-39 code of :mod:`center.response_codes`):

====  =========================================================================================
code  check
====  =========================================================================================
 --   retransmission: same terminal, STAN, transmission time → the stored response (same
      content) or 94 (different content); nothing is moved or stored again
 58   terminal unknown, or registered to another merchant ID than the request names
 58   transaction type not allowed on this kind of terminal (:data:`center.policy.TERMINAL_KINDS`)
 14   card unknown, or the expiry date read from the card is not a YYMM date
 54   card expired (the enrolled or the presented expiry month is before ``now``'s month)
 13   amount 0 (or, for a balance inquiry, an amount other than 0)
 12   currency differs from the cardholder's or the terminal's account (no FX in this center)
 30   the type needs the phone and PIN block, KSN or confirmation is missing (or KSN malformed)
 63   KSN's Initial Key ID is not the card's enrolled one
 63   KSN counter not greater than the last one used for this card (replay)
 63   phone signature over the confirmation digest does not verify
 75   PIN tries already exhausted
 63   PIN block does not decode under the derived PIN key
 55   wrong PIN (the 3rd wrong PIN in a row blocks the card: later tries get 75)
 51   purchase / withdrawal / pre-auth above the available balance
 12   completion: no approved, uncompleted pre-auth of this card at this terminal referenced
 13   completion: amount above the held amount
 00   approved, with a 6-digit authorization code (a balance inquiry: and its balance sealed
      for the phone, :mod:`firmware_sim.balance_seal`; no answer carries a balance in clear)
 96   any unexpected internal error (everything of this request rolled back)
====  =========================================================================================

A storage conflict (another process got in the way) or an unreachable database is not the
request's fault: :meth:`Center.authorize` and :meth:`Center.reverse` let
:class:`~center.storage.StorageConflict` and :class:`~center.storage.StorageUnavailable` out, so
the caller decides the whole batch again or answers 91.

Once the phone's signature has verified, the KSN counter is spent whatever the outcome, so a
declined confirmation can never be replayed either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from swipepay.center import verifier
from swipepay.center.database import open_storage
from swipepay.center.keystore import CenterKeys
from swipepay.center.ledger import POSTING_RULES, AccountKind, Ledger, Party
from swipepay.center.pinverify import PinOutcome, check_pin, pin_verification_data, tries_exhausted
from swipepay.center.policy import (
    COMPLETABLE,
    TERMINAL_KINDS,
    MessageState,
    is_expired,
    parse_expiry,
)
from swipepay.center.response_codes import RC, describe
from swipepay.center.storage import (
    CardRecord,
    MessageKey,
    MessageRecord,
    Storage,
    StorageConflict,
    StorageUnavailable,
    TerminalRecord,
)
from swipepay.center.verifier import SignatureCheck
from swipepay.firmware_sim.balance_seal import KEY_USAGE as BALANCE_KEY_USAGE
from swipepay.firmware_sim.balance_seal import BalanceContext, seal_balance
from swipepay.firmware_sim.confirmation import transaction_digest
from swipepay.firmware_sim.dukpt import DukptHost, split_ksn
from swipepay.firmware_sim.ecc import decode_point
from swipepay.firmware_sim.errors import DecodeError, LocalError
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.pinblock import decode_format4
from swipepay.firmware_sim.transaction import TXN_TYPES, Transaction, TxnType, is_decimal

__all__ = ["AuthRequest", "AuthResponse", "Center"]

_log = logging.getLogger(__name__)

#: ``txn_type`` of the record a reversal leaves when it names a message never seen.
REVERSED_UNSEEN = "reversal"
#: What that record, and an original that arrives after it, say.
_LATE_ORIGINAL = "reversed by the terminal before it arrived; not processed"
_APPROVED = RC.APPROVED.value

_REQUEST_DOMAIN = b"swipepay/center/request/v1\x00"
#: :func:`wire_hash`: over the message's bytes.
_WIRE_DOMAIN = b"swipepay/center/iso8583-message/v2\x00"
#: :func:`fields_hash`: over the decoded fields (what earlier builds stored).
_FIELDS_DOMAIN = b"swipepay/center/iso8583-request/v1\x00"


class _Declined(Exception):
    """Internal: a check said no.  Never leaves this module; becomes an :class:`AuthResponse`."""

    def __init__(self, code: RC, message: str, available_balance: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.available_balance = available_balance


#: What a PIN check that did not succeed answers.
_PIN_DECLINES: dict[PinOutcome, tuple[RC, str]] = {
    PinOutcome.WRONG: (RC.INCORRECT_PIN, "incorrect PIN"),
    PinOutcome.BLOCKED: (RC.PIN_TRIES_EXCEEDED, "PIN tries exhausted"),
}


@dataclass(frozen=True)
class _Outcome:
    response: AuthResponse
    state: MessageState
    account_id: str | None
    #: The account's available balance after the decision, for the center's own records only:
    #: it never goes to the terminal (a balance inquiry's goes to the phone, sealed).
    available_balance: int | None = None


#: How many cards' phone keys :meth:`Center.signature_check` can know (~100 bytes each).
PHONE_KEYS_REMEMBERED = 100_000

#: What ``json.dumps(..., sort_keys=True, separators=(",", ":"))`` uses, made once: dumps with
#: any non-default option builds a new encoder per call, and every request is hashed.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))

_TXN_FIELDS = tuple(f.name for f in fields(Transaction) if f.name != "extra")


def request_hash(req: AuthRequest) -> bytes:
    """SHA-256 over every field of a typed request, to tell a retransmission from a different
    message when the request has no wire form (the in-process host).

    A retransmission is byte-for-byte the same message, so *all* fields count, including the
    PIN block (ciphertext under a one-time key; its hash reveals nothing) and the confirmation.
    """
    txn = req.txn
    # The same mapping dataclasses.asdict gives, built directly: this runs on every request.
    payload = {
        "txn": {f: getattr(txn, f) for f in _TXN_FIELDS} | {"extra": dict(txn.extra)},
        "pin_block": None if req.pin_block is None else req.pin_block.hex(),
        "ksn": None if req.ksn is None else req.ksn.hex(),
        "confirmation": None if req.confirmation is None else req.confirmation.hex(),
    }
    text = _CANONICAL_JSON.encode(payload)
    return hashlib.sha256(_REQUEST_DOMAIN + text.encode("utf-8")).digest()


def wire_hash(body: bytes) -> bytes:
    """SHA-256 over a request exactly as it came off the wire (the ISO 8583 message, without
    its length prefix), to tell a retransmission from a different message.

    A terminal resends a request byte for byte (hardware_notes/design.md), so the bytes are its
    content: any field changed, added or dropped makes another message, including the digits
    of fields 3 and 22 the typed request does not keep.  About 2k instructions, against 72k for
    the canonical JSON of the decoded fields (:func:`fields_hash`), on every request.
    """
    return hashlib.sha256(_WIRE_DOMAIN + body).digest()


def fields_hash(fields: Mapping[str, object]) -> bytes:
    """The content hash earlier builds stored: SHA-256 over the decoded message (field number
    or ``t``/``p`` -> value) as canonical JSON.

    Kept for one case: a message decided by an earlier build whose retransmission arrives after
    the upgrade (a center restarted while a terminal waited) must still get its stored answer;
    the server offers this hash to :meth:`Center.authorize` as ``earlier_hash``, computed only
    when a stored message under the key does not match :func:`wire_hash`.
    """
    text = _CANONICAL_JSON.encode(fields)
    return hashlib.sha256(_FIELDS_DOMAIN + text.encode("utf-8")).digest()


def _signature_check(req: AuthRequest, phone_key: bytes) -> SignatureCheck | None:
    """The check of ``req``'s confirmation under ``phone_key``: the digest over the request's own
    transaction fields, PIN block and KSN.  ``None`` if no part can verify (missing, or not a
    64-byte signature): such a confirmation does not verify."""
    if req.pin_block is None or req.ksn is None or req.confirmation is None:
        return None
    try:
        return SignatureCheck(
            phone_key, transaction_digest(req.txn, req.pin_block, req.ksn), req.confirmation
        )
    except DecodeError:
        return None


def _masked(pan: str) -> str:
    return f"…{pan[-4:]}"


class AuthCodes:
    """Six-digit authorization codes (field 38), uniform over 000000-999999, from the operating
    system's CSPRNG read 4 KiB at a time: one ``getrandom`` call per ~1,300 approvals instead
    of one each (with ``secrets.randbelow`` it was a system call and a ``SystemRandom`` round
    per approval).  An authorization code is not a secret (it is printed on the receipt); it
    only has to be unguessable in advance, which bytes not yet handed out still are."""

    #: The largest multiple of 10**6 below 2**24: a 3-byte draw below it, modulo 10**6, is
    #: uniform; a draw at or above it (4.6 %) is thrown away.
    _LIMIT: Final = 16_000_000
    _POOL_BYTES: Final = 4095

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        while True:
            at = self._at
            if at + 3 > len(self._pool):
                self._pool, at = os.urandom(self._POOL_BYTES), 0
            self._at = at + 3
            n = int.from_bytes(self._pool[at : at + 3], "big")
            if n < self._LIMIT:
                return f"{n % 1_000_000:06d}"


class Center:
    """The bank's host: enrollment data, authorization rules and ledger on one :class:`Storage`."""

    def __init__(self, storage: Storage, keys: CenterKeys) -> None:
        self._storage = storage
        self._keys = keys
        self._ledger = Ledger(storage)
        self._auth_codes = AuthCodes()
        #: PIN keys from KSNs; caches each device's initial key and last derivation path (center
        #: memory only), so a rising counter costs ~2 AES blocks instead of one per one-bit.
        self._dukpt = DukptHost(keys.bdk)
        #: PAN -> enrolled phone key (public), as last read by a decision: lets
        #: :meth:`signature_check` describe a request's check before its decision reads the card.
        #: Bounded (oldest entry dropped first); a card not in it is only checked inline.
        self._phone_keys: dict[str, bytes] = {}
        #: id -> (request, its check) as :meth:`signature_check` described it, until the
        #: request's decision: the decision then reuses the digest instead of computing it
        #: again (the very request object under the same phone key: the same check).  Holding
        #: the request keeps its id from being reused meanwhile.  Bounded (emptied when full).
        self._described: dict[int, tuple[AuthRequest, SignatureCheck]] = {}
        #: The entry of the request being decided (set by :meth:`authorize`).
        self._ahead: tuple[AuthRequest, SignatureCheck] | None = None
        self._now: datetime | None = None
        self._now_text = ""

    @classmethod
    def open(cls, database: str | Path, keys: CenterKeys) -> Center:
        """Open (creating or upgrading if needed) ``database``: a SQLite path or a database URL
        (:func:`center.database.open_storage`)."""
        return cls(open_storage(database), keys)

    def close(self) -> None:
        self._storage.close()

    def __enter__(self) -> Center:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def batch(self, requests: Iterable[AuthRequest | MessageKey] = ()) -> Iterator[None]:
        """Group commit: requests decided inside ``with center.batch():`` commit together.

        Each request inside is still its own savepoint (an internal error rolls back that one
        only).  Durability comes when the block exits, so a server must send the responses only
        after that; if the final commit fails, every response of the batch must become 96.
        ``requests`` (authorizations, and the keys of the messages reversals name) have their
        rows locked first, in the storage's fixed order (:meth:`Storage.lock_rows`).
        """
        with self._storage.batch_transaction():  # the server decides it again on a conflict
            pans: set[str] = set()
            terminal_ids: set[str] = set()
            keys: set[MessageKey] = set()
            lookups: set[MessageKey] = set()
            ahead = self._storage.reads_ahead
            for r in requests:
                if isinstance(r, MessageKey):
                    keys.add(r)
                else:
                    txn = r.txn
                    pans.add(txn.pan)
                    terminal_ids.add(txn.terminal_id)
                    if ahead:
                        tid = txn.terminal_id
                        lookups.add(MessageKey(tid, txn.stan, txn.transmitted_at))
                        if txn.original_stan is not None and txn.original_at is not None:
                            lookups.add(MessageKey(tid, txn.original_stan, txn.original_at))
            if pans or keys:
                self._storage.lock_rows(pans, terminal_ids, keys, lookups)
            yield

    # -- administration -----------------------------------------------------------------------

    def open_account(
        self, account_id: str, holder: str, balance: int, currency: str = "978"
    ) -> None:
        """Create a cardholder account funded with ``balance`` from the equity account."""
        with self._storage.transaction():
            self._ledger.open_account(
                account_id, holder, AccountKind.CARDHOLDER, currency, funding=balance
            )

    def register_terminal(
        self,
        terminal_id: str,
        merchant_id: str,
        merchant_name: str,
        kind: str,
        *,
        currency: str = "978",
    ) -> None:
        """Register a POS or ATM and create its settlement (POS) or cash (ATM) account.

        The account starts at 0: an ATM's cash account goes negative as cash is paid out (the
        bank's asset shrinks); loading cash into the ATM is not modelled yet.
        """
        spec = TERMINAL_KINDS.get(kind)
        if spec is None:
            raise LocalError(f"terminal kind must be one of {sorted(TERMINAL_KINDS)}")
        if len(terminal_id) != 8 or not terminal_id.isascii():
            raise LocalError("terminal ID must be 8 ASCII characters")
        account_id = spec.account_prefix + terminal_id
        with self._storage.transaction():
            if self._storage.get_terminal(terminal_id) is not None:
                raise LocalError(f"terminal {terminal_id} already registered")
            self._ledger.open_account(account_id, merchant_name, spec.account_kind, currency)
            self._storage.insert_terminal(
                TerminalRecord(terminal_id, merchant_id, merchant_name, kind, account_id)
            )

    def enroll(
        self, *, pan: str, expiry: str, account_id: str, phone_key: bytes, ikid: bytes, pin: str
    ) -> None:
        """Bind card ↔ account ↔ phone public key ↔ DUKPT Initial Key ID; store no PIN."""
        if not (12 <= len(pan) <= 19 and is_decimal(pan)):  # the rule Transaction checks
            raise LocalError("PAN must be 12-19 digits")
        if parse_expiry(expiry) is None:
            raise LocalError("expiry must be YYMM")
        try:
            decode_point(phone_key)
        except DecodeError as exc:
            raise LocalError(f"phone key: {exc}") from None
        if len(ikid) != 8 or ikid[:4] != self._keys.bdk_id:
            raise LocalError("IKID must be 8 bytes starting with this center's BDK ID")
        pvd = pin_verification_data(self._keys.pvk, pan, pin)
        with self._storage.transaction():
            account = self._ledger.account(account_id)
            if account.kind != AccountKind.CARDHOLDER:
                raise LocalError(f"account {account_id} is not a cardholder account")
            if self._storage.get_card(pan) is not None:
                raise LocalError(f"card {_masked(pan)} already enrolled")
            self._storage.insert_card(
                CardRecord(pan, expiry, account_id, bytes(phone_key), bytes(ikid), 0, pvd, 0)
            )

    # -- queries ------------------------------------------------------------------------------

    def available_balance(self, account_id: str) -> int:
        with self._storage.transaction():
            return self._ledger.available(account_id)

    def ledger_balance(self, account_id: str) -> int:
        with self._storage.transaction():
            return self._ledger.balance(account_id)

    def check_balanced(self) -> bool:
        with self._storage.transaction():
            return self._ledger.check_balanced()

    def account_for_pan(self, pan: str) -> str:
        with self._storage.transaction():
            card = self._storage.get_card(pan)
        if card is None:
            raise LocalError(f"card {_masked(pan)} is not enrolled")
        return card.account_id

    # -- authorization ------------------------------------------------------------------------

    def signature_check(self, req: AuthRequest) -> SignatureCheck | None:
        """The confirmation check the decision of ``req`` will need, if it can be told before
        the decision: the card's phone key (as last seen) is known and the request carries a
        well-formed confirmation.  Lets a server have it verified elsewhere ahead of time."""
        phone_key = self._phone_keys.get(req.txn.pan)
        if phone_key is None or not TXN_TYPES[req.txn.type].needs_phone:
            return None
        item = _signature_check(req, phone_key)
        if item is not None:
            if len(self._described) >= PHONE_KEYS_REMEMBERED:
                self._described.clear()
            self._described[id(req)] = (req, item)
        return item

    def _iso(self, now: datetime) -> str:
        """``now.isoformat()``, made once per batch (its decisions share one ``now``)."""
        if now is not self._now:
            self._now, self._now_text = now, now.isoformat()
        return self._now_text

    def _remember_phone_key(self, card: CardRecord) -> None:
        keys = self._phone_keys
        if card.pan not in keys and len(keys) >= PHONE_KEYS_REMEMBERED:
            del keys[next(iter(keys))]  # the oldest: dicts keep insertion order
        keys[card.pan] = card.phone_key

    def authorize(
        self,
        req: AuthRequest,
        now: datetime,
        checked: tuple[SignatureCheck, bool] | None = None,
        *,
        content_hash: bytes | None = None,
        earlier_hash: Callable[[], bytes] | None = None,
    ) -> AuthResponse:
        """Decide one request (checks in the module docstring's order); record it durably.

        ``checked`` is ``(item, verifies?)`` for :meth:`signature_check`'s item if the caller had
        it verified ahead.  It counts only if the item is exactly the check this decision needs
        (the card's enrolled key, this request's digest and signature); the checks still run in
        the documented order.  ``content_hash`` is the request's :func:`wire_hash` when it came
        over the wire (default: :func:`request_hash` of ``req``): what a retransmission of the
        same key must match; ``earlier_hash`` gives the same request's hash in a form earlier
        builds stored (:func:`fields_hash`), asked for only when a stored message under the key
        does not match ``content_hash``.
        """
        txn = req.txn
        type_name = txn.type.value  # an enum property: read once
        key = MessageKey(txn.terminal_id, txn.stan, txn.transmitted_at)
        digest = request_hash(req) if content_hash is None else content_hash
        self._ahead = self._described.pop(id(req), None) if self._described else None
        try:
            with self._storage.transaction():
                stored = self._storage.get_message(key)
                if stored is not None:
                    if hmac.compare_digest(stored.content_hash, digest) or (
                        earlier_hash is not None
                        and hmac.compare_digest(stored.content_hash, earlier_hash())
                    ):
                        return self._response_of(stored, req)
                    if stored.txn_type == REVERSED_UNSEEN:
                        _log.warning("message %s arrived after its reversal; refused", key)
                        return AuthResponse(RC.DUPLICATE_TRANSMISSION.value, message=_LATE_ORIGINAL)
                    _log.warning("message %s reused with different content", key)
                    return AuthResponse(
                        RC.DUPLICATE_TRANSMISSION.value,
                        message="terminal, STAN and transmission time already used for "
                        "another message",
                    )
                outcome = self._decide(req, key, now, checked)
                r = outcome.response
                self._storage.insert_message(
                    MessageRecord(
                        key=key,
                        content_hash=digest,
                        txn_type=type_name,
                        amount=txn.amount,
                        pan=txn.pan,
                        account_id=outcome.account_id,
                        response_code=r.response_code,
                        auth_code=r.auth_code,
                        available_balance=outcome.available_balance,
                        message=r.message,
                        state=outcome.state,
                        received_at=self._iso(now),
                    )
                )
        except (StorageConflict, StorageUnavailable):
            raise  # not this request's fault: the caller decides the batch again or answers 91
        except Exception:
            _log.exception("authorization %s failed; rolled back", key)
            return AuthResponse(
                RC.SYSTEM_MALFUNCTION.value, message="system malfunction; nothing done"
            )
        # Every decision at INFO, in words, so an operator watching `center serve` sees each
        # payment (`swipepay --log-level warning center serve` skips the formatting).
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "authorization %s %s %d card %s: %s %s", key, type_name, txn.amount,
                _masked(txn.pan), r.response_code, describe(r.response_code).text,
            )  # fmt: skip
        return r

    def _decide(
        self,
        req: AuthRequest,
        key: MessageKey,
        now: datetime,
        checked: tuple[SignatureCheck, bool] | None,
    ) -> _Outcome:
        account_id: str | None = None
        try:
            terminal = self._check_terminal(req.txn)
            card = self._check_card(req.txn, now)
            account_id = card.account_id
            self._remember_phone_key(card)
            self._check_amount(req.txn, card, terminal)
            if TXN_TYPES[req.txn.type].needs_phone:
                self._verify_phone(req, card, checked)
            return self._post(req, key, card, terminal)
        except _Declined as d:
            response = AuthResponse(d.code.value, message=d.message)
            return _Outcome(response, MessageState.DECLINED, account_id, d.available_balance)

    def _check_terminal(self, txn: Transaction) -> TerminalRecord:
        terminal = self._storage.get_terminal(txn.terminal_id)
        if terminal is None:
            raise _Declined(RC.NOT_PERMITTED_TERMINAL, "terminal unknown")
        if terminal.merchant_id != txn.merchant_id:
            raise _Declined(RC.NOT_PERMITTED_TERMINAL, "terminal belongs to another merchant")
        if txn.type not in TERMINAL_KINDS[terminal.kind].allowed:
            raise _Declined(
                RC.NOT_PERMITTED_TERMINAL, f"{txn.type.value} not allowed on a {terminal.kind}"
            )
        return terminal

    def _check_card(self, txn: Transaction, now: datetime) -> CardRecord:
        card = self._storage.get_card(txn.pan)
        if card is None:
            raise _Declined(RC.INVALID_CARD, "card unknown")
        if txn.expiry:  # a completion may be sent without the card present
            if parse_expiry(txn.expiry) is None:
                raise _Declined(RC.INVALID_CARD, "expiry date is not YYMM")
            if is_expired(card.expiry, now) or is_expired(txn.expiry, now):
                raise _Declined(RC.EXPIRED_CARD, "card expired")
        elif is_expired(card.expiry, now):
            raise _Declined(RC.EXPIRED_CARD, "card expired")
        return card

    def _check_amount(self, txn: Transaction, card: CardRecord, terminal: TerminalRecord) -> None:
        has_amount = txn.spec.has_amount
        if has_amount and txn.amount == 0:
            raise _Declined(RC.INVALID_AMOUNT, "amount is zero")
        if not has_amount and txn.amount != 0:
            raise _Declined(RC.INVALID_AMOUNT, f"a {txn.type.value} carries no amount")
        cardholder = self._ledger.account(card.account_id).currency
        merchant = self._ledger.account(terminal.account_id).currency
        if cardholder != txn.currency or merchant != txn.currency:
            raise _Declined(RC.INVALID_TRANSACTION, "currency not supported for this account")

    def _verify_phone(
        self, req: AuthRequest, card: CardRecord, checked: tuple[SignatureCheck, bool] | None = None
    ) -> None:
        """KSN, confirmation signature and PIN (method steps 5-7); raises :class:`_Declined`."""
        txn = req.txn
        if req.pin_block is None or req.ksn is None or req.confirmation is None:
            raise _Declined(RC.FORMAT_ERROR, "PIN block, KSN or phone confirmation missing")
        try:
            ikid, counter = split_ksn(req.ksn)
        except DecodeError:
            raise _Declined(RC.FORMAT_ERROR, "KSN malformed") from None
        if not hmac.compare_digest(ikid, card.ikid):
            raise _Declined(RC.SECURITY_VIOLATION, "KSN does not belong to this card's phone")
        if counter <= card.last_ksn_counter:
            raise _Declined(RC.SECURITY_VIOLATION, "KSN counter replayed")
        ahead = self._ahead
        if ahead is not None and ahead[0] is req and ahead[1].phone_key == card.phone_key:
            item: SignatureCheck | None = ahead[1]  # described for this request, this key
        else:
            item = _signature_check(req, card.phone_key)
        if item is None:
            verifies = False
        elif checked is not None and checked[0] == item:  # same key, digest and signature
            verifies = checked[1]
        else:
            verifies = verifier.check(item)
        if not verifies:
            raise _Declined(RC.SECURITY_VIOLATION, "phone confirmation does not verify")

        # The KSN is authentic from here on: spend it whatever the outcome.
        def spend(tries: int) -> None:
            self._storage.update_card_security(card.pan, counter, tries)

        if tries_exhausted(card.pin_tries):
            spend(card.pin_tries)
            raise _Declined(RC.PIN_TRIES_EXCEEDED, "PIN tries exhausted")
        try:
            pin_key = self._dukpt.pin_key(req.ksn)
            pin = decode_format4(req.pin_block, txn.pan, pin_key)
        except DecodeError:  # includes PinBlockError and unusable KSN counters
            spend(card.pin_tries)
            raise _Declined(RC.SECURITY_VIOLATION, "PIN block does not decode") from None
        check = check_pin(self._keys.pvk, txn.pan, pin, card.pvd, card.pin_tries)
        spend(check.tries)
        if check.outcome is not PinOutcome.CORRECT:
            code, message = _PIN_DECLINES[check.outcome]
            raise _Declined(code, message)

    def _post(
        self, req: AuthRequest, key: MessageKey, card: CardRecord, terminal: TerminalRecord
    ) -> _Outcome:
        txn = req.txn
        parties: Mapping[Party, str] = {
            Party.CARDHOLDER: card.account_id,
            Party.TERMINAL: terminal.account_id,
        }
        reference = hold_reference = str(key)
        after: int | None = None
        if txn.type is TxnType.COMPLETION:
            hold_reference = self._check_completion(txn, card)
        elif POSTING_RULES[txn.type].checks_funds:
            available = self._ledger.available(card.account_id)
            if txn.amount > available:
                raise _Declined(RC.INSUFFICIENT_FUNDS, "insufficient funds", available)
            # The balance after the posting, from the one just read in this transaction
            # (one statement less per approval); read again where the rule cannot tell it.
            change = self._ledger.available_change(txn.type, card.account_id, txn.amount)
            if change is not None:
                after = available + change
        self._ledger.apply(txn.type, reference, parties, txn.amount, hold_reference=hold_reference)
        available = self._ledger.available(card.account_id) if after is None else after
        response = AuthResponse(
            _APPROVED,
            auth_code=self._auth_codes.next(),
            message="approved",
            sealed_balance=self._sealed_balance(req, available),
        )
        return _Outcome(response, MessageState.APPROVED, card.account_id, available)

    def _sealed_balance(self, req: AuthRequest, available: int | None) -> bytes | None:
        """An approved balance inquiry's balance, sealed for the phone under the data key of
        its KSN (:mod:`firmware_sim.balance_seal`); ``None`` for every other answer."""
        txn = req.txn
        if txn.type is not TxnType.BALANCE or req.ksn is None or available is None:
            return None
        key = self._dukpt.working_key(req.ksn, BALANCE_KEY_USAGE)
        context = BalanceContext(txn.terminal_id, txn.stan, txn.transmitted_at)
        return seal_balance(key, req.ksn, context, available, txn.currency)

    def _response_of(self, stored: MessageRecord, req: AuthRequest) -> AuthResponse:
        """The stored answer to a retransmission (``req`` is byte for byte the original), with
        the same sealed balance: same key, nonce and plaintext give the same bytes."""
        approved = stored.response_code == _APPROVED
        return AuthResponse(
            stored.response_code,
            auth_code=stored.auth_code,
            message=stored.message,
            sealed_balance=self._sealed_balance(req, stored.available_balance)
            if approved
            else None,
        )

    def _check_completion(self, txn: Transaction, card: CardRecord) -> str:
        """Find the pre-authorization a completion refers to; mark it completed; return its key."""
        if txn.original_stan is None or txn.original_at is None:
            raise _Declined(RC.INVALID_TRANSACTION, "completion names no pre-authorization")
        original_key = MessageKey(txn.terminal_id, txn.original_stan, txn.original_at)
        original = self._storage.get_message(original_key)
        hold = self._ledger.hold(str(original_key))
        if (
            original is None
            or original.txn_type != TxnType.PREAUTH.value
            or original.pan != card.pan
            or original.state not in COMPLETABLE
            or hold is None
            or not hold.active
        ):
            raise _Declined(RC.INVALID_TRANSACTION, "no open pre-authorization to complete")
        if txn.amount > hold.amount:
            raise _Declined(RC.INVALID_AMOUNT, "completion exceeds the held amount")
        self._storage.update_message_state(
            original_key, MessageState.COMPLETED, original.reversed_amount
        )
        return str(original_key)

    # -- reversal -----------------------------------------------------------------------------

    def reverse(
        self,
        terminal_id: str,
        stan: str,
        transmitted_at: str,
        amount: int | None = None,
        *,
        original_amount: int | None = None,
        now: datetime | None = None,
    ) -> AuthResponse:
        """Undo the approved transaction (terminal, STAN, transmission time) of a request.

        ``amount`` is how much to give back (``None``: all of it); the rest stays posted.  A
        pre-authorization's hold shrinks by ``amount`` (released when nothing is left).
        ``original_amount`` is the amount the reversal says the original had (0400 field 4):
        when given, it must be the stored one.  Answers and their ``message``:

        * "00" "reversed N of M" — the money moved back (or the hold shrank);
        * "00" "unknown transaction; nothing to reverse" — never seen (lost on the way, or the
          terminal timed out before we answered a request we never got).  The reversal is
          recorded under the original's key (a declined message of type ``reversal``), so an
          original that is still on its way (in another worker's or center's batch, or delayed
          in the network) and arrives afterwards is refused (94), never booked: once a terminal
          is told "nothing to reverse" it forgets the transaction;
        * "13" "reversal amount mismatch" — ``original_amount`` is not the original's amount:
          the reversal is refused whatever the original's state, nothing changes;
        * "00" "declined transaction; nothing to reverse";
        * "00" "already reversed; nothing changed" — any earlier reversal, full or partial, makes
          the reversal final, so a terminal that retries a reversal can never reverse twice;
        * "12" "pre-authorization already completed; reverse the completion instead";
        * "13" "reversal amount out of range" — ``amount`` ≤ 0 or above the original amount;
        * "96" on an internal error, nothing changed.

        Acknowledging the unknown / already-reversed cases with 00 is deliberate: the terminal
        retries a reversal until it is acknowledged, and there is nothing more it could do.
        """
        key = MessageKey(terminal_id, stan, transmitted_at)
        try:
            with self._storage.transaction():
                response = self._reverse(
                    key, amount, original_amount, datetime.now(UTC) if now is None else now
                )
        except (StorageConflict, StorageUnavailable):
            raise
        except Exception:
            _log.exception("reversal %s failed; rolled back", key)
            return AuthResponse(
                RC.SYSTEM_MALFUNCTION.value, message="system malfunction; nothing done"
            )
        _log.info("reversal %s: %s %s", key, response.response_code, response.message)
        return response

    def _reverse(
        self, key: MessageKey, amount: int | None, original_amount: int | None, now: datetime
    ) -> AuthResponse:
        original = self._storage.get_message(key)
        if original is None:
            self._storage.insert_message(
                MessageRecord(
                    key=key,
                    content_hash=b"",  # matches no request: a late original is refused
                    txn_type=REVERSED_UNSEEN,
                    amount=(amount or 0) if original_amount is None else original_amount,
                    pan="",
                    account_id=None,
                    response_code=RC.DUPLICATE_TRANSMISSION.value,
                    auth_code=None,
                    available_balance=None,
                    message=_LATE_ORIGINAL,
                    state=MessageState.DECLINED,
                    received_at=self._iso(now),
                )
            )
        if original is None or original.txn_type == REVERSED_UNSEEN:  # again: the same answer
            return AuthResponse(_APPROVED, message="unknown transaction; nothing to reverse")
        if original_amount is not None and original_amount != original.amount:
            _log.warning(
                "reversal %s names amount %d, the original is %d; refused",
                key,
                original_amount,
                original.amount,
            )
            return AuthResponse(RC.INVALID_AMOUNT.value, message="reversal amount mismatch")
        done: dict[str, str] = {
            MessageState.DECLINED: "declined transaction; nothing to reverse",
            MessageState.REVERSED: "already reversed; nothing changed",
            MessageState.PARTIALLY_REVERSED: "already reversed; nothing changed",
        }
        if original.state in done:
            return AuthResponse(RC.APPROVED.value, message=done[original.state])
        if original.amount == 0:  # a balance inquiry: it moved nothing
            return AuthResponse(RC.APPROVED.value, message="nothing was posted; nothing to reverse")
        if original.state == MessageState.COMPLETED:
            return AuthResponse(
                RC.INVALID_TRANSACTION.value,
                message="pre-authorization already completed; reverse the completion instead",
            )
        give_back = original.amount if amount is None else amount
        if not 0 < give_back <= original.amount:
            return AuthResponse(RC.INVALID_AMOUNT.value, message="reversal amount out of range")
        terminal = self._storage.get_terminal(key.terminal_id)
        if terminal is None or original.account_id is None:
            raise LocalError(f"approved message {key} lost its terminal or account")
        parties = {Party.CARDHOLDER: original.account_id, Party.TERMINAL: terminal.account_id}
        self._ledger.reverse(TxnType(original.txn_type), str(key), parties, give_back)
        state = (
            MessageState.REVERSED
            if give_back == original.amount
            else MessageState.PARTIALLY_REVERSED
        )
        self._storage.update_message_state(key, state, give_back)
        return AuthResponse(RC.APPROVED.value, message=f"reversed {give_back} of {original.amount}")
