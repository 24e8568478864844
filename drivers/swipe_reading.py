"""The one read loop of the line-based magstripe readers (``serial:`` raw lines, ``keyboard:``).

Both get swipes as text lines on a byte stream: bytes go into the sans-IO
:class:`~swipepay.firmware_sim.swipe_lines.SwipeSplitter`, and a swipe ends at its last line or
after :data:`~swipepay.firmware_sim.swipe_lines.END_OF_SWIPE_GAP` seconds of silence.  Swipes
that complete together are queued and handed out one per read, in arrival order.  Only where the
bytes come from differs, so each reader passes its own ``read_chunk``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.errors import LinkTimeout, TransportError
from swipepay.firmware_sim.swipe_lines import END_OF_SWIPE_GAP, Swipe, SwipeSplitter


class SwipeLines:
    """Swipes assembled from one reader's byte stream (state kept between reads)."""

    def __init__(self) -> None:
        self._splitter = SwipeSplitter()
        self._queue: deque[Swipe] = deque()

    def read(
        self,
        timeout: float,
        read_chunk: Callable[[float], bytes],
        *,
        at_eof: Callable[[], bool] = lambda: False,
        eof_message: str = "the reader's stream ended",
        poll: float | None = None,
    ) -> CardData:
        """The next swipe's card data.

        ``read_chunk(wait)`` returns what arrived within ``wait`` s (``b""`` for nothing);
        ``at_eof()`` says the stream ended (what is pending is then delivered, and a read with
        nothing left raises :class:`TransportError` with ``eof_message``); ``poll`` caps each
        wait.  :class:`LinkTimeout` when no swipe arrives within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        # Part of a swipe left over from the last read ends after the gap, not the timeout.
        last_data: float | None = time.monotonic() if self._splitter.pending else None
        while True:
            now = time.monotonic()
            eof = at_eof()
            if eof or (last_data is not None and now - last_data >= END_OF_SWIPE_GAP):
                swipes = self._splitter.end_of_swipe()
                last_data = None
                if not swipes and not self._queue and eof:
                    raise TransportError(eof_message)
            elif now >= deadline:
                swipes = self._splitter.end_of_swipe()
                if not swipes and not self._queue:
                    raise LinkTimeout(f"no card swiped within {timeout:g} s")
            else:
                wait = deadline - now
                if last_data is not None:
                    wait = min(wait, END_OF_SWIPE_GAP)
                if poll is not None:
                    wait = min(wait, poll)
                data = read_chunk(wait)
                swipes = self._splitter.feed(data) if data else []
                if data:
                    last_data = time.monotonic() if self._splitter.pending else None
            self._queue.extend(swipes)
            if self._queue:
                # In arrival order: a swipe completed with an earlier one is kept for the next read.
                return self._queue.popleft().card()
