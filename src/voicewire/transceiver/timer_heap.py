"""One heap of deadlines for every session, driving a single event-loop timer.

Each sans-IO session reports its next deadline after every change (``get_timer``). Arming one
loop callback per session and cancelling it on each change would churn the loop's own heap 100
times a second per session; instead this heap keeps the latest deadline per key, pushes a new
entry when it changes, skips stale entries lazily, and keeps exactly one loop timer armed for
the earliest deadline.

A superseded or cancelled entry may sit in the heap until its deadline (a consent check 30 s
ahead), so it lets go of its key at once (the heapq documentation's "removed" mark): the heap
never keeps an ended session alive.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Hashable


class TimerHeap:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, fire: Callable[[Hashable, float], None]
    ) -> None:
        self._loop = loop
        self._fire = fire
        self._entries: dict[Hashable, list] = {}
        """Key → its pending heap entry, ``[deadline, order, key]``."""
        self._heap: list[list] = []
        self._order = itertools.count()
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def schedule(self, key: Hashable, deadline: float | None) -> None:
        """Make ``deadline`` (loop time) the only pending one for ``key``; None cancels it."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] == deadline:
                return
            entry[2] = _REMOVED  # stale: it no longer holds the key
            del self._entries[key]
        if deadline is None:
            return
        entry = self._entries[key] = [deadline, next(self._order), key]
        heapq.heappush(self._heap, entry)
        if deadline < self._armed_at:
            self._arm(deadline)

    def __len__(self) -> int:
        return len(self._entries)

    def _arm(self, deadline: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = deadline
        self._armed = self._loop.call_at(deadline, self._run)

    def _run(self) -> None:
        self._armed, self._armed_at = None, float("inf")
        now = self._loop.time()
        heap, entries = self._heap, self._entries
        while heap and heap[0][0] <= now:
            _, _, key = heapq.heappop(heap)
            if key is not _REMOVED:
                del entries[key]
                self._fire(key, now)  # may schedule the key again
        while heap and heap[0][2] is _REMOVED:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])


_REMOVED = object()  # a stale entry's key
