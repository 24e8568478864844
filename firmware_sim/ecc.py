"""P-256 helpers shared by certificates, the secure channel and the confirmation binding.

On the phone link every byte counts (short APDUs, air time), so public keys travel as 33-byte
compressed points and signatures as raw 64-byte ``r || s`` rather than DER.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from swipepay.firmware_sim.errors import DecodeError, SecurityError

CURVE = ec.SECP256R1()
POINT_LEN = 33
SIGNATURE_LEN = 64
#: ECDSA over a SHA-256 digest computed by the caller.  The object holds no state, so one serves
#: every call (building it costs ~4 us, a center verifies one signature per payment).
_PREHASHED_ECDSA = ec.ECDSA(Prehashed(hashes.SHA256()))


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE)


def encode_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """33-byte SEC1 compressed point."""
    return key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


def decode_point(data: bytes) -> ec.EllipticCurvePublicKey:
    """Parse a compressed point; raise :class:`DecodeError` if it is not one on P-256."""
    if len(data) != POINT_LEN or data[0] not in (2, 3):
        raise DecodeError("public key must be a 33-byte compressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, bytes(data))
    except ValueError as exc:
        raise DecodeError("public key is not a point on P-256") from exc


def sign_prehashed(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """ECDSA over a SHA-256 digest, raw ``r || s`` (64 bytes)."""
    der = key.sign(digest, _PREHASHED_ECDSA)
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_prehashed(
    key: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes, what: str = "signature"
) -> None:
    """Raise :class:`SecurityError` unless ``signature`` (raw r||s) signs ``digest``."""
    if len(signature) != SIGNATURE_LEN:
        raise SecurityError(f"{what} must be {SIGNATURE_LEN} bytes")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), digest, _PREHASHED_ECDSA)
    except (InvalidSignature, ValueError) as exc:
        raise SecurityError(f"{what} does not verify") from exc
