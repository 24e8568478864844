"""The confirmation binding (hardware_notes/design.md §4): what the phone signs, the center checks.

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

from swipepay.firmware_sim.dukpt import DukptDevice
from swipepay.firmware_sim.ecc import sign_prehashed, verify_prehashed
from swipepay.firmware_sim.pinblock import encode_format4
from swipepay.firmware_sim.transaction import Transaction

DOMAIN = b"swipepay/confirm/v1"


class Decision(IntEnum):
    """The user's answer on the phone."""

    DECLINED = 0x00
    APPROVED = 0x01


def _lp(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


#: The digest's first field, length-prefixed once.
_DOMAIN_LP = _lp(DOMAIN)


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
    """SHA-256 over the length-prefixed fields, in this fixed order (the domain first)."""
    parts = [
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
    # One buffer, no helper call per field: the center computes this for every request.
    data = bytearray(_DOMAIN_LP)
    for part in parts:
        data += len(part).to_bytes(2, "big")
        data += part
    return hashlib.sha256(data).digest()


def sign_confirmation(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """The phone's signature over :func:`confirmation_digest`: raw r||s, 64 bytes."""
    return sign_prehashed(key, digest)


def verify_confirmation(key: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes) -> None:
    """Raise :class:`SecurityError` unless ``signature`` is the phone's signature of ``digest``."""
    verify_prehashed(key, digest, signature, what="confirmation signature")


def transaction_digest(
    txn: Transaction, pin_block: bytes, ksn: bytes, decision: Decision = Decision.APPROVED
) -> bytes:
    """:func:`confirmation_digest` over a :class:`Transaction`'s own fields (the center's view,
    and any tool that checks a confirmation against the transaction it belongs to)."""
    return confirmation_digest(
        pan=txn.pan,
        processing_code=txn.spec.processing_code,
        amount=txn.amount,
        currency=txn.currency,
        terminal_id=txn.terminal_id,
        stan=txn.stan,
        transmitted_at=txn.transmitted_at,
        decision=decision,
        pin_block=pin_block,
        ksn=ksn,
    )


def confirm_transaction(
    txn: Transaction, pin: str, dukpt: DukptDevice, key: ec.EllipticCurvePrivateKey
) -> tuple[bytes, bytes, bytes]:
    """What an honest phone returns for ``txn`` after its user confirmed with ``pin``:
    ``(PIN block, KSN, signature)``.  For load generators and tests that skip the phone link;
    the applet itself does the same from the PAYMENT REQUEST it received."""
    pin_key, ksn = dukpt.next_pin_key()
    block = encode_format4(pin, txn.pan, pin_key)
    return block, ksn, sign_confirmation(key, transaction_digest(txn, block, ksn))
