"""Phone-link conformance checks, run from the terminal side against any phone in the field.

Each :class:`Check` is a row of data (name, what is sent, the status word expected) plus a
function that builds the command APDUs (through :class:`TerminalLink` or as raw bytes) and judges
the answers.  No I/O here: the caller passes ``transmit`` (bytes in, bytes out, raising
:class:`TransportError` when the link breaks) and ``pause`` (for polling the user), as
:func:`firmware_sim.emv_reader.run_reader` does, so the same suite runs in memory in the tests
and over ``tcp:``, ``pcsc:`` or ``nfcpy:`` from ``swipepay conformance``.

Every check starts with its own SELECT, so one failing check cannot poison the next.

The checks judge the phone as a reader sees it.  On Android the reader talks to the phone's HCE
stack first, which routes commands to an app only after a SELECT of an AID the app registers:
before that it answers by itself (``6F00`` to any other command, ``6A82`` to a SELECT of an AID
nobody registers).  Where a check can meet those answers it accepts them, says so in its
detail, and then checks what the app itself answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.apdu import ResponseApdu
from swipepay.firmware_sim.certificate import TerminalCertificate, issue_certificate
from swipepay.firmware_sim.confirmation import transaction_digest, verify_confirmation
from swipepay.firmware_sim.errors import ConfigError, SwipepayError, TransportError
from swipepay.firmware_sim.phonelink.protocol import AID, ConfirmationStatus, Ins
from swipepay.firmware_sim.phonelink.terminal_link import PhoneRefused, TerminalLink
from swipepay.firmware_sim.statuswords import SW
from swipepay.firmware_sim.transaction import Transaction, TxnType

Transmit = Callable[[bytes], bytes]
Pause = Callable[[float], None]

#: An AID no swipepay phone answers to (same length, different proprietary value).
FOREIGN_AID = bytes.fromhex("F0000000000001")
#: What Android's HCE stack answers itself to a command other than a SELECT while no service is
#: selected (the command never reaches an app).
ANDROID_NOTHING_SELECTED = SW.NO_PRECISE_DIAGNOSIS


@dataclass(frozen=True)
class Context:
    """What the terminal side knows: its certified key, the CA (for an expired certificate),
    the card the phone should be bound to, and the time (unix seconds)."""

    certificate: TerminalCertificate
    signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    ca_key_index: int
    pan: str
    expiry: str
    now: int
    #: The phone's enrolled public key, to verify the confirmation signature (if known).
    phone_key: ec.EllipticCurvePublicKey | None = None
    amount: int = 100
    #: Polls of GET CONFIRMATION before the full transaction gives up, and the pause between.
    max_polls: int = 300
    poll_interval: float = 0.2
    random: Callable[[int], bytes] = os.urandom
    #: The AID the phone answers to (``--aid``; the lab's by default).
    aid: bytes = AID

    @property
    def card_id(self) -> bytes:
        return self.pan.encode("ascii")


class CheckFailed(Exception):
    """A check saw something other than what it expected (carries the explanation)."""


@dataclass
class Probe:
    """The link as one check sees it: sends, records every status word seen."""

    transmit: Transmit
    pause: Pause
    seen: list[int] = field(default_factory=list)

    def send(self, apdu: bytes) -> bytes:
        response = self.transmit(apdu)
        try:
            sw = ResponseApdu.parse(response).sw
        except SwipepayError:
            raise CheckFailed(f"malformed response {response.hex()}") from None
        self.seen.append(sw)
        return response

    def expect(self, apdu: bytes, sw: int, what: str) -> bytes:
        response = self.send(apdu)
        got = self.seen[-1]
        if got != sw:
            raise CheckFailed(f"{what}: expected {sw:04X}, got {got:04X}")
        return response


@dataclass(frozen=True)
class Check:
    name: str
    sends: str
    expected: str
    run: Callable[[Context, Probe], str]


@dataclass(frozen=True)
class CheckResult:
    name: str
    sends: str
    expected: str
    seen: str
    passed: bool
    detail: str = ""
    #: True when the link broke during the check: the driver must reconnect for the next one.
    link_broken: bool = False


# -- building blocks ---------------------------------------------------------------------


def _link(ctx: Context, cert: TerminalCertificate | None = None) -> TerminalLink:
    return TerminalLink(cert or ctx.certificate, ctx.signing_key, ctx.random, ctx.aid)


def _select(probe: Probe, link: TerminalLink) -> None:
    link.handle_select(probe.expect(link.select_command().apdu, SW.OK, "SELECT"))


def _handshake(ctx: Context, probe: Probe) -> TerminalLink:
    link = _link(ctx)
    _select(probe, link)
    link.handle_connect(probe.expect(link.connect_command(ctx.card_id).apdu, SW.OK, "CONNECT"))
    link.handle_authenticate(probe.expect(link.authenticate_command().apdu, SW.OK, "AUTH"))
    return link


def _txn(ctx: Context, amount: int | None = None) -> Transaction:
    at = datetime.fromtimestamp(ctx.now, UTC)
    return Transaction(
        type=TxnType.PURCHASE,
        amount=ctx.amount if amount is None else amount,
        pan=ctx.pan,
        expiry=ctx.expiry,
        terminal_id=ctx.certificate.terminal_id,
        merchant_id=ctx.certificate.merchant_id,
        stan=f"{ctx.now % 1_000_000:06d}",
        transmitted_at=at.strftime("%m%d%H%M%S"),
        currency="978",
    )


def _other_cert(
    ctx: Context, ca_key: ec.EllipticCurvePrivateKey, not_before: int, not_after: int
) -> TerminalCertificate:
    c = ctx.certificate
    return issue_certificate(
        ca_key,
        ctx.ca_key_index,
        terminal_id=c.terminal_id,
        merchant_id=c.merchant_id,
        merchant_name=c.merchant_name,
        public_key=c.public_key,
        not_before=not_before,
        not_after=not_after,
    )


def _auth_with(
    ctx: Context, probe: Probe, cert: TerminalCertificate, raw: bytes | None = None, what: str = ""
) -> str:
    link = _link(ctx, cert)
    _select(probe, link)
    link.handle_connect(probe.expect(link.connect_command(ctx.card_id).apdu, SW.OK, "CONNECT"))
    probe.expect(link.authenticate_command(raw).apdu, SW.SECURITY_NOT_SATISFIED,
                 f"AUTHENTICATE{what}")
    # The session must be gone: a payment request on the (never confirmed) keys is out of order.
    probe.expect(bytes([0x80, Ins.PAYMENT_REQUEST, 0, 0]), SW.CONDITIONS_NOT_SATISFIED, "after")
    return "refused, session wiped"


def _patched(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    out[offset] = value
    return bytes(out)


def malformed_certificates(cert: TerminalCertificate) -> tuple[tuple[str, bytes], ...]:
    """Certificates broken in their layout, each answered 6982 like an untrusted one
    (hardware_notes/phone-link.md §4): one status word for every certificate failure."""
    good = cert.encode()
    key_at = 25 + good[24]
    return (
        ("version 02", _patched(good, 0, 0x02)),
        ("one byte short", good[:-1]),
        ("one byte too long", good + b"\x00"),
        ("merchant_name_len 0", _patched(good, 24, 0)),
        ("control byte in terminal_id", _patched(good, 1, 0x01)),
        ("newline in merchant_name", _patched(good, 25, 0x0A)),
        ("public key not a point", _patched(good, key_at, 0x05)),
    )


def _raw_after_select(ctx: Context, probe: Probe, apdu: bytes, sw: int, what: str) -> str:
    _select(probe, _link(ctx))
    probe.expect(apdu, sw, what)
    return ""


# -- the checks ----------------------------------------------------------------------------


def check_select(ctx: Context, probe: Probe) -> str:
    _select(probe, _link(ctx))
    return "FCI with protocol version 01"


def check_wrong_aid(ctx: Context, probe: Probe) -> str:
    probe.expect(bytes([0, 0xA4, 4, 0, len(FOREIGN_AID)]) + FOREIGN_AID + b"\x00",
                 SW.FILE_NOT_FOUND, "SELECT foreign AID")
    # Not selected any more: proprietary commands are refused until the next SELECT.
    poll = bytes([0x80, Ins.GET_CONFIRMATION, 0, 0])
    probe.send(poll)
    if probe.seen[-1] == SW.CONDITIONS_NOT_SATISFIED:
        return ""
    if probe.seen[-1] != ANDROID_NOTHING_SELECTED:
        raise CheckFailed(f"command while deselected: expected 6985 (or Android's 6F00), "
                          f"got {probe.seen[-1]:04X}")
    # Android answered for a phone with no service selected; the app must still refuse the
    # command once it is selected and no session is open.
    _select(probe, _link(ctx))
    probe.expect(poll, SW.CONDITIONS_NOT_SATISFIED, "command while only selected")
    return ("6F00 is Android's own answer while no app is selected (accepted); "
            "the selected app then refused the command")


def check_wrong_token(ctx: Context, probe: Probe) -> str:
    link = _link(ctx)
    _select(probe, link)
    other = ("0" if ctx.pan[0] != "0" else "1") + ctx.pan[1:]
    probe.expect(link.connect_command(other.encode("ascii")).apdu,
                 SW.REFERENCED_DATA_NOT_FOUND, "CONNECT for another card")
    # No state kept: AUTHENTICATE must now be out of order.
    probe.expect(bytes([0x80, Ins.AUTHENTICATE, 0, 0, 1, 0]), SW.CONDITIONS_NOT_SATISFIED,
                 "AUTHENTICATE after a refused CONNECT")
    return "answered 6A88 (not its card), kept no session"


def check_foreign_ca(ctx: Context, probe: Probe) -> str:
    rogue = ecc.generate_key()
    c = ctx.certificate
    return _auth_with(ctx, probe, _other_cert(ctx, rogue, c.not_before, c.not_after))


def check_expired(ctx: Context, probe: Probe) -> str:
    return _auth_with(ctx, probe, _other_cert(ctx, ctx.ca_key, ctx.now - 172_800, ctx.now - 86_400))


def check_malformed_cert(ctx: Context, probe: Probe) -> str:
    cases = malformed_certificates(ctx.certificate)
    for what, raw in cases:
        _auth_with(ctx, probe, ctx.certificate, raw, f" ({what})")
    return f"{len(cases)} malformed certificates refused with 6982, session wiped"


def check_tampered(ctx: Context, probe: Probe) -> str:
    link = _handshake(ctx, probe)
    apdu = bytearray(link.payment_request_command(_txn(ctx)).apdu)
    apdu[5 + 4] ^= 0x01  # first ciphertext byte, after header, Lc and the 4-byte counter
    probe.expect(bytes(apdu), SW.SECURITY_NOT_SATISFIED, "tampered PAYMENT REQUEST")
    probe.expect(link.confirmation_command().apdu, SW.CONDITIONS_NOT_SATISFIED,
                 "GET CONFIRMATION after the wipe")
    return "refused, session wiped"


def check_replay(ctx: Context, probe: Probe) -> str:
    link = _handshake(ctx, probe)
    link.handle_payment_request(
        probe.expect(link.payment_request_command(_txn(ctx)).apdu, SW.OK, "PAYMENT REQUEST")
    )
    poll = link.confirmation_command().apdu
    probe.expect(poll, SW.OK, "GET CONFIRMATION")
    probe.expect(poll, SW.SECURITY_NOT_SATISFIED, "the same GET CONFIRMATION again")
    return "replay refused (the phone showed one payment, then wiped it)"


def check_out_of_order(ctx: Context, probe: Probe) -> str:
    refused = SW.CONDITIONS_NOT_SATISFIED
    link = _link(ctx)
    _select(probe, link)
    probe.expect(bytes([0x80, Ins.AUTHENTICATE, 0, 0, 1, 0]), refused, "AUTHENTICATE first")
    probe.expect(bytes([0x80, Ins.PAYMENT_REQUEST, 0, 0, 1, 0]), refused, "PAYMENT REQUEST first")
    probe.expect(bytes([0x80, Ins.GET_CONFIRMATION, 0, 0]), refused, "GET CONFIRMATION first")
    probe.expect(bytes([0x80, Ins.RESULT, 0, 0, 1, 0]), refused, "RESULT first")
    link.handle_connect(probe.expect(link.connect_command(ctx.card_id).apdu, SW.OK, "CONNECT"))
    probe.expect(link.connect_command(ctx.card_id).apdu, refused, "CONNECT twice")
    return ""


#: Malformed length encodings; each must get 6700 (hardware_notes/design.md §4: short APDUs only).
LENGTH_CASES: tuple[tuple[str, bytes], ...] = (
    ("3-byte header", bytes.fromhex("801000")),
    ("Lc longer than the data", bytes.fromhex("80100000050102")),
    ("data longer than Lc + Le", bytes.fromhex("801000000201020304")),
    ("extended Lc (case 3E)", bytes.fromhex("8010000000000301 0203".replace(" ", ""))),
    ("extended Le (case 2E)", bytes.fromhex("80300000000100")),
    ("extended Lc + Le (case 4E)", bytes.fromhex("801000000000020102 0000".replace(" ", ""))),
    ("Lc 00 followed by one byte", bytes.fromhex("801000000005")),
)


def check_lengths(ctx: Context, probe: Probe) -> str:
    _select(probe, _link(ctx))
    for what, apdu in LENGTH_CASES:
        probe.expect(apdu, SW.WRONG_LENGTH, what)
    return f"{len(LENGTH_CASES)} malformed encodings"


def check_wrong_cla(ctx: Context, probe: Probe) -> str:
    return _raw_after_select(ctx, probe, bytes([0xA0, Ins.CONNECT, 0, 0]),
                             SW.CLA_NOT_SUPPORTED, "CLA A0")


def check_unknown_ins(ctx: Context, probe: Probe) -> str:
    return _raw_after_select(ctx, probe, bytes([0x80, 0x50, 0, 0]), SW.INS_NOT_SUPPORTED, "INS 50")


def check_transaction(ctx: Context, probe: Probe) -> str:
    link = _handshake(ctx, probe)
    txn = _txn(ctx)
    link.handle_payment_request(
        probe.expect(link.payment_request_command(txn).apdu, SW.OK, "PAYMENT REQUEST")
    )
    polls = 0
    while True:
        polls += 1
        answer = link.handle_confirmation(
            probe.expect(link.confirmation_command().apdu, SW.OK, "GET CONFIRMATION")
        )
        if answer.status is not ConfirmationStatus.PENDING:
            break
        if polls >= ctx.max_polls:
            raise CheckFailed(f"no answer from the phone's user after {polls} polls")
        probe.pause(ctx.poll_interval)
    if answer.status is not ConfirmationStatus.APPROVED:
        link.handle_result(probe.expect(link.result_command("05", None).apdu, SW.OK, "RESULT"))
        raise CheckFailed(f"the user answered {answer.status.name} (confirm on the phone)")
    assert answer.pin_block is not None and answer.ksn is not None
    assert answer.signature is not None
    if ctx.phone_key is not None:
        digest = transaction_digest(txn, answer.pin_block, answer.ksn)
        verify_confirmation(ctx.phone_key, digest, answer.signature)
    link.handle_result(probe.expect(link.result_command("00", "CONF01").apdu, SW.OK, "RESULT"))
    signed = "signature verified" if ctx.phone_key is not None else "signature not checked"
    return f"approved after {polls} poll(s), {signed}"


#: The suite, in the order it runs.  The full transaction is last: it needs the user.
CHECKS: tuple[Check, ...] = (
    Check("select", "SELECT {aid}", "9000", check_select),
    Check("wrong-aid", f"SELECT {FOREIGN_AID.hex().upper()}, then 80 30",
          "6A82 6985 (Android: 6A82 6F00, then 9000 6985)", check_wrong_aid),
    Check("wrong-token", "CONNECT with another card's token, then AUTHENTICATE", "6A88 6985",
          check_wrong_token),
    Check("foreign-ca", "AUTHENTICATE with a certificate from an unknown CA", "6982 6985",
          check_foreign_ca),
    Check("expired-cert", "AUTHENTICATE with an expired certificate", "6982 6985",
          check_expired),
    Check("malformed-cert", "AUTHENTICATE with malformed certificates (version, length, "
          "TID, merchant name, key)", "6982 6985", check_malformed_cert),
    Check("tampered", "PAYMENT REQUEST with one ciphertext bit flipped", "6982 6985",
          check_tampered),
    Check("replay", "the same GET CONFIRMATION frame twice", "9000 6982", check_replay),
    Check("out-of-order", "AUTH/PAYMENT/GET CONF/RESULT before CONNECT; CONNECT twice", "6985",
          check_out_of_order),
    Check("lengths", "Lc/Le mismatches and extended-length APDUs", "6700", check_lengths),
    Check("wrong-cla", "A0 10 00 00", "6E00", check_wrong_cla),
    Check("unknown-ins", "80 50 00 00", "6D00", check_unknown_ins),
    Check("transaction", "full purchase; the phone's user must confirm", "9000", check_transaction),
)

def run_check(check: Check, ctx: Context, transmit: Transmit, pause: Pause) -> CheckResult:
    """Run one check; never raises for anything the phone or the link did."""
    probe = Probe(transmit, pause)
    broken = False
    try:
        detail = check.run(ctx, probe)
        passed = True
    except CheckFailed as exc:
        passed, detail = False, str(exc)
    except PhoneRefused as exc:
        passed, detail = False, str(exc)
    except TransportError as exc:
        passed, detail, broken = False, f"link: {exc}", True
    except SwipepayError as exc:
        passed, detail = False, f"{type(exc).__name__}: {exc}"
    seen = " ".join(f"{sw:04X}" for sw in probe.seen)
    sends = check.sends.replace("{aid}", ctx.aid.hex().upper())
    return CheckResult(check.name, sends, check.expected, seen, passed, detail, broken)


def select_checks(names: list[str] | None) -> tuple[Check, ...]:
    """The checks named (all if None); unknown names are a LocalError for the CLI to report."""
    if not names:
        return CHECKS
    known = {c.name: c for c in CHECKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown check {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in names)
