"""The 2-byte length framing of swipepay's byte streams, sans-IO.

Three links carry messages over a TCP stream with the same rule: every message is preceded by
its length as 2 bytes, big-endian.  The terminal <-> center ISO 8583 link
(:mod:`firmware_sim.hostlink.iso8583`), the ``tcp:`` phone link (:mod:`drivers.tcp_link`) and
vsmartcard's vpcd protocol (:mod:`drivers.vpcd`).  Each link differs only in the lengths it
allows, given as :class:`FrameLimits`.

:func:`encode` frames one message; :class:`FrameDecoder` takes whatever bytes arrived and gives
back the complete messages, keeping a partial one until the rest comes.  A length prefix
outside the limits raises :class:`FrameError` at once: the stream cannot be trusted any more
and a bigger frame is never buffered.

A peer that stops inside a frame must not hold a link forever, so the decoder also keeps when
the incomplete frame began (:attr:`FrameDecoder.began`, on whatever clock the caller passes as
``now``): the I/O layer only compares it with its frame timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from swipepay.firmware_sim.errors import WrongLength

#: Size of the length prefix.
PREFIX: Final = 2
#: Largest length a 2-byte prefix can carry.
MAX_LENGTH: Final = 0xFFFF


class FrameError(WrongLength):
    """A length outside the link's :class:`FrameLimits`."""


@dataclass(frozen=True)
class FrameLimits:
    """The message lengths a link allows (both ends included)."""

    min_length: int = 0
    max_length: int = MAX_LENGTH

    def __post_init__(self) -> None:
        if not 0 <= self.min_length <= self.max_length <= MAX_LENGTH:
            raise ValueError(f"frame limits {self.min_length}..{self.max_length} impossible")

    def check(self, length: int) -> None:
        """Raise :class:`FrameError` unless ``length`` is allowed."""
        if not self.min_length <= length <= self.max_length:
            raise FrameError(
                f"frame length {length} outside {self.min_length}..{self.max_length}"
            )


#: Any length a 2-byte prefix can say, including 0.
ANY_LENGTH: Final = FrameLimits()


def encode(payload: bytes, limits: FrameLimits = ANY_LENGTH) -> bytes:
    """``payload`` with its length prefix; :class:`FrameError` if the link does not allow it."""
    limits.check(len(payload))
    return len(payload).to_bytes(PREFIX, "big") + payload


class FrameDecoder:
    """Splits a byte stream into messages: ``feed(data)`` returns the ones now complete."""

    def __init__(self, limits: FrameLimits = ANY_LENGTH, began: float | None = None) -> None:
        """``began``: count the stream as inside a frame from then on (a link whose peer must
        speak first: its first frame is due from the moment it connected)."""
        self.limits = limits
        self._buffer = bytearray()
        #: When the incomplete frame began (``now`` of the ``feed`` that brought its first
        #: byte), or None between frames.
        self.began = began

    def feed(self, data: bytes, now: float = 0.0) -> list[bytes]:
        """Add bytes received at ``now``; return every message now complete, in order.

        :class:`FrameError` as soon as a prefix is outside the limits (the messages completed
        before it in the same ``data`` are lost with the stream: a peer that breaks the framing
        is dropped, never answered).
        """
        frames = self._split(data)
        if not self._buffer:
            self.began = None
        elif frames or self.began is None:
            self.began = now  # a new frame has begun
        return frames

    def overdue(self, now: float, timeout: float) -> bool:
        """Whether a frame has been incomplete for ``timeout`` or longer at ``now``."""
        return self.began is not None and now - self.began >= timeout

    def _split(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= PREFIX:
            length = int.from_bytes(self._buffer[:PREFIX], "big")
            self.limits.check(length)
            end = PREFIX + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[PREFIX:end]))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a message not complete yet (non-zero at the end of a stream: truncated)."""
        return len(self._buffer)
