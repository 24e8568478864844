"""The error hierarchy of swipepay: who is at fault, and what to answer with.

Like h11's LocalProtocolError / RemoteProtocolError, every error says whose fault it is:

* :class:`LocalError` — our own side broke a rule or is misconfigured (a bug, a bad lab file,
  a key that is missing).  Nothing the peer can fix.
* :class:`RemoteError` — the peer (a phone, a card, a terminal, a host) sent something wrong.
  It carries the ISO 7816-4 status word and the ISO 8583 response code to answer with.

Each error also maps to a process exit code, so the CLI never has to guess.
"""

from __future__ import annotations


class SwipepayError(Exception):
    """Base of every error swipepay raises on purpose.

    The message must never contain a secret (PIN, key, clear PIN block).
    """

    #: ISO 7816-4 status word to answer an APDU with.
    status_word: int = 0x6F00
    #: ISO 8583 field 39 response code to answer a host message with.
    response_code: str = "96"
    #: Exit code for the command-line tools.
    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        status_word: int | None = None,
        response_code: str | None = None,
    ) -> None:
        super().__init__(message)
        if status_word is not None:
            self.status_word = status_word
        if response_code is not None:
            self.response_code = response_code


class LocalError(SwipepayError):
    """Our own side is at fault: misuse of an API, bad configuration, a missing file."""

    exit_code = 3


class ConfigError(LocalError):
    """The lab directory, a profile or an option is missing or wrong."""

    exit_code = 3


class LocalProtocolError(LocalError):
    """We were asked to do something the protocol state does not allow (a bug on our side)."""

    status_word = 0x6985


class RemoteError(SwipepayError):
    """The peer is at fault: it sent bytes or a message we must refuse."""

    exit_code = 4


class DecodeError(RemoteError):
    """Bytes from outside could not be parsed (APDU, TLV, certificate, track data, ...)."""

    status_word = 0x6A80
    response_code = "30"


class WrongLength(DecodeError):
    """Lc/Le or a length field is inconsistent with the data."""

    status_word = 0x6700


class RemoteProtocolError(RemoteError):
    """The peer broke the protocol: command out of order, unknown instruction, wrong class."""

    status_word = 0x6985
    response_code = "30"


class SecurityError(RemoteError):
    """A signature, MAC, AEAD tag or counter check failed: treat as an attack."""

    status_word = 0x6982
    response_code = "63"


class TransportError(RemoteError):
    """A link broke: the phone left the field, a reader was unplugged, a socket closed."""

    exit_code = 5


class LinkTimeout(TransportError):
    """A peer did not answer in time."""

    exit_code = 5


class NotSent(TransportError):
    """The message never left: the peer could not be reached, so nothing needs undoing."""

    exit_code = 5
