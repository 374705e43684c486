"""When the test bed's own programs were frozen, so a gap they caused is not blamed on voicewire.

The caller measures a call's gap as the time between two RTP packets *it processed*, and the
impairment hop is the network: if the caller's event loop or the hop's loop did not run for a
second (a busy 2-core CI machine, a paused VM), every call shows a one-second gap that no relay
or transceiver caused. Each of them therefore logs the intervals in which it ran late, and a gap
is judged by the part of it during which the bed itself was running (:func:`uncovered`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

STALL_S = 0.05  # later than this counts; normal scheduling noise is well under 10 ms
KEEP = 256  # intervals kept (a test looks at the last few seconds)

Interval = tuple[float, float]


class StallLog:
    """Intervals (monotonic start, end) in which a program ran later than it meant to."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.intervals: list[Interval] = []

    def late(self, due: float, now: float) -> None:
        """Work due at ``due`` ran at ``now``; remembered if that is a stall."""
        if now - due < STALL_S:
            return
        if self.intervals and due <= self.intervals[-1][1]:
            start, end = self.intervals[-1]
            self.intervals[-1] = (start, max(end, now))
        else:
            self.intervals.append((due, now))
            del self.intervals[: -self.keep]

    def between(self, since: float, until: float) -> list[Interval]:
        return [(a, b) for a, b in self.intervals if b > since and a < until]


def merged(intervals: Iterable[Sequence[float]]) -> list[Interval]:
    """The union of ``intervals`` as sorted, disjoint intervals."""
    out: list[Interval] = []
    for start, end in sorted((float(a), float(b)) for a, b in intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def uncovered(start: float, end: float, stalls: Sequence[Interval]) -> float:
    """Seconds of [start, end] outside every interval of ``stalls`` (disjoint)."""
    covered = sum(max(0.0, min(b, end) - max(a, start)) for a, b in stalls)
    return max(0.0, (end - start) - covered)
