"""Splitting a raw-line reader's (or keyboard wedge's) output into swipes, sans-IO.

Such readers type each track as a line: ``%B...?`` CR/LF, then ``;...?`` CR/LF (or the other
way round, or only one track, or both tracks on one line ``%...?;...?``), optionally with each
track's LRC character right after its ``?``.  Nothing marks the end of a swipe, so a swipe is
complete when:

* both track 1 and track 2 have arrived (the usual case, no waiting); or
* a track arrives whose number the pending swipe already has (a new swipe began); or
* the driver says the line went quiet, :meth:`SwipeSplitter.end_of_swipe` (its idle gap or its
  timeout; this module never reads a clock).

A line that is not a track (no start sentinel, noise, longer than :data:`MAX_LINE`) spoils the
swipe it belongs to: the swipe is delivered with a ``problem`` and :meth:`Swipe.card` raises
:class:`~firmware_sim.tracks.SwipeError` ("swipe again") rather than accepting the other track
alone.  A reader configured to send track 3 is not supported: track 3 also starts with ``;`` and
would be taken for a second swipe's track 2.

**The LRC ambiguity.**  After a track's end sentinel ``?`` the next character may be that track's
LRC, and an LRC can itself be ``;`` or ``%`` (both are in the track 1 and ``;`` in the track 2
character set) — the same characters that start the next track.  The rule used: a start
sentinel right after ``?`` is taken as the LRC when it is followed by another start sentinel or
by the end of the line (a track cannot be empty), and as the next track's start otherwise.  The
one case this gets "wrong" — an LRC of ``;`` followed by a track 2 that lost its own start
sentinel — reads as a well-formed track 2 made of exactly the characters that were on the
stripe, which the track parser then checks (Luhn, expiry, agreement with track 1) as usual.
Any other character after ``?`` is taken as the LRC and checked by the track parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.tracks import TRACK1, TRACK2, SwipeError, card_from_tracks

#: Longest line kept: both tracks with LRCs (79 + 40) and some slack.  Longer lines are noise;
#: they are dropped up to the next line end, so memory stays bounded.
MAX_LINE = 160

#: Silence (seconds) after which a driver should call :meth:`SwipeSplitter.end_of_swipe`.
#: Readers send the tracks of one swipe back to back, well within this; only single-track
#: swipes and cut-off lines wait for it.  (Data for the drivers: this module reads no clock.)
END_OF_SWIPE_GAP = 0.3

#: Start sentinel -> track number.
START_SENTINELS: dict[str, int] = {TRACK1.start_sentinel: 1, TRACK2.start_sentinel: 2}
_END_SENTINEL = "?"
_LINE_ENDS = "\r\n"


@dataclass(frozen=True, repr=False)
class Swipe:
    """The lines of one swipe: track texts as read (sentinels, LRC), or what spoiled it."""

    track1: str | None = None
    track2: str | None = None
    problem: str | None = None

    def card(self) -> CardData:
        """Decode the swipe; raises :class:`SwipeError` (asks for another swipe) if it is bad."""
        if self.problem is not None:
            raise SwipeError(self.problem)
        return card_from_tracks(self.track1, self.track2)

    def __repr__(self) -> str:
        # Track text holds the PAN: never in reprs.
        have = [n for n, t in ((1, self.track1), (2, self.track2)) if t is not None]
        return f"Swipe(tracks={have}, problem={self.problem!r})"


def split_line(line: str) -> list[tuple[int, str]] | str:
    """One line -> [(track number, track text)], or a reason why it is not track data.

    See the module docstring for how a start sentinel after ``?`` is resolved.
    """
    segments: list[tuple[int, str]] = []
    i = 0
    while i < len(line):
        number = START_SENTINELS.get(line[i])
        if number is None:
            if not segments:
                return "start of the track missing, or unreadable data"
            return "unexpected data after the end of a track"
        end = line.find(_END_SENTINEL, i + 1)
        if end < 0:
            segments.append((number, line[i:]))  # partial: the track parser says so
            return segments
        stop = end + 1
        if stop < len(line):
            nxt = line[stop]
            after = line[stop + 1] if stop + 1 < len(line) else None
            if nxt not in START_SENTINELS or after is None or after in START_SENTINELS:
                stop += 1  # the LRC
        segments.append((number, line[i:stop]))
        i = stop
    return segments


class SwipeSplitter:
    """Feed bytes or text; get complete :class:`Swipe` objects.  Never raises."""

    def __init__(self) -> None:
        self._line: list[str] = []
        self._line_len = 0
        self._overlong = False
        self._track1: str | None = None
        self._track2: str | None = None
        self._problem: str | None = None

    @property
    def buffered(self) -> int:
        """Characters held for an unfinished line (never more than :data:`MAX_LINE`)."""
        return self._line_len

    @property
    def pending(self) -> bool:
        """True while part of a swipe is held (a track, a problem, or an unfinished line)."""
        return bool(
            self._line_len or self._overlong or self._track1 or self._track2 or self._problem
        )

    def feed(self, data: bytes | str) -> list[Swipe]:
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        out: list[Swipe] = []
        for char in text:
            if char in _LINE_ENDS:
                self._finish_line(out)
            elif self._overlong:
                continue
            elif self._line_len >= MAX_LINE:
                self._overlong = True
                self._line.clear()
                self._line_len = 0
            else:
                self._line.append(char)
                self._line_len += 1
        return out

    def end_of_swipe(self) -> list[Swipe]:
        """The line went quiet: deliver what is pending, an unterminated last line included."""
        out: list[Swipe] = []
        self._finish_line(out)
        self._emit(out)
        return out

    # -- internals

    def _finish_line(self, out: list[Swipe]) -> None:
        line = "".join(self._line)
        self._line.clear()
        self._line_len = 0
        if self._overlong:
            self._overlong = False
            self._spoil(f"line longer than {MAX_LINE} characters (noise)")
            return
        if not line.strip():
            return  # CR LF pairs, blank lines
        result = split_line(line)
        if isinstance(result, str):
            self._spoil(result)
            return
        for number, track in result:
            if (self._track1 if number == 1 else self._track2) is not None:
                self._emit(out)  # a track we already have: a new swipe began
            if number == 1:
                self._track1 = track
            else:
                self._track2 = track
            if self._track1 is not None and self._track2 is not None:
                self._emit(out)

    def _spoil(self, reason: str) -> None:
        if self._problem is None:
            self._problem = reason

    def _emit(self, out: list[Swipe]) -> None:
        if self._track1 is None and self._track2 is None and self._problem is None:
            return
        out.append(Swipe(self._track1, self._track2, self._problem))
        self._track1 = self._track2 = self._problem = None
