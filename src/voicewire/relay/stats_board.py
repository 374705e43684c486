"""Counters shared from worker processes to the supervisor through one memfd mapping.

Each worker owns one slot and overwrites it with a snapshot a few times a second; the supervisor
reads every slot when Prometheus scrapes. A sequence number around each write (a seqlock) lets
the reader retry instead of seeing a half-written snapshot. No locks, no pipes, no per-packet cost.
"""

from __future__ import annotations

import mmap
import os
import struct

from voicewire.relay.counters import RelayCounters

_SEQ = struct.Struct("<Q")
_VALUES = struct.Struct(f"<{RelayCounters.SIZE}Q")
SLOT_SIZE = _SEQ.size + _VALUES.size


class StatsBoard:
    def __init__(self, slots: int, fd: int | None = None) -> None:
        """Create a board for ``slots`` workers, or map the one behind an inherited ``fd``."""
        if fd is None:
            fd = os.memfd_create("voicewire-relay-stats", 0)
            os.ftruncate(fd, slots * SLOT_SIZE)
        self.fd = fd
        self.slots = slots
        self._map = mmap.mmap(fd, slots * SLOT_SIZE)

    def publish(self, slot: int, counters: RelayCounters) -> None:
        offset = slot * SLOT_SIZE
        (seq,) = _SEQ.unpack_from(self._map, offset)
        _SEQ.pack_into(self._map, offset, seq + 1)  # odd: write in progress
        _VALUES.pack_into(self._map, offset + _SEQ.size, *counters.values())
        _SEQ.pack_into(self._map, offset, seq + 2)

    def sequence(self, slot: int) -> int:
        """How many writes the slot has seen (times two): a worker that published since a
        reading is serving."""
        return _SEQ.unpack_from(self._map, slot * SLOT_SIZE)[0]

    def read(self, slot: int) -> RelayCounters:
        """The slot's latest snapshot (a worker that died mid-write leaves its last values)."""
        offset = slot * SLOT_SIZE
        for _ in range(1000):
            (before,) = _SEQ.unpack_from(self._map, offset)
            values = _VALUES.unpack_from(self._map, offset + _SEQ.size)
            (after,) = _SEQ.unpack_from(self._map, offset)
            if before == after and not before & 1:
                break
        return RelayCounters.from_values(values)
