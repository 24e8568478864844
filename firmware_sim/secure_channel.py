"""The phone-link secure channel (hardware_notes/design.md §4): keeps the request and PIN private.

The terminal and the phone each make an ephemeral P-256 key for one session, exchange the
public halves in CONNECT, and hash every handshake message into a :class:`Transcript`.
:func:`derive_session_keys` turns the ECDH secret into keys bound to that transcript (HKDF-SHA256,
salt = transcript digest), so a man in the middle who altered any handshake byte ends up with
different keys and fails :func:`check_key_confirmation`.

**Transcript.**  SHA-256 over ``b"swipepay/transcript/v1"`` followed by one record per item::

    len(label) (1 byte) || label || len(data) (4 bytes, big-endian) || data

The length prefixes make the encoding injective: ``add(b"ab", b"c")`` and ``add(b"a", b"bc")``
give different digests.

**Keys.**  ``HKDF-SHA256(ikm = ECDH x-coordinate, salt = transcript digest,
info = b"swipepay/sc/v1", L = 64)`` split as ``t2p (16) || p2t (16) || confirm (32)``.
Key confirmation is ``HMAC-SHA256(confirm, b"swipepay/kc/" || role || transcript digest)[:16]``
with ``role`` the ASCII ``terminal`` or ``phone`` of the side that *sends* the value.

**Frames.**  AES-128-GCM, one key per direction (terminal→phone ``t2p``, phone→terminal ``p2t``),
so a frame can never be reflected back to its sender.  Each direction counts messages from 1;
the counter is the nonce, so no nonce is ever reused under a key::

    nonce = direction (4: b"T2P\\0" or b"P2T\\0") || counter (8, big-endian)
    frame = counter (4, big-endian) || ciphertext || tag (16)      # FRAME_OVERHEAD = 20

**Associated data** is built by the caller and must be the same on both sides:

* a command (terminal → phone): its APDU header ``CLA INS P1 P2`` (4 bytes);
* a response (phone → terminal): ``b"R" || CLA INS P1 P2`` of the command it answers,

so a ciphertext cannot be moved to another instruction, nor a response passed off as a command.

**Failure.**  Every failure of :meth:`SecureChannel.open` (short frame, counter other than the next
expected one, i.e. replayed, reordered or skipped, bad tag) raises :class:`SecurityError` (status
6982) and wipes the channel: the keys are dropped and every later ``seal``/``open`` raises
``SecurityError("channel closed")``.  The session must then be restarted from CONNECT.
Python cannot zero memory it does not own, so "wiping" means dropping every reference to the keys.

A :class:`SecureChannel` must be built **once** per :class:`SessionKeys` and role: a second
channel on the same keys would restart the counters and reuse GCM nonces.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Final, Literal, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swipepay.firmware_sim.ecc import decode_point, encode_point
from swipepay.firmware_sim.errors import LocalError, SecurityError

Role = Literal["terminal", "phone"]

TRANSCRIPT_DOMAIN: Final = b"swipepay/transcript/v1"
HKDF_INFO: Final = b"swipepay/sc/v1"
KC_PREFIX: Final = b"swipepay/kc/"

DIGEST_LEN: Final = 32
DIRECTION_KEY_LEN: Final = 16
CONFIRM_KEY_LEN: Final = 32
KC_LEN: Final = 16

COUNTER_LEN: Final = 4
TAG_LEN: Final = 16
#: Bytes a frame adds to its plaintext: 4-byte counter + 16-byte GCM tag.
FRAME_OVERHEAD: Final = COUNTER_LEN + TAG_LEN
#: Highest counter that fits the 4-byte counter field.
MAX_COUNTER: Final = 2**32 - 1


@dataclass(frozen=True)
class _Direction:
    """One direction of the channel: which key and which nonce label it uses."""

    key_field: Literal["t2p", "p2t"]
    nonce_label: bytes


#: Spec as data: role → (outgoing direction, incoming direction).
_DIRECTIONS: Final[dict[str, tuple[_Direction, _Direction]]] = {
    "terminal": (_Direction("t2p", b"T2P\x00"), _Direction("p2t", b"P2T\x00")),
    "phone": (_Direction("p2t", b"P2T\x00"), _Direction("t2p", b"T2P\x00")),
}


def _as_bytes(value: bytes, what: str) -> bytes:
    """Accept any bytes-like value, but never an int (``bytes(5)`` would be five zero bytes)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise LocalError(f"secure channel: {what} must be bytes")
    return bytes(value)


