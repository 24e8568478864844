"""The confirmation binding (DESIGN.md §4): what the phone signs and the center verifies.

The phone signs, with its enrolled P-256 key, a digest over the exact transaction fields, the
user's decision, the PIN block and the KSN.  The center recomputes the digest from the ISO 8583
message it received, so a terminal that changes the amount after the user confirmed, or replays
an old confirmation, is caught.  Every field is length-prefixed, so no two different field sets
give the same byte string.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_sim.ecc import sign_prehashed, verify_prehashed

DOMAIN = b"swipepay/confirm/v1"


class Decision(IntEnum):
    """The user's answer on the phone."""

    DECLINED = 0x00
    APPROVED = 0x01


def _lp(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def confirmation_digest(
    *,
    pan: str,
    processing_code: str,
    amount: int,
    currency: str,
    terminal_id: str,
    stan: str,
    transmitted_at: str,
    decision: Decision,
    pin_block: bytes,
    ksn: bytes,
) -> bytes:
    """SHA-256 over the length-prefixed fields, in this fixed order."""
    parts = [
        DOMAIN,
        pan.encode("ascii"),
        processing_code.encode("ascii"),
        amount.to_bytes(8, "big"),
        currency.encode("ascii"),
        terminal_id.encode("ascii"),
        stan.encode("ascii"),
        transmitted_at.encode("ascii"),
        bytes([decision]),
        pin_block,
        ksn,
    ]
    return hashlib.sha256(b"".join(_lp(p) for p in parts)).digest()


def sign_confirmation(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """The phone's signature over :func:`confirmation_digest`: raw r||s, 64 bytes."""
    return sign_prehashed(key, digest)


def verify_confirmation(key: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes) -> None:
    """Raise :class:`SecurityError` unless ``signature`` is the phone's signature of ``digest``."""
    verify_prehashed(key, digest, signature, what="confirmation signature")
