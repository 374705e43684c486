"""The relay's soft state: client address → route, forgotten after an idle timeout.

Expiry is generational rather than per-entry: the table is a few dicts, newest first; a hit in an
older generation moves the entry to the newest; every ``idle_timeout / generations`` seconds the
oldest generation is dropped whole. The hot path is therefore one dict lookup with no timestamp
write, and expiry never scans the table (a scan of 100k flows would stall forwarding for
milliseconds). A flow idle for ``idle_timeout`` seconds is gone within one more rotation period.
Everything here can be rebuilt at any time: from the next STUN check or the next downstream packet.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

GENERATIONS = 4


class FlowTable(Generic[V]):
    def __init__(self, idle_timeout: float, generations: int = GENERATIONS) -> None:
        if idle_timeout <= 0:
            raise ValueError("idle timeout must be positive")
        self.rotation_period = idle_timeout / generations
        self.newest: dict[Hashable, V] = {}
        self._older: list[dict[Hashable, V]] = [{} for _ in range(generations)]

    def get(self, key: Hashable) -> V | None:
        """The route for ``key``; a hit refreshes it."""
        value = self.newest.get(key)
        if value is None:
            for generation in self._older:
                value = generation.pop(key, None)
                if value is not None:
                    self.newest[key] = value
                    break
        return value

    def install(self, key: Hashable, value: V) -> None:
        for generation in self._older:
            generation.pop(key, None)
        self.newest[key] = value

    def rotate(self) -> int:
        """Age every generation by one step; return how many flows expired."""
        expired = len(self._older.pop())
        self._older.insert(0, self.newest)
        self.newest = {}
        return expired

    def __len__(self) -> int:
        return len(self.newest) + sum(len(generation) for generation in self._older)
