"""The balance of an inquiry, sealed by the center for the phone: the terminal relays it blind.

A balance inquiry's answer is shown on the phone, never on the terminal (hardware_notes/design.md
§1 step 8).  The center therefore never sends the balance in clear: it seals it under a key only
the phone and the center can derive, the terminal carries the sealed bytes from ISO 8583 field
63 of the 0210 to tag ``E7`` of the phone's RESULT unchanged, and the phone opens them.  The
bytes are documented in hardware_notes/iso8583.md and hardware_notes/phone-link.md §3.

Key: the AES-DUKPT working key of the inquiry's KSN (the one that came with its PIN block) with
key usage "data encryption, decrypt" (X9.24-3-2017 key usage indicator ``3001``: data the
transaction-originating device, here the phone, decrypts).  The center derives it from its BDK,
the phone from its initial key; the terminal has neither.

Sealing: AES-128-GCM with

* nonce = the 12-byte KSN.  The key is unique to that KSN and the center seals one plaintext
  under it at most (the KSN is spent by the inquiry; a retransmission of the inquiry is answered
  with the same plaintext, hence the same bytes), so the nonce is never reused with another
  plaintext;
* associated data = ``"swipepay/balance/v1"`` || terminal ID (8 ASCII) || STAN (6 digits) ||
  transmission date and time (10 digits), so sealed bytes cannot be moved to another
  transaction;
* plaintext = the 20 ASCII characters of an ISO 8583 field 54 amount: account type ``00``,
  amount type ``02`` (available balance), currency (3 digits), ``C`` (credit, >= 0) or ``D``
  (debit), 12 digits of minor units;

giving ``ciphertext (20) || tag (16)``, :data:`SEALED_LEN` = 36 bytes.  A terminal that alters
any byte makes :func:`open_balance` fail (:class:`SecurityError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swipepay.firmware_sim.dukpt import KEY_LEN, KSN_LEN
from swipepay.firmware_sim.errors import DecodeError, LocalError, SecurityError
from swipepay.firmware_sim.transaction import is_decimal

#: The DUKPT working-key usage of the sealing key (a key of ``dukpt.WORKING_KEY_USAGES``).
KEY_USAGE: Final = "data-decrypt"
_DOMAIN: Final = b"swipepay/balance/v1"
PLAIN_LEN: Final = 20
TAG_LEN: Final = 16
SEALED_LEN: Final = PLAIN_LEN + TAG_LEN
#: Largest balance field 54's 12 digits can carry.
MAX_AMOUNT: Final = 10**12 - 1
_PLAIN: Final = re.compile(rb"0002([0-9]{3})([CD])([0-9]{12})")


@dataclass(frozen=True)
class BalanceContext:
    """The transaction the balance answers, as both ends know it (the associated data)."""

    terminal_id: str
    stan: str
    transmitted_at: str

    def aad(self) -> bytes:
        if not (
            len(self.terminal_id) == 8
            and self.terminal_id.isascii()
            and self.terminal_id.isprintable()
            and len(self.stan) == 6
            and is_decimal(self.stan)
            and len(self.transmitted_at) == 10
            and is_decimal(self.transmitted_at)
        ):
            raise LocalError("balance context: terminal ID 8 chars, STAN 6 and time 10 digits")
        return _DOMAIN + (self.terminal_id + self.stan + self.transmitted_at).encode("ascii")


def balance_field(balance: int, currency: str) -> bytes:
    """The plaintext: field 54's layout for one available balance (``0002978C000000150000``)."""
    if not -MAX_AMOUNT <= balance <= MAX_AMOUNT:
        raise LocalError("balance does not fit 12 digits")
    if len(currency) != 3 or not is_decimal(currency):
        raise LocalError("currency must be an ISO 4217 numeric code")
    sign = "C" if balance >= 0 else "D"
    return f"0002{currency}{sign}{abs(balance):012d}".encode("ascii")


def _cipher(key: bytes, ksn: bytes) -> AESGCM:
    if len(key) != KEY_LEN or len(ksn) != KSN_LEN:
        raise LocalError("balance key must be 16 bytes and the KSN 12")
    return AESGCM(bytes(key))


def seal_balance(
    key: bytes, ksn: bytes, context: BalanceContext, balance: int, currency: str
) -> bytes:
    """The center's side: ``balance`` (minor units) in ``currency`` sealed for the phone."""
    plain = balance_field(balance, currency)
    return _cipher(key, ksn).encrypt(bytes(ksn), plain, context.aad())


def open_balance(key: bytes, ksn: bytes, context: BalanceContext, sealed: bytes) -> tuple[int, str]:
    """The phone's side: ``(balance in minor units, currency)`` of sealed bytes.

    :class:`SecurityError` if they were altered, sealed for another transaction or under
    another key; :class:`DecodeError` if they open to something that is not a balance.
    """
    if len(sealed) != SEALED_LEN:
        raise DecodeError(f"sealed balance must be {SEALED_LEN} bytes")
    try:
        plain = _cipher(key, ksn).decrypt(bytes(ksn), bytes(sealed), context.aad())
    except InvalidTag:
        raise SecurityError("sealed balance does not verify") from None
    m = _PLAIN.fullmatch(plain)
    if m is None:
        raise DecodeError("sealed balance is not a field-54 available balance")
    amount = int(m.group(3))
    return (-amount if m.group(2) == b"D" else amount), m.group(1).decode("ascii")
