"""The terminal side of the phone link: builds command APDUs and checks the phone's answers.

Sans-IO: each ``*_command`` method returns the bytes to transmit and each ``handle_*`` method
takes the response bytes; the terminal firmware decides when to call which, and drivers move
the bytes.  Any answer that does not check out raises a :class:`RemoteError` subclass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.apdu import CommandApdu, ResponseApdu
from swipepay.firmware_sim.certificate import TerminalCertificate
from swipepay.firmware_sim.errors import LocalProtocolError, RemoteError, SecurityError
from swipepay.firmware_sim.phonelink.protocol import (
    AID,
    CLA_ISO,
    CLA_PROPRIETARY,
    NONCE_LEN,
    PROTOCOL_VERSION,
    ConfirmationBody,
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
from swipepay.firmware_sim.secure_channel import (
    SecureChannel,
    SessionKeys,
    check_key_confirmation,
    derive_session_keys,
)
from swipepay.firmware_sim.statuswords import SW, describe
from swipepay.firmware_sim.tlv import find_tag
from swipepay.firmware_sim.transaction import Transaction


class PhoneRefused(RemoteError):
    """The phone answered a command with an error status word."""

    def __init__(self, ins: Ins, sw: int) -> None:
        text = f"phone refused {ins.name}: {describe(sw)}"
        if ins is Ins.AUTHENTICATE and sw == SW.SECURITY_NOT_SATISFIED:
            text += (
                " — the phone does not trust this terminal's certificate: the certificates come"
                " from another lab (give the --home the phone was enrolled in)"
            )
        super().__init__(text, status_word=sw)
        self.ins = ins
        self.sw = sw


class PhoneNotBound(PhoneRefused):
    """The phone in the field is bound to another card (it answered 6A88 to CONNECT)."""


@dataclass(frozen=True)
class Exchange:
    """One command on the link, named for narration and traces."""

    ins: Ins
    apdu: bytes


class TerminalLink:
    """One phone-link session, from SELECT to RESULT."""

    def __init__(
        self,
        certificate: TerminalCertificate,
        signing_key: ec.EllipticCurvePrivateKey,
        random: Callable[[int], bytes] = os.urandom,
        aid: bytes = AID,
    ) -> None:
        self.certificate = certificate
        #: The AID the SELECT names (the phone's applet must answer to the same one).
        self.aid = aid
        self._signing_key = signing_key
        self._random = random
        self._ephemeral: ec.EllipticCurvePrivateKey | None = None
        self._connect_body = b""
        self._h1 = b""
        self._auth_body = b""
        self._keys: SessionKeys | None = None
        self._channel: SecureChannel | None = None
        self._headers: dict[Ins, bytes] = {}

    # -- commands ------------------------------------------------------------------------

    def select_command(self) -> Exchange:
        return self._plain(Ins.SELECT, CommandApdu(CLA_ISO, Ins.SELECT, 0x04, 0x00, self.aid, 256))

    def connect_command(self, card_id: bytes) -> Exchange:
        nonce = self._random(NONCE_LEN)
        self._ephemeral = ecc.generate_key()
        self._connect_body = encode_fields(
            [
                (Tag.USER_TOKEN, user_token(nonce, card_id)),
                (Tag.TERMINAL_NONCE, nonce),
                (Tag.TERMINAL_KEY, ecc.encode_point(self._ephemeral.public_key())),
            ]
        )
        return self._plain(Ins.CONNECT, self._proprietary(Ins.CONNECT, self._connect_body))

    def authenticate_command(self, certificate: bytes | None = None) -> Exchange:
        """AUTHENTICATE with our certificate, or with ``certificate`` bytes instead (the
        conformance suite sends malformed ones to check the phone refuses them)."""
        if not self._h1:
            raise LocalProtocolError("AUTHENTICATE before CONNECT")
        signature = ecc.sign_prehashed(self._signing_key, self._h1)
        cert = self.certificate.encode() if certificate is None else certificate
        self._auth_body = encode_fields(
            [(Tag.CERTIFICATE, cert), (Tag.TERMINAL_SIGNATURE, signature)]
        )
        return self._plain(Ins.AUTHENTICATE, self._proprietary(Ins.AUTHENTICATE, self._auth_body))

    def payment_request_command(self, txn: Transaction) -> Exchange:
        body = PaymentRequestBody(
            txn_code=txn.spec.phone_code,
            amount=txn.amount,
            currency=txn.currency,
            stan=txn.stan,
            transmitted_at=txn.transmitted_at,
        )
        return self._sealed(Ins.PAYMENT_REQUEST, body.encode())

    def confirmation_command(self) -> Exchange:
        return self._sealed(Ins.GET_CONFIRMATION, b"")

    def result_command(
        self, response_code: str, auth_code: str | None, sealed_balance: bytes | None = None
    ) -> Exchange:
        """RESULT; ``sealed_balance`` is the center's field 63, relayed as it came."""
        body = ResultBody(response_code, auth_code, sealed_balance)
        return self._sealed(Ins.RESULT, body.encode())

    # -- answers -------------------------------------------------------------------------

    def handle_select(self, response: bytes) -> None:
        data = self._check(Ins.SELECT, response)
        version = find_tag(data, Tag.VERSION)
        if version is not None and version != bytes([PROTOCOL_VERSION]):
            raise RemoteError(f"phone speaks protocol version {version.hex()}, not 01")

    def handle_connect(self, response: bytes) -> None:
        data = self._check(Ins.CONNECT, response)
        f = decode_fields(data, (Tag.PHONE_NONCE, Tag.PHONE_KEY))
        assert self._ephemeral is not None
        self._h1 = connect_transcript(self._connect_body, data, self.aid)
        self._keys = derive_session_keys(self._ephemeral, f[Tag.PHONE_KEY], self._h1)
        self._ephemeral = None

    def handle_authenticate(self, response: bytes) -> None:
        data = self._check(Ins.AUTHENTICATE, response)
        f = decode_fields(data, (Tag.KEY_CONFIRMATION,))
        assert self._keys is not None
        h2 = auth_transcript(self._h1, self._auth_body)
        check_key_confirmation(self._keys, "phone", h2, f[Tag.KEY_CONFIRMATION])
        self._channel = SecureChannel(self._keys, "terminal")

    def handle_payment_request(self, response: bytes) -> None:
        if self._open(Ins.PAYMENT_REQUEST, response):
            raise SecurityError("unexpected data in the PAYMENT REQUEST answer")

    def handle_confirmation(self, response: bytes) -> ConfirmationBody:
        return ConfirmationBody.decode(self._open(Ins.GET_CONFIRMATION, response))

    def handle_result(self, response: bytes) -> None:
        self._open(Ins.RESULT, response)
        self.close()

    def close(self) -> None:
        """Forget the session keys (after RESULT or when the transaction ends early)."""
        if self._channel is not None:
            self._channel.wipe()
        self._channel = None
        self._keys = None
        self._ephemeral = None

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _proprietary(ins: Ins, data: bytes) -> CommandApdu:
        return CommandApdu(CLA_PROPRIETARY, ins, 0x00, 0x00, data, 256)

    def _plain(self, ins: Ins, command: CommandApdu) -> Exchange:
        self._headers[ins] = command.header
        return Exchange(ins, command.encode())

    def _sealed(self, ins: Ins, plaintext: bytes) -> Exchange:
        if self._channel is None:
            raise LocalProtocolError(f"{ins.name} before the secure channel is up")
        header = bytes([CLA_PROPRIETARY, ins, 0x00, 0x00])
        frame = self._channel.seal(header, plaintext)
        return self._plain(ins, self._proprietary(ins, frame))

    def _check(self, ins: Ins, response: bytes) -> bytes:
        answer = ResponseApdu.parse(response)
        if answer.sw != SW.OK:
            error = PhoneNotBound if (ins is Ins.CONNECT and answer.sw == 0x6A88) else PhoneRefused
            raise error(ins, answer.sw)
        return answer.data

    def _open(self, ins: Ins, response: bytes) -> bytes:
        data = self._check(ins, response)
        if self._channel is None:
            raise LocalProtocolError(f"{ins.name} answer without a secure channel")
        return self._channel.open(response_aad(self._headers[ins]), data)
