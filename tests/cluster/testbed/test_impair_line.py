"""The impairment hop's scheduling rules, without namespaces (no root needed).

The bed tests measure the hop end to end; these pin down the rules that a measurement at audio
pacing cannot see, such as "jitter never reorders a flow" at packet rates where it could.
"""

from __future__ import annotations

import random
import struct

from tests.cluster.testbed.impair import Direction, Impairment, Line, flow_key


def udp_packet(sport: int, dport: int = 3478) -> bytes:
    """A minimal IPv4/UDP packet: enough header for the hop's flow key."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, b"\x0a" * 4, b"\x0b" * 4)
    return ip + struct.pack("!HHHH", sport, dport, 8, 0)


def releases(rules: Direction, packets: list[bytes], spacing: float, seed: int = 1) -> list:
    line = Line("up", -1, rules)
    rng = random.Random(seed)
    return [line.release_time(p, i * spacing, rng) for i, p in enumerate(packets)]


def test_jitter_never_reorders_a_flow_unless_asked():
    packets = [udp_packet(5000)] * 2000
    ordered = releases(Direction(20.0, 5.0, 0.0), packets, spacing=0.001)
    assert ordered == sorted(ordered)
    shuffled = releases(Direction(20.0, 5.0, 0.0, reorder=True), packets, spacing=0.001)
    assert shuffled != sorted(shuffled)


def test_flows_are_held_in_order_independently():
    """A late packet of one flow does not hold back another flow."""
    a, b = udp_packet(5000), udp_packet(5001)
    times = releases(Direction(20.0, 5.0, 0.0), [a, b] * 500, spacing=0.0005)
    assert times[0::2] == sorted(times[0::2]) and times[1::2] == sorted(times[1::2])
    assert times != sorted(times)  # across flows, jitter does reorder
    assert flow_key(a) != flow_key(b)


def test_delay_stays_within_jitter_and_loss_is_the_configured_share():
    packets = [udp_packet(6000 + i % 50) for i in range(20000)]
    times = releases(Direction(20.0, 5.0, 0.01, reorder=True), packets, spacing=0.02)
    kept = [(t - i * 0.02) * 1000 for i, t in enumerate(times) if t is not None]
    assert all(15.0 - 1e-9 <= delay <= 25.0 + 1e-9 for delay in kept)
    assert 0.007 <= 1 - len(kept) / len(packets) <= 0.013


def test_symmetric_splits_the_rtt_and_round_trips_through_json():
    impairment = Impairment.symmetric(rtt_ms=40.0, jitter_ms=5.0, loss=0.01, seed=7)
    assert impairment.up.delay_ms == impairment.down.delay_ms == 20.0
    assert Impairment.from_json(impairment.to_json()) == impairment
