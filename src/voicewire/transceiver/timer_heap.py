"""One heap of deadlines for every session, driving a single event-loop timer.

Each sans-IO session reports its next deadline after every change (``get_timer``). Arming one
loop callback per session and cancelling it on each change would churn the loop's own heap 100
times a second per session; instead this heap keeps the latest deadline per key, pushes a new
entry when it changes, skips stale entries lazily, and keeps exactly one loop timer armed for
the earliest deadline.
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
        self._deadlines: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def schedule(self, key: Hashable, deadline: float | None) -> None:
        """Make ``deadline`` (loop time) the only pending one for ``key``; None cancels it."""
        if deadline is None:
            self._deadlines.pop(key, None)
            return
        if self._deadlines.get(key) == deadline:
            return
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), key))
        if deadline < self._armed_at:
            self._arm(deadline)

    def __len__(self) -> int:
        return len(self._deadlines)

    def _arm(self, deadline: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = deadline
        self._armed = self._loop.call_at(deadline, self._run)

    def _run(self) -> None:
        self._armed, self._armed_at = None, float("inf")
        now = self._loop.time()
        heap, deadlines = self._heap, self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if deadlines.get(key) == deadline:
                del deadlines[key]
                self._fire(key, now)  # may schedule the key again
        while heap and deadlines.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # stale: superseded or cancelled
        if heap:
            self._arm(heap[0][0])
