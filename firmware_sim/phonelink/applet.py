"""The phone applet: the card side of the phone link, APDU bytes in, APDU bytes out.

It answers like an Android HCE service (SELECT by AID first, short APDUs only) and does no I/O:
the driver hands it each command with the current time, and the phone's user interface talks to
it through :meth:`PhoneApplet.take_events`, :meth:`PhoneApplet.confirm` and
:meth:`PhoneApplet.decline`.  Every malformed or out-of-order command gets a status word, and
any failure after CONNECT wipes the session (hardware_notes/design.md §4).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.apdu import CommandApdu, ResponseApdu
from swipepay.firmware_sim.balance_seal import KEY_USAGE as BALANCE_KEY_USAGE
from swipepay.firmware_sim.balance_seal import BalanceContext, open_balance
from swipepay.firmware_sim.certificate import (
    CertificateError,
    TerminalCertificate,
    parse_certificate,
    verify_certificate,
)
from swipepay.firmware_sim.confirmation import Decision, confirmation_digest, sign_confirmation
from swipepay.firmware_sim.dukpt import DukptDevice
from swipepay.firmware_sim.errors import (
    DecodeError,
    RemoteProtocolError,
    SecurityError,
    SwipepayError,
)
from swipepay.firmware_sim.phonelink.protocol import (
    AID,
    CLA_ISO,
    CLA_PROPRIETARY,
    NONCE_LEN,
    PROTOCOL_VERSION,
    ConfirmationBody,
    ConfirmationStatus,
    Ins,
    PaymentRequestBody,
    ResultBody,
    Tag,
    decode_fields,
    encode_fields,
    user_token,
)
from swipepay.firmware_sim.phonelink.transcript import (
    auth_transcript,
    connect_transcript,
    response_aad,
)
from swipepay.firmware_sim.pinblock import encode_format4
from swipepay.firmware_sim.secure_channel import (
    SecureChannel,
    SessionKeys,
    derive_session_keys,
    key_confirmation,
)
from swipepay.firmware_sim.statuswords import SW
from swipepay.firmware_sim.transaction import PHONE_CODE_TO_TYPE, TXN_TYPES, TxnType


class State(Enum):
    IDLE = auto()
    SELECTED = auto()
    CONNECTED = auto()
    AUTHENTICATED = auto()
    REQUESTED = auto()
    ANSWERED = auto()


#: Which instruction is accepted in which state, and the state it leads to on success.
#: GET CONFIRMATION stays in REQUESTED while the user has not acted (see _get_confirmation).
TRANSITIONS: dict[tuple[State, Ins], State] = {
    (State.SELECTED, Ins.CONNECT): State.CONNECTED,
    (State.CONNECTED, Ins.AUTHENTICATE): State.AUTHENTICATED,
    (State.AUTHENTICATED, Ins.PAYMENT_REQUEST): State.REQUESTED,
    (State.REQUESTED, Ins.GET_CONFIRMATION): State.ANSWERED,
    (State.ANSWERED, Ins.GET_CONFIRMATION): State.ANSWERED,
    (State.ANSWERED, Ins.RESULT): State.SELECTED,
}

#: Instructions whose command and response bodies are secure-channel frames.
SEALED = frozenset({Ins.PAYMENT_REQUEST, Ins.GET_CONFIRMATION, Ins.RESULT})


@dataclass(frozen=True)
class PhoneIdentity:
    """What enrollment put on the phone: the bound card, its signing key, the CA keys, and the
    terminal IDs the acquirer had revoked when the profile was written (refused at AUTHENTICATE
    like any other certificate failure; hardware_notes/phone-link.md §4)."""

    card_id: bytes
    pan: str
    signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    ca_keys: Mapping[int, ec.EllipticCurvePublicKey] = field(repr=False)
    revoked_terminals: frozenset[str] = frozenset()


# Events for the phone's user interface --------------------------------------------------


@dataclass(frozen=True)
class PaymentShown:
    """Show this and ask the user to confirm and type the PIN (merchant from the certificate)."""

    merchant_name: str
    terminal_id: str
    txn_type: str
    amount: int
    currency: str


@dataclass(frozen=True)
class ResultShown:
    """The center's answer; ``balance`` (minor units, in the request's currency) only after an
    approved balance inquiry, opened from the center's sealed balance (the terminal never has
    it in clear)."""

    response_code: str
    auth_code: str | None
    balance: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class SessionWiped:
    reason: str


PhoneEvent = PaymentShown | ResultShown | SessionWiped


@dataclass
class _Session:
    terminal_nonce: bytes
    phone_key: ec.EllipticCurvePrivateKey = field(repr=False)
    transcript: bytes
    keys: SessionKeys | None = field(default=None, repr=False)
    channel: SecureChannel | None = None
    certificate: TerminalCertificate | None = None
    request: PaymentRequestBody | None = None
    answer: ConfirmationBody | None = None
    #: DUKPT "data-decrypt" key of the KSN the user's confirmation used (balance inquiry only).
    balance_key: bytes | None = field(default=None, repr=False)


class PhoneApplet:
    """The listening-and-verification unit plus the payment confirmation of claims 6-10."""

    def __init__(
        self,
        identity: PhoneIdentity,
        dukpt: DukptDevice,
        random: Callable[[int], bytes] = os.urandom,
        aid: bytes = AID,
    ) -> None:
        self.identity = identity
        #: The AID this applet answers a SELECT for.
        self.aid = aid
        self.dukpt = dukpt
        self._random = random
        self.state = State.IDLE
        self._session: _Session | None = None
        self._events: list[PhoneEvent] = []
        self._now = 0

    # -- driver side --------------------------------------------------------------------

    def process(self, apdu: bytes, now: int) -> bytes:
        """Handle one command APDU at unix time ``now``; always returns a response APDU."""
        self._now = now
        try:
            # Short APDUs only (hardware_notes/design.md §4): extended length gets 6700.
            command = CommandApdu.parse(apdu, short_only=True)
        except SwipepayError as exc:
            return self._fail(exc)
        try:
            data = self._dispatch(command)
        except SwipepayError as exc:
            return self._fail(exc)
        return ResponseApdu(data, SW.OK).encode()

    def deactivate(self) -> None:
        """The field went away or the reader deselected us: forget everything."""
        if self.state is not State.IDLE:
            self._wipe("deactivated")
        self.state = State.IDLE

    # -- user-interface side -----------------------------------------------------------

    def take_events(self) -> list[PhoneEvent]:
        events, self._events = self._events, []
        return events

    @property
    def awaiting_user(self) -> bool:
        s = self._session
        return self.state is State.REQUESTED and s is not None and s.answer is None

    def confirm(self, pin: str) -> None:
        """The user approved and typed ``pin``: build the PIN block and sign, then drop the PIN."""
        s = self._pending_session()
        assert s.request is not None and s.certificate is not None
        pin_key, ksn = self.dukpt.next_pin_key()
        pin_block = encode_format4(pin, self.identity.pan, pin_key, self._random(8))
        del pin, pin_key
        txn_type = PHONE_CODE_TO_TYPE[s.request.txn_code]
        if txn_type is TxnType.BALANCE:
            s.balance_key = self.dukpt.working_key(ksn, BALANCE_KEY_USAGE)
        spec = TXN_TYPES[txn_type]
        digest = confirmation_digest(
            pan=self.identity.pan,
            processing_code=spec.processing_code,
            amount=s.request.amount,
            currency=s.request.currency,
            terminal_id=s.certificate.terminal_id,
            stan=s.request.stan,
            transmitted_at=s.request.transmitted_at,
            decision=Decision.APPROVED,
            pin_block=pin_block,
            ksn=ksn,
        )
        signature = sign_confirmation(self.identity.signing_key, digest)
        s.answer = ConfirmationBody(ConfirmationStatus.APPROVED, pin_block, ksn, signature)

    def decline(self) -> None:
        self._pending_session().answer = ConfirmationBody(ConfirmationStatus.DECLINED)

    def expire(self) -> None:
        """The user did not act within the phone's own timeout."""
        self._pending_session().answer = ConfirmationBody(ConfirmationStatus.TIMED_OUT)

    # -- internals -----------------------------------------------------------------------

    def _pending_session(self) -> _Session:
        if not self.awaiting_user or self._session is None:
            raise RemoteProtocolError("no payment is waiting for the user")
        return self._session

    def _fail(self, exc: SwipepayError) -> bytes:
        if self.state not in (State.IDLE, State.SELECTED):
            self._wipe(type(exc).__name__)
            self.state = State.SELECTED
        return ResponseApdu(b"", exc.status_word).encode()

    def _wipe(self, reason: str) -> None:
        s = self._session
        if s is not None and s.channel is not None:
            s.channel.wipe()
        self._session = None
        self._events.append(SessionWiped(reason))

    def _dispatch(self, command: CommandApdu) -> bytes:
        if command.ins == Ins.SELECT:
            if command.cla != CLA_ISO:
                raise RemoteProtocolError(
                    "SELECT must use class 00", status_word=SW.CLA_NOT_SUPPORTED
                )
            return self._select(command)
        if command.cla != CLA_PROPRIETARY:
            raise RemoteProtocolError("class not supported", status_word=SW.CLA_NOT_SUPPORTED)
        try:
            ins = Ins(command.ins)
        except ValueError:
            raise RemoteProtocolError(
                "instruction not supported", status_word=SW.INS_NOT_SUPPORTED
            ) from None
        if self.state is State.IDLE:
            raise RemoteProtocolError(
                "applet not selected", status_word=SW.CONDITIONS_NOT_SATISFIED
            )
        if command.p1 != 0 or command.p2 != 0:
            raise RemoteProtocolError("P1-P2 must be 00 00", status_word=SW.WRONG_P1P2)
        nxt = TRANSITIONS.get((self.state, ins))
        if nxt is None:
            raise RemoteProtocolError(
                f"{ins.name} not allowed now", status_word=SW.CONDITIONS_NOT_SATISFIED
            )
        handler = self._HANDLERS[ins]
        if ins in SEALED:
            channel = self._channel()
            body = channel.open(command.header, command.data)
            answer = handler(self, body)
            user_pending = self._session is not None and self._session.answer is None
            # A pending poll leaves the phone waiting for its user; everything else moves on.
            self.state = State.REQUESTED if user_pending and ins is Ins.GET_CONFIRMATION else nxt
            sealed = channel.seal(response_aad(command.header), answer)
            if ins is Ins.RESULT:
                self._wipe("transaction complete")
            return sealed
        answer = handler(self, command.data)
        self.state = nxt
        return answer

    def _channel(self) -> SecureChannel:
        if self._session is None or self._session.channel is None:
            raise SecurityError("no secure channel")
        return self._session.channel

    def _select(self, command: CommandApdu) -> bytes:
        if command.p1 != 0x04 or command.p2 not in (0x00, 0x0C):
            raise RemoteProtocolError("only SELECT by DF name", status_word=SW.WRONG_P1P2)
        if command.data != self.aid:
            self.deactivate()
            raise RemoteProtocolError("application not found", status_word=SW.FILE_NOT_FOUND)
        if self.state is not State.IDLE:
            self._wipe("reselected")
        self.state = State.SELECTED
        fci = encode_fields(
            [
                (Tag.DF_NAME, self.aid),
                (Tag.FCI_PROPRIETARY, encode_fields([(Tag.VERSION, bytes([PROTOCOL_VERSION]))])),
            ]
        )
        return encode_fields([(Tag.FCI, fci)])

    def _connect(self, data: bytes) -> bytes:
        f = decode_fields(data, (Tag.USER_TOKEN, Tag.TERMINAL_NONCE, Tag.TERMINAL_KEY))
        expected = user_token(f[Tag.TERMINAL_NONCE], self.identity.card_id)
        if not hmac.compare_digest(expected, f[Tag.USER_TOKEN]):
            # Not our card: reveal nothing, keep no state (hardware_notes/design.md §4).
            raise RemoteProtocolError(
                "user token does not match the bound card",
                status_word=SW.REFERENCED_DATA_NOT_FOUND,
            )
        terminal_key = f[Tag.TERMINAL_KEY]
        ecc.decode_point(terminal_key)
        phone_key = ecc.generate_key()
        answer = encode_fields(
            [
                (Tag.PHONE_NONCE, self._random(NONCE_LEN)),
                (Tag.PHONE_KEY, ecc.encode_point(phone_key.public_key())),
            ]
        )
        transcript = connect_transcript(data, answer, self.aid)
        keys = derive_session_keys(phone_key, terminal_key, transcript)
        self._session = _Session(
            f[Tag.TERMINAL_NONCE], phone_key, transcript, keys, SecureChannel(keys, "phone")
        )
        return answer

    def _authenticate(self, data: bytes) -> bytes:
        s = self._session
        assert s is not None and s.keys is not None
        f = decode_fields(data, (Tag.CERTIFICATE, Tag.TERMINAL_SIGNATURE))
        try:
            cert = parse_certificate(f[Tag.CERTIFICATE])
        except DecodeError as exc:
            # One status word for every certificate failure, malformed or untrusted: 6982
            # (hardware_notes/phone-link.md §4); a foreign terminal learns nothing from it.
            raise CertificateError(str(exc)) from None
        verify_certificate(cert, self.identity.ca_keys, self._now, self.identity.revoked_terminals)
        ecc.verify_prehashed(
            ecc.decode_point(cert.public_key),
            s.transcript,
            f[Tag.TERMINAL_SIGNATURE],
            what="terminal signature",
        )
        s.certificate = cert
        full = auth_transcript(s.transcript, data)
        return encode_fields([(Tag.KEY_CONFIRMATION, key_confirmation(s.keys, "phone", full))])

    def _payment_request(self, body: bytes) -> bytes:
        s = self._session
        assert s is not None and s.certificate is not None
        request = PaymentRequestBody.decode(body)
        txn_type = PHONE_CODE_TO_TYPE.get(request.txn_code)
        if txn_type is None or not TXN_TYPES[txn_type].needs_phone:
            raise DecodeError("unknown transaction type")
        if not TXN_TYPES[txn_type].has_amount and request.amount != 0:
            raise DecodeError("a balance inquiry carries amount 0")
        s.request = request
        self._events.append(
            PaymentShown(
                merchant_name=s.certificate.merchant_name,
                terminal_id=s.certificate.terminal_id,
                txn_type=txn_type.value,
                amount=request.amount,
                currency=request.currency,
            )
        )
        return b""

    def _get_confirmation(self, body: bytes) -> bytes:
        if body:
            raise DecodeError("GET CONFIRMATION carries no data")
        s = self._session
        assert s is not None
        if s.answer is None:
            return ConfirmationBody(ConfirmationStatus.PENDING).encode()
        return s.answer.encode()

    def _result(self, body: bytes) -> bytes:
        s = self._session
        assert s is not None and s.answer is not None
        result = ResultBody.decode(body)
        balance = None if result.sealed_balance is None else self._open_balance(s, result)
        currency = None if balance is None or s.request is None else s.request.currency
        self._events.append(ResultShown(result.response_code, result.auth_code, balance, currency))
        return b""

    def _open_balance(self, s: _Session, result: ResultBody) -> int:
        """Open the center's sealed balance (:mod:`firmware_sim.balance_seal`): only after an
        approved balance inquiry, bound to this transaction, in the request's currency.  A
        terminal that altered it gets 6982 (SecurityError) and the phone shows nothing."""
        request, answer, cert = s.request, s.answer, s.certificate
        assert request is not None and answer is not None and cert is not None
        if (
            result.response_code != "00"
            or s.balance_key is None
            or answer.ksn is None
            or result.sealed_balance is None
        ):
            raise DecodeError("a sealed balance answers only an approved balance inquiry")
        context = BalanceContext(cert.terminal_id, request.stan, request.transmitted_at)
        balance, currency = open_balance(s.balance_key, answer.ksn, context, result.sealed_balance)
        if currency != request.currency:
            raise DecodeError("sealed balance is in another currency than the request")
        return balance

    _HANDLERS: ClassVar[dict[Ins, Callable[[PhoneApplet, bytes], bytes]]] = {
        Ins.CONNECT: _connect,
        Ins.AUTHENTICATE: _authenticate,
        Ins.PAYMENT_REQUEST: _payment_request,
        Ins.GET_CONFIRMATION: _get_confirmation,
        Ins.RESULT: _result,
    }
