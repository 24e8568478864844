"""MSR605 / MSR206 magstripe reader-writer serial protocol, sans-IO.

The reader is a 9600 8N1 serial device (usually behind a USB-serial bridge).  Every command
starts with ESC; the only exchange a payment terminal needs is "read ISO" (``ESC r``), whose
reply is::

    ESC s  [ESC 01 <track 1>] [ESC 02 <track 2>] [ESC 03 <track 3>]  ? FS  ESC <status>

Tracks with no data are left out.  Track data is the ISO text as read, sentinels included
(``%B...?``, ``;...?``); an LRC character is passed through if the firmware keeps it, and
:func:`firmware_sim.tracks.parse_track1` checks it when present.  ESC (0x1B) and FS (0x1C) are
outside both track character sets, so the trailer ``? FS ESC`` can never be mistaken for data.
Some firmware sends the track markers as ASCII ``'1' '2' '3'`` instead of bytes 1-3; both are
accepted (ESC never occurs in data, so this is unambiguous).

:class:`Msr605Parser` takes received bytes in any chunking and returns events; it never raises.
The reply status is mapped to a typed error by :data:`STATUS` (a table, not an if-chain).  A
bad swipe is a :class:`ReaderSwipeError` (a :class:`~firmware_sim.tracks.SwipeError`: "swipe
again"), a command error a :class:`ReaderCommandError` (a
:class:`~firmware_sim.errors.RemoteProtocolError`: our command or the serial settings are
wrong, swiping again will not help).  Noise on the line is counted and skipped, and the buffer
is bounded by :data:`MAX_REPLY`, so a babbling line never grows memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swipepay.firmware_sim.errors import RemoteProtocolError, SwipepayError
from swipepay.firmware_sim.tracks import SwipeError

ESC = 0x1B
FS = 0x1C

#: Commands a terminal sends, as data.  ``reset`` has no reply; ``comm_test`` is answered by
#: ``ESC y``; ``read_iso`` arms the reader, which answers after the next swipe.
COMMANDS: dict[str, bytes] = {
    "reset": b"\x1ba",
    "comm_test": b"\x1be",
    "read_iso": b"\x1br",
}

#: Second bytes of our own commands.  A port or adapter that echoes what we write (ptys with echo
#: on, some USB bridges, pyserial ``loop://``) hands them back; they are skipped, not "noise".
_ECHO_BYTES = frozenset(cmd[1] for cmd in COMMANDS.values())

#: ESC + one of these opens a read reply / answers the communication test.
_READ_REPLY = ord("s")
_COMM_TEST_OK = ord("y")

#: Track marker byte after ESC inside a read reply -> track number.
TRACK_MARKERS: dict[int, int] = {0x01: 1, 0x02: 2, 0x03: 3, 0x31: 1, 0x32: 2, 0x33: 3}

#: Longest read reply accepted: header, three maximal tracks (79 + 40 + 107, LRC each), markers
#: and trailer come to about 240 bytes; anything longer is noise.
MAX_REPLY = 512


@dataclass(frozen=True)
class StatusInfo:
    """What a status byte means and which error (if any) it becomes."""

    meaning: str
    error: type[ReaderSwipeError | ReaderCommandError] | None


class ReaderSwipeError(SwipeError):
    """The reader says the swipe could not be read: the cardholder should swipe again."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class ReaderCommandError(RemoteProtocolError):
    """The reader refused our command (format, unknown command): a setup problem, not a swipe."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(f"magstripe reader refused the command: {reason}")
        self.reason = reason
        self.status = status


#: Status byte -> meaning and error class (MSR206 programmer's manual).
STATUS: dict[int, StatusInfo] = {
    0x30: StatusInfo("ok", None),
    0x31: StatusInfo("read/write error", ReaderSwipeError),
    0x32: StatusInfo("command format error", ReaderCommandError),
    0x34: StatusInfo("invalid command", ReaderCommandError),
    0x39: StatusInfo("invalid card swipe", ReaderSwipeError),
}


def status_error(status: int) -> SwipepayError | None:
    """The typed error for a status byte, or None for "ok".  Unknown statuses are errors too."""
    info = STATUS.get(status)
    if info is None:
        return ReaderCommandError(f"unknown status byte 0x{status:02X}", status)
    if info.error is None:
        return None
    reason = f"reader reported {info.meaning} (status 0x{status:02X})"
    return info.error(reason, status)


def command(name: str) -> bytes:
    """Bytes of a command in :data:`COMMANDS`; ``KeyError`` for a name that is not there."""
    return COMMANDS[name]


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ReadReply:
    """A complete read reply.  ``tracks`` maps track number -> text (only tracks with data)."""

    status: int
    tracks: dict[int, str] = field(default_factory=dict)

    @property
    def error(self) -> SwipepayError | None:
        return status_error(self.status)

    def track(self, number: int) -> str | None:
        return self.tracks.get(number)

    def __repr__(self) -> str:
        # Track data holds the PAN: never in reprs.
        return f"ReadReply(status=0x{self.status:02X}, tracks={sorted(self.tracks)})"


@dataclass(frozen=True)
class CommTestOk:
    """``ESC y``: the reader answered the communication test."""


@dataclass(frozen=True)
class StatusReply:
    """A bare ``ESC <status>`` outside a read reply (answer to a command without data)."""

    status: int

    @property
    def error(self) -> SwipepayError | None:
        return status_error(self.status)


@dataclass(frozen=True)
class BadReply:
    """A reply that could not be decoded; ``error`` says why (always "swipe again" class)."""

    error: SwipepayError


Event = ReadReply | CommTestOk | StatusReply | BadReply


# --------------------------------------------------------------------------- parser


class Msr605Parser:
    """Incremental reply parser: ``feed(bytes) -> list[Event]``; ``end()`` when no more will come.

    Never raises.  Bytes that are not part of a reply are counted in :attr:`noise` and dropped.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_reply = False
        #: Count of bytes skipped as noise since the last complete reply (reset by ``end``).
        self.noise = 0

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a reply (never more than :data:`MAX_REPLY`)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        while self._buf:
            if self._in_reply:
                if not self._reply_step(events):
                    break
            elif not self._idle_step(events):
                break
        return events

    def end(self) -> list[Event]:
        """The line went quiet (the driver's timeout): report a cut-off reply or noise."""
        events: list[Event] = []
        if self._in_reply:
            events.append(BadReply(ReaderSwipeError("reader reply cut short (partial read)")))
        elif self.noise:
            events.append(
                BadReply(
                    ReaderSwipeError(
                        f"reader sent {self.noise} unreadable bytes "
                        "(line noise, or a baud rate other than the reader's)"
                    )
                )
            )
        self._buf.clear()
        self._in_reply = False
        self.noise = 0
        return events

    # -- internals

    def _idle_step(self, events: list[Event]) -> bool:
        """Outside a reply: look for ESC + a reply opener.  False when more bytes are needed."""
        start = self._buf.find(ESC)
        if start < 0:
            self.noise += len(self._buf)
            self._buf.clear()
            return False
        if start:
            self.noise += start
            del self._buf[:start]
        if len(self._buf) < 2:
            return False
        second = self._buf[1]
        del self._buf[:2]
        if second == _READ_REPLY:
            self._in_reply = True
        elif second == _COMM_TEST_OK:
            events.append(CommTestOk())
        elif second in STATUS:
            events.append(StatusReply(second))
        elif second not in _ECHO_BYTES:
            self.noise += 2
        return True

    def _reply_step(self, events: list[Event]) -> bool:
        """Inside ``ESC s``: wait for ``FS ESC <status>``, then decode the tracks."""
        end = self._buf.find(bytes((FS, ESC)))
        if end < 0 or end + 2 >= len(self._buf):
            if len(self._buf) > MAX_REPLY:
                self._bad(events, "reader reply too long (line noise)")
            return False
        if end > MAX_REPLY:
            del self._buf[: end + 3]
            self._bad(events, "reader reply too long (line noise)")
            return True
        body = bytes(self._buf[:end])
        status = self._buf[end + 2]
        del self._buf[: end + 3]
        self._in_reply = False
        self.noise = 0
        events.append(_decode_reply(body, status))
        return True

    def _bad(self, events: list[Event], reason: str) -> None:
        """Report a reply that cannot be decoded and drop what is buffered of it."""
        events.append(BadReply(ReaderSwipeError(reason)))
        if len(self._buf) > MAX_REPLY:
            self._buf.clear()
        self._in_reply = False
        self.noise = 0


def _decode_reply(body: bytes, status: int) -> Event:
    """``[ESC n data]... ?`` -> ReadReply, or BadReply saying what is wrong with it."""
    if not body.endswith(b"?"):
        return BadReply(ReaderSwipeError("reader reply malformed (no '?' before FS)"))
    body = body[:-1]
    parts = body.split(bytes((ESC,)))
    if parts[0]:
        return BadReply(ReaderSwipeError("reader reply malformed (data before a track marker)"))
    tracks: dict[int, str] = {}
    for part in parts[1:]:
        number = TRACK_MARKERS.get(part[0]) if part else None
        if number is None or number in tracks:
            return BadReply(ReaderSwipeError("reader reply malformed (bad track marker)"))
        text = part[1:].decode("latin-1")  # any byte maps; the track parser rejects non-ISO ones
        if text:
            tracks[number] = text
    return ReadReply(status, tracks)
