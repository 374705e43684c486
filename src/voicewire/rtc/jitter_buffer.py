"""A small adaptive jitter buffer for the peer's 20 ms Opus frames, sans-IO.

Theory of operation
-------------------
Every packet has a *media time* (its RTP timestamp, unwrapped, over the clock rate) and an
arrival time, and their difference is its *transit*. The sender's clock and ours both run at
real speed, so transit is constant plus whatever delay the network (and our event loop) added
to that packet: the smallest transit seen lately, the *floor*, is what an undelayed packet takes,
and a packet's transit above the floor is the jitter it suffered.

The playout schedule is a single number, the *offset*: a frame plays at `media time + offset`.
Frames therefore leave at the sender's steady 20 ms cadence, `offset - floor` after an undelayed
packet would have arrived: that difference is the *target delay*, kept between `min_delay`
(20 ms, one frame: on a clean link a frame waits one frame and is played) and `max_delay`.
`next_deadline()` is when the head frame is due; the caller's timer calls `pop(now)` then, and
pops until it gets `None`.

Adapting the offset, with transits kept in two one-second buckets (the current second and the
previous one, so the floor and the peak follow a drifting clock or a changed path within 1-2 s):

- Up, at once: a packet whose transit would have put it later than its slot (less a 2 ms
  margin) raises the offset to cover it, up to `floor + max_delay`. A jitter spike therefore
  costs at most the packets it reorders, never the ones after.
- Down, slowly: when a bucket closes, the offset moves toward the peak transit of the last one
  plus the margin, by at most one frame per second, so a spike is remembered for one to two
  seconds and then forgotten a frame at a time. Lowering the offset releases the next frame up
  to 20 ms early; no audio is ever dropped to catch up, since the consumer is the agent and not
  a sound card.
- At the start of a talkspurt (the buffer ran dry and the next frame's timestamp skips ahead:
  DTX silence) the offset takes the value the current buckets ask for in one step, as there is
  no audio in flight to disturb; a bucket untouched for a whole second is forgotten first.

Losses. A frame that is missing when its slot comes is declared `Lost` only once a later frame
has arrived: until then nothing proves it was ever sent (the sender may be in DTX silence, or
the whole stream may be late, in which case its frames play on arrival, in order, as soon as
they come). `Lost` carries the payload of the following frame when it is already here, so the
decoder can rebuild the lost one from its in-band FEC instead of concealing it. A frame that
arrives after its sequence number was played or declared lost is dropped and counted as `late`.

Resynchronising. The schedule starts over from the packet that arrives when: its sequence number
jumps a whole buffer ahead (`capacity` frames: an outage or a sender restart); its transit is more
than a second away from the floor while it is not behind (a timestamp jump, a sender that paused
without advancing its clock, or a stall of more than a second); or two sequential packets are both
behind and either a whole buffer back or off the clock (a restart to lower sequence numbers: RFC
3550 A.1's two-packet rule, as one such packet may just be a stray). Frames still held are discarded
and counted.

Memory: at most `capacity` frames are held; anything further ahead resynchronises.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Frame", "JitterBuffer", "Lost"]

_MARGIN = 0.002
"""Seconds added above the highest recent transit: one event-loop wake-up of slack."""
_WINDOW = 1.0
"""Seconds per bucket of transits: the floor and peak cover the last one to two of them."""
_RESYNC_TRANSIT = 1.0
"""A transit this far from the floor means the timestamps no longer track arrival times."""
_INFINITY = float("inf")


@dataclass(frozen=True, slots=True)
class Frame:
    """The next frame to decode."""

    sequence: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Lost:
    """Frame `sequence` was lost: conceal it, or rebuild it from `next_payload`'s FEC."""

    sequence: int
    next_payload: bytes | None
    """The following frame's payload if it has already arrived (it carries the FEC), else None."""


