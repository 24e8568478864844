"""The field-39 response codes the center answers with (hardware_notes/design.md §6), as one table.

Every decision in :mod:`center.core` names a code from :class:`RC`; what the code means, and how a
terminal should treat it, lives only here so the ISO 8583 server, the terminal display and the
reports all agree.  The *decline class* tells a terminal what to do next without knowing every
code: tell the cardholder, fix the request, treat it as an attack, or try again later.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RC(StrEnum):
    """Response codes as named constants; each value is the two-character field 39."""

    APPROVED = "00"
    DO_NOT_HONOUR = "05"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    INVALID_CARD = "14"
    FORMAT_ERROR = "30"
    INSUFFICIENT_FUNDS = "51"
    EXPIRED_CARD = "54"
    INCORRECT_PIN = "55"
    NOT_PERMITTED_CARDHOLDER = "57"
    NOT_PERMITTED_TERMINAL = "58"
    SECURITY_VIOLATION = "63"
    PIN_TRIES_EXCEEDED = "75"
    ISSUER_INOPERATIVE = "91"
    DUPLICATE_TRANSMISSION = "94"
    SYSTEM_MALFUNCTION = "96"


class DeclineClass(StrEnum):
    """What a code asks of the terminal."""

    #: Not a decline: the money moved (or the hold is in place).
    APPROVED = "approved"
    #: The cardholder's card or account says no; show it, do not retry the same request.
    CARDHOLDER = "cardholder"
    #: The request itself is wrong (terminal or integration bug); retrying it unchanged is useless.
    REQUEST = "request"
    #: A security check failed; log it as a possible attack, do not retry.
    SECURITY = "security"
    #: The center could not decide; the same request may be sent again later.
    SYSTEM = "system"
    #: A code this table does not know (from another host); treat as a plain decline.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ResponseCode:
    """One row of the table."""

    code: str
    text: str
    decline_class: DeclineClass

    @property
    def approved(self) -> bool:
        return self.decline_class is DeclineClass.APPROVED

    @property
    def retry_later(self) -> bool:
        """True when sending the same request again may succeed (a transient host problem)."""
        return self.decline_class is DeclineClass.SYSTEM


_A, _C, _R, _S, _Y = (
    DeclineClass.APPROVED,
    DeclineClass.CARDHOLDER,
    DeclineClass.REQUEST,
    DeclineClass.SECURITY,
    DeclineClass.SYSTEM,
)

#: The table of hardware_notes/design.md §6 (texts after ISO 8583:1987 field 39).
RESPONSE_CODES: dict[str, ResponseCode] = {
    row.code: row
    for row in (
        ResponseCode(RC.APPROVED, "Approved", _A),
        ResponseCode(RC.DO_NOT_HONOUR, "Do not honour", _C),
        ResponseCode(RC.INVALID_TRANSACTION, "Invalid transaction", _R),
        ResponseCode(RC.INVALID_AMOUNT, "Invalid amount", _R),
        ResponseCode(RC.INVALID_CARD, "Invalid card number", _C),
        ResponseCode(RC.FORMAT_ERROR, "Format error", _R),
        ResponseCode(RC.INSUFFICIENT_FUNDS, "Insufficient funds", _C),
        ResponseCode(RC.EXPIRED_CARD, "Expired card", _C),
        ResponseCode(RC.INCORRECT_PIN, "Incorrect PIN", _C),
        ResponseCode(RC.NOT_PERMITTED_CARDHOLDER, "Transaction not permitted to cardholder", _C),
        ResponseCode(RC.NOT_PERMITTED_TERMINAL, "Transaction not permitted to terminal", _R),
        ResponseCode(RC.SECURITY_VIOLATION, "Security violation", _S),
        ResponseCode(RC.PIN_TRIES_EXCEEDED, "Allowable number of PIN tries exceeded", _C),
        ResponseCode(RC.ISSUER_INOPERATIVE, "Issuer or switch inoperative", _Y),
        ResponseCode(RC.DUPLICATE_TRANSMISSION, "Duplicate transmission", _R),
        ResponseCode(RC.SYSTEM_MALFUNCTION, "System malfunction", _Y),
    )
}


def describe(code: str) -> ResponseCode:
    """The table row for ``code``.

    A code the table does not know (a terminal may one day talk to another host) gets a row of
    class :attr:`DeclineClass.UNKNOWN` instead of an exception, so displaying a result can never
    crash a terminal.
    """
    row = RESPONSE_CODES.get(code)
    if row is None:
        return ResponseCode(code, "Unknown response code", DeclineClass.UNKNOWN)
    return row
