"""The relay's counters: plain ints on the hot path, exported by the metrics layer.

Every per-datagram counter is an attribute increment, never a Prometheus call: the worker adds
them up while it forwards and publishes a snapshot a few times a second (see ``stats_board``).
"""

from __future__ import annotations

from enum import IntEnum


class Drop(IntEnum):
    """Why a datagram was not forwarded; the metric label is the lower-case name."""

    UNKNOWN_FLOW = 0  # not STUN, from a client with no flow (e.g. right after a relay restart)
    NOT_STUN = 1  # STUN-range first byte (RFC 7983) but not a binding request
    MALFORMED = 2  # broken STUN framing, no USERNAME, or a bad relay header
    BAD_TOKEN = 3  # USERNAME whose server ufrag is not a valid routing token
    NOT_ALLOWED = 4  # internal peer outside the transceiver allow-list
    UNREACHABLE = 5  # an address family the relay's sockets cannot reach
    SEND_FAILED = 6  # the kernel refused the send (full buffer, no route)
    RECOVERING = 7  # no flow yet, its lookup pending, and as many held as a lookup may hold
    LOOKUP_RATE_LIMITED = 8  # no flow, and the worker's lookup budget spent (flow_recovery)

    @property
    def label(self) -> str:
        return self.name.lower()


class RelayCounters:
    """Monotonic counts of one worker, plus its live flow count."""

    __slots__ = (
        "upstream_packets",
        "upstream_bytes",
        "downstream_packets",
        "downstream_bytes",
        "learned_from_stun",
        "learned_from_downstream",
        "learned_from_redis",
        "lookups",  # flow lookups asked of Redis (flow_recovery); answered ones are counted below
        "lookup_hits",  # answered with a record naming an allowed transceiver
        "lookup_misses",  # answered with no record
        "lookup_refused",  # answered with a record naming anything else: never forwarded to
        "lookup_errors",  # not answered: Redis failed
        "expired",
        "flows",
        "drops",
    )

    SCALARS = __slots__[:-1]
    SIZE = len(SCALARS) + len(Drop)

    def __init__(self) -> None:
        for name in self.SCALARS:
            setattr(self, name, 0)
        self.drops = [0] * len(Drop)

    def values(self) -> tuple[int, ...]:
        """A flat snapshot: the scalars in ``SCALARS`` order, then drops in ``Drop`` order."""
        return (*(getattr(self, name) for name in self.SCALARS), *self.drops)

    @classmethod
    def from_values(cls, values: tuple[int, ...]) -> RelayCounters:
        counters = cls()
        for name, value in zip(cls.SCALARS, values, strict=False):
            setattr(counters, name, value)
        counters.drops = list(values[len(cls.SCALARS) :])
        return counters