def _check_role(role: str) -> None:
    if role not in _DIRECTIONS:
        raise LocalError(f"secure channel: role must be 'terminal' or 'phone', not {role!r}")


def _check_digest(transcript_digest: bytes) -> None:
    if not isinstance(transcript_digest, bytes) or len(transcript_digest) != DIGEST_LEN:
        raise LocalError(f"secure channel: transcript digest must be {DIGEST_LEN} bytes")


class Transcript:
    """Running SHA-256 over the handshake, so the keys depend on every byte both sides saw."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(TRANSCRIPT_DOMAIN)

    def add(self, label: bytes, data: bytes) -> None:
        """Append one labelled item (see the module docstring for the encoding)."""
        label = _as_bytes(label, "transcript label")
        data = _as_bytes(data, "transcript data")
        if not 1 <= len(label) <= 0xFF:
            raise LocalError("transcript: label must be 1..255 bytes")
        if len(data) > 0xFFFFFFFF:
            raise LocalError("transcript: item too long")
        self._hash.update(bytes([len(label)]) + label)
        self._hash.update(len(data).to_bytes(4, "big"))
        self._hash.update(data)

    def digest(self) -> bytes:
        """The digest so far; the transcript stays open for more items."""
        return self._hash.copy().digest()

    def copy(self) -> Transcript:
        """An independent transcript with the same items so far."""
        other = Transcript.__new__(Transcript)
        other._hash = self._hash.copy()
        return other


@dataclass(frozen=True, eq=False)
class SessionKeys:
    """The three session keys; never shown in a repr, compared in constant time."""

    t2p: bytes = field(repr=False)
    p2t: bytes = field(repr=False)
    confirm: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name, length in (
            ("t2p", DIRECTION_KEY_LEN),
            ("p2t", DIRECTION_KEY_LEN),
            ("confirm", CONFIRM_KEY_LEN),
        ):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != length:
                raise LocalError(f"session keys: {name} must be {length} bytes")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionKeys):
            return NotImplemented
        return hmac.compare_digest(
            self.t2p + self.p2t + self.confirm, other.t2p + other.p2t + other.confirm
        )

    __hash__ = None  # type: ignore[assignment]  # keys are not for dict lookups


def derive_session_keys(
    own_private: ec.EllipticCurvePrivateKey, peer_public: bytes, transcript_digest: bytes
) -> SessionKeys:
    """ECDH with the peer's ephemeral key, then HKDF bound to the transcript.

    Both sides get the same :class:`SessionKeys`; the role chosen in :class:`SecureChannel`
    decides which key sends.  A malformed point raises :class:`DecodeError`; a peer that echoes
    our own ephemeral key back raises :class:`SecurityError` (a reflection, never honest).
    """
    _check_digest(transcript_digest)
    if not isinstance(own_private, ec.EllipticCurvePrivateKey) or not isinstance(
        own_private.curve, ec.SECP256R1
    ):
        raise LocalError("secure channel: own key must be a P-256 private key")
    peer = decode_point(_as_bytes(peer_public, "peer public key"))
    if encode_point(peer) == encode_point(own_private.public_key()):
        raise SecurityError("secure channel: peer sent our own ephemeral key")
    shared = own_private.exchange(ec.ECDH(), peer)
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=2 * DIRECTION_KEY_LEN + CONFIRM_KEY_LEN,
        salt=transcript_digest,
        info=HKDF_INFO,
    ).derive(shared)
    return SessionKeys(
        t2p=okm[:DIRECTION_KEY_LEN],
        p2t=okm[DIRECTION_KEY_LEN : 2 * DIRECTION_KEY_LEN],
        confirm=okm[2 * DIRECTION_KEY_LEN :],
    )


def key_confirmation(keys: SessionKeys, role: Role, transcript_digest: bytes) -> bytes:
    """The 16-byte value ``role`` sends to prove it holds the keys for this transcript."""
    _check_role(role)
    _check_digest(transcript_digest)
    mac = hmac.new(keys.confirm, KC_PREFIX + role.encode("ascii") + transcript_digest, "sha256")
    return mac.digest()[:KC_LEN]


def check_key_confirmation(
    keys: SessionKeys, role: Role, transcript_digest: bytes, received: bytes
) -> None:
    """Raise :class:`SecurityError` unless ``received`` is ``role``'s key confirmation.

    ``role`` is the *peer's* role (the side that sent ``received``).  The caller must drop the
    session on failure.
    """
    expected = key_confirmation(keys, role, transcript_digest)
    if not hmac.compare_digest(expected, _as_bytes(received, "key confirmation")):
        raise SecurityError("secure channel: key confirmation mismatch")


class SecureChannel:
    """AES-128-GCM frames for one session and one side; see the module docstring."""

    def __init__(self, keys: SessionKeys, role: Role) -> None:
        _check_role(role)
        out_dir, in_dir = _DIRECTIONS[role]
        self._role: Role = role
        self._out_label = out_dir.nonce_label
        self._in_label = in_dir.nonce_label
        self._seal_aead: AESGCM | None = AESGCM(getattr(keys, out_dir.key_field))
        self._open_aead: AESGCM | None = AESGCM(getattr(keys, in_dir.key_field))
        self._sent = 0
        self._received = 0

    def __repr__(self) -> str:
        return (
            f"SecureChannel(role={self._role!r}, sent={self._sent}, "
            f"received={self._received}, closed={self.closed})"
        )

    @property
    def role(self) -> Role:
        return self._role

    @property
    def sent(self) -> int:
        """Frames sealed so far (the last outgoing counter)."""
        return self._sent

    @property
    def received(self) -> int:
        """Frames opened successfully so far (the last incoming counter)."""
        return self._received

    @property
    def closed(self) -> bool:
        return self._seal_aead is None

    def wipe(self) -> None:
        """Drop the keys; every later ``seal``/``open`` raises ``SecurityError``."""
        self._seal_aead = None
        self._open_aead = None

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """Encrypt one outgoing message; returns ``counter || ciphertext || tag``."""
        aead = self._seal_aead
        if aead is None:
            raise SecurityError("channel closed")
        if self._sent >= MAX_COUNTER:
            raise LocalError("secure channel: outgoing counter exhausted")
        counter = self._sent + 1
        nonce = self._out_label + counter.to_bytes(8, "big")
        sealed = aead.encrypt(nonce, _as_bytes(plaintext, "plaintext"), _as_bytes(aad, "aad"))
        self._sent = counter
        return counter.to_bytes(COUNTER_LEN, "big") + sealed

    def open(self, aad: bytes, frame: bytes) -> bytes:
        """Decrypt one incoming frame; any failure wipes the channel and raises SecurityError."""
        aead = self._open_aead
        if aead is None:
            raise SecurityError("channel closed")
        frame = _as_bytes(frame, "frame")
        aad = _as_bytes(aad, "aad")
        if len(frame) < FRAME_OVERHEAD:
            self._fail("frame too short")
        counter = int.from_bytes(frame[:COUNTER_LEN], "big")
        if counter != self._received + 1:
            self._fail("frame counter is not the next expected one (replay or gap)")
        nonce = self._in_label + counter.to_bytes(8, "big")
        try:
            plaintext = aead.decrypt(nonce, frame[COUNTER_LEN:], aad)
        except InvalidTag:
            self._fail("frame authentication failed")
        self._received = counter
        return plaintext

    def _fail(self, reason: str) -> NoReturn:
        self.wipe()
        raise SecurityError(f"secure channel: {reason}")