class JitterBuffer:
    """Reorders one source's frames and releases them on a steady schedule; see module docstring.

    Feed every packet of the source to `push` (after SRTP, RTP parsing and any SSRC check), and
    call `pop` at `next_deadline()` until it returns None. Times are the caller's monotonic
    clock, in seconds.
    """

    __slots__ = (
        "_rate",
        "_frame",
        "_min_delay",
        "_max_delay",
        "_capacity",
        "_frames",
        "_next",
        "_output_started",
        "_last_output_media",
        "_timestamp",
        "_timestamp_extended",
        "_offset",
        "_window_end",
        "_current_min",
        "_current_max",
        "_previous_min",
        "_previous_max",
        "_restart_candidate",
        "received",
        "late",
        "duplicates",
        "lost",
        "resyncs",
        "discarded",
    )

    def __init__(
        self,
        *,
        clock_rate: int = 48000,
        frame_duration: float = 0.020,
        min_delay: float = 0.020,
        max_delay: float = 0.120,
        capacity: int = 50,
    ) -> None:
        """`capacity` frames (one second by default) bounds memory and the reordering depth."""
        self._rate = float(clock_rate)
        self._frame = frame_duration
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._capacity = capacity
        # Extended sequence number -> (media time, RTP timestamp, payload).
        self._frames: dict[int, tuple[float, int, bytes]] = {}
        self._next: int | None = None  # extended sequence number of the next frame out
        self._output_started = False
        self._last_output_media = 0.0
        self._timestamp = 0  # the latest RTP timestamp, and the same unwrapped
        self._timestamp_extended = 0
        self._offset = 0.0
        self._window_end = 0.0
        self._current_min = self._previous_min = _INFINITY
        self._current_max = self._previous_max = -_INFINITY
        self._restart_candidate = -1
        self.received = 0
        self.late = 0
        """Packets dropped because their sequence number was already played or declared lost."""
        self.duplicates = 0
        self.lost = 0
        """`Lost` items returned."""
        self.resyncs = 0
        self.discarded = 0
        """Frames thrown away by resynchronising."""

    def __len__(self) -> int:
        """Frames held: never more than `capacity`."""
        return len(self._frames)

    @property
    def target_delay(self) -> float:
        """Seconds between an undelayed packet's arrival and its playout, as now scheduled."""
        if self._next is None:
            return self._min_delay
        return self._offset - min(self._current_min, self._previous_min)

    def push(self, sequence: int, timestamp: int, payload: bytes, now: float) -> None:
        """Take one packet of the source, which arrived at `now`."""
        self.received += 1
        head = self._next
        if head is None:
            self._resync(sequence, timestamp, payload, now, self._min_delay)
            return
        ahead = ((sequence - head + 0x8000) & 0xFFFF) - 0x8000  # signed distance, mod 2^16
        if ahead >= self._capacity:
            self._resync(sequence, timestamp, payload, now, self.target_delay)
            return
        extended = self._timestamp_extended + (
            ((timestamp - self._timestamp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        )
        media = extended / self._rate
        transit = now - media
        off_clock = abs(transit - min(self._current_min, self._previous_min)) > _RESYNC_TRANSIT
        if ahead < 0 and (off_clock or ahead <= -self._capacity):
            if sequence == self._restart_candidate:  # RFC 3550 A.1: two sequential packets
                self._resync(sequence, timestamp, payload, now, self.target_delay)
            else:
                self._restart_candidate = (sequence + 1) & 0xFFFF
                self.late += 1
            return
        if off_clock:
            self._resync(sequence, timestamp, payload, now, self.target_delay)
            return
        self._timestamp = timestamp
        self._timestamp_extended = extended
        self._observe(transit, now)
        key = head + ahead
        frames = self._frames
        if ahead < 0:
            if self._output_started or max(frames, default=head) - key >= self._capacity:
                self.late += 1
                return
            self._next = key  # it precedes the first packet, and nothing has been played yet
        elif key in frames:
            self.duplicates += 1
            return
        elif not frames and key == head and media - self._last_output_media > 1.5 * self._frame:
            # The frame right after the last one played, but its timestamp skips ahead: DTX
            # silence ends and a talkspurt starts, so move the schedule in one step.
            self._offset = self._desired()
        frames[key] = (media, timestamp, payload)

    def pop(self, now: float) -> Frame | Lost | None:
        """The next frame or loss if it is due at `now`, else None."""
        if not self._frames:
            return None
        head = self._next
        assert head is not None  # frames are only held once the first packet set the head
        entry = self._frames.get(head)
        if entry is not None:
            media, timestamp, payload = entry
            if now < media + self._offset:
                return None
            del self._frames[head]
            self._next = head + 1
            self._output_started = True
            self._last_output_media = media
            return Frame(head & 0xFFFF, timestamp, payload)
        media = self._missing_media(head)
        if now < media + self._offset:
            return None
        self._next = head + 1
        self._output_started = True
        self._last_output_media = media
        self.lost += 1
        following = self._frames.get(head + 1)
        return Lost(head & 0xFFFF, following[2] if following is not None else None)

    def next_deadline(self) -> float | None:
        """When `pop` will next return something, if nothing else arrives: None if empty."""
        if not self._frames:
            return None
        head = self._next
        assert head is not None
        entry = self._frames.get(head)
        media = entry[0] if entry is not None else self._missing_media(head)
        return media + self._offset

    def _missing_media(self, head: int) -> float:
        """The media time a missing head frame would have had, from the earliest one held."""
        first = min(self._frames)
        return self._frames[first][0] - (first - head) * self._frame

    def _observe(self, transit: float, now: float) -> None:
        if now >= self._window_end:
            self._roll(now)
        if transit < self._current_min:
            self._current_min = transit
        if transit > self._current_max:
            self._current_max = transit
        floor = min(self._current_min, self._previous_min)
        latest = transit + _MARGIN
        if latest > self._offset:  # it came later than its slot allowed: widen at once
            self._offset = min(max(latest, floor + self._min_delay), floor + self._max_delay)
        elif self._offset > floor + self._max_delay:  # the floor fell (a faster path)
            self._offset = floor + self._max_delay

    def _roll(self, now: float) -> None:
        """Close the current bucket of transits and ease the offset toward what it asks for."""
        if now >= self._window_end + _WINDOW:  # a whole bucket went by without packets
            self._previous_min, self._previous_max = _INFINITY, -_INFINITY
        else:
            self._previous_min, self._previous_max = self._current_min, self._current_max
        self._current_min, self._current_max = _INFINITY, -_INFINITY
        self._window_end = now + _WINDOW
        if self._previous_max == -_INFINITY:
            return
        desired = self._desired()
        if desired > self._offset:
            self._offset = desired
        else:
            self._offset = max(desired, self._offset - self._frame)

    def _desired(self) -> float:
        """The offset the buckets ask for: peak transit plus margin, within the delay bounds."""
        floor = min(self._current_min, self._previous_min)
        peak = max(self._current_max, self._previous_max) + _MARGIN
        return min(max(peak, floor + self._min_delay), floor + self._max_delay)

    def _resync(
        self, sequence: int, timestamp: int, payload: bytes, now: float, target: float
    ) -> None:
        """Start the schedule over from this packet, keeping `target` delay (within bounds)."""
        if self._next is not None:
            self.resyncs += 1
        self.discarded += len(self._frames)
        self._frames = {sequence: (0.0, timestamp, payload)}
        self._next = sequence
        self._output_started = False
        self._last_output_media = 0.0
        self._timestamp = timestamp
        self._timestamp_extended = 0
        self._restart_candidate = -1
        self._current_min = self._current_max = now
        self._previous_min, self._previous_max = _INFINITY, -_INFINITY
        self._window_end = now + _WINDOW
        self._offset = now + min(max(target, self._min_delay), self._max_delay)
