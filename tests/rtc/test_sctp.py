"""SCTP association, sans-IO: two of ours in memory through a lossy simulated network under a
fake clock, hand-made packets for the corners, and hypothesis for the parser.

Interop with aiortc's independent implementation is in `test_data_channel.py`, where it runs
through the data-channel layer the way a browser would use it.
"""

from __future__ import annotations

import heapq
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import google_crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.rtc.engine_events import drain
from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.sctp import (
    COOKIE_LIFETIME,
    PPID_BINARY,
    PPID_STRING,
    RTO_INITIAL,
    RTO_MIN,
    SACK_DELAY,
    SctpAssociation,
    SctpClosed,
    SctpCloseReason,
    SctpConnected,
    SctpMessage,
    SctpState,
    SctpStreamReset,
    crc32c,
)

MTU = 1163  # what DTLS 1.2 with AES-128-GCM leaves of a 1200-byte datagram
PORT = 5000


def association(seed: int, **overrides) -> SctpAssociation:
    options: dict = dict(
        random_bytes=random.Random(seed).randbytes,
        max_packet_size=MTU,
        remote_max_message_size=262144,
    )
    options.update(overrides)
    return SctpAssociation(**options)


@dataclass
class Network:
    """Two sans-IO endpoints, a fake clock and a netem-like link between them.

    Each packet takes `latency` seconds (plus up to `jitter` more, which reorders), and is lost,
    duplicated or reordered with the given probabilities, drawn from a seeded RNG. `drop` can
    name specific packets to lose. Every packet is checked against the MTU on its way out.
    Works for anything with the engine contract: `SctpAssociation` and `DataChannels`.
    """

    a: object
    b: object
    seed: int = 0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    latency: float = 0.005
    jitter: float = 0.02
    mtu: int = MTU
    drop: Callable[[str, bytes], bool] = lambda sender, packet: False
    now: float = 0.0
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    events: dict[str, list] = field(default_factory=lambda: {"a": [], "b": []})

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._counter = 0

    def endpoint(self, name: str):
        return self.a if name == "a" else self.b

    def flush(self) -> None:
        """Collect what both sides want to send, and their events."""
        for name, receiver in (("a", "b"), ("b", "a")):
            endpoint = self.endpoint(name)
            for packet in endpoint.packets_to_send(self.now):
                assert len(packet) <= self.mtu, f"{len(packet)}-byte packet exceeds the MTU"
                self.sent.append((name, packet))
                if self.drop(name, packet) or self._rng.random() < self.loss:
                    continue
                copies = 2 if self._rng.random() < self.duplicate else 1
                for _ in range(copies):
                    delay = self.latency
                    if self._rng.random() < self.reorder:
                        delay += self._rng.random() * self.jitter
                    self._counter += 1
                    heapq.heappush(self._queue, (self.now + delay, self._counter, receiver, packet))
            self.events[name].extend(drain(endpoint))

    def step(self) -> bool:
        """Advance the clock to the next arrival or timer and act on it; False if idle."""
        self.flush()
        timers = [
            (deadline, name)
            for name in ("a", "b")
            if (deadline := self.endpoint(name).get_timer()) is not None
        ]
        next_arrival = self._queue[0][0] if self._queue else None
        next_timer = min(timers) if timers else None
        if next_arrival is None and next_timer is None:
            return False
        if next_timer is None or (next_arrival is not None and next_arrival <= next_timer[0]):
            self.now, _, receiver, packet = heapq.heappop(self._queue)
            self.endpoint(receiver).receive_packet(packet, self.now)
        else:
            self.now = max(self.now, next_timer[0])
            self.endpoint(next_timer[1]).handle_timer(self.now)
        self.flush()
        return True

    def run_until(self, done: Callable[[], bool], limit: float = 120.0) -> None:
        while not done():
            assert self.now < limit, f"simulation ran past {limit} s"
            assert self.step(), "network idle before the condition held"

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.flush()
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            upcoming = timers + [arrival for arrival, *_ in self._queue[:1]]
            if not upcoming or min(upcoming) > end:
                self.now = end
                break
            self.step()

    def of(self, name: str, kind: type) -> list:
        return [event for event in self.events[name] if isinstance(event, kind)]

    def connect(self) -> None:
        self.a.connect(self.now)
        self.run_until(lambda: self.of("a", SctpConnected) and self.of("b", SctpConnected))


def connected_pair(**network_options) -> Network:
    network = Network(association(1), association(2), **network_options)
    network.connect()
    return network


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def messages(network: Network, name: str) -> list[SctpMessage]:
    return network.of(name, SctpMessage)


# -- CRC32c ------------------------------------------------------------------------------------


def test_crc32c_check_value_and_agreement_with_google_crc32c() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    rng = random.Random(7)
    for size in (0, 1, 3, 4, 5, 7, 8, 1163, 1200):
        data = rng.randbytes(size)
        assert crc32c(data) == google_crc32c.value(data)


# -- setup -------------------------------------------------------------------------------------


def test_handshake_is_init_init_ack_cookie_echo_cookie_ack() -> None:
    network = connected_pair()

    types = [(sender, packet[12]) for sender, packet in network.sent]
    assert types == [("a", 1), ("b", 2), ("a", 10), ("b", 11)]
    init = network.sent[0][1]
    assert struct.unpack_from("!I", init, 4)[0] == 0  # RFC 9260 §8.5.1: INIT carries tag 0
    assert network.a.state is network.b.state is SctpState.ESTABLISHED
    assert network.a.outbound_streams == network.b.inbound_streams == 1024
    assert network.a.supports_stream_reset and network.b.supports_stream_reset
    # The server kept no state until the cookie came back, and the handshake was one RTT each.
    assert network.now == pytest.approx(4 * network.latency)


def test_init_ack_advertises_forward_tsn_and_re_config() -> None:
    network = connected_pair()
    init_ack = network.sent[1][1]
    assert b"\xc0\x00\x00\x04" in init_ack  # RFC 3758 §3.1 Forward-TSN-Supported
    assert b"\x80\x08\x00\x06\x82\xc0" in init_ack  # Supported Extensions: RE-CONFIG, FWD-TSN


def test_simultaneous_init_ends_in_one_association() -> None:
    network = Network(association(1), association(2))
    network.a.connect(0.0)
    network.b.connect(0.0)
    network.run_until(lambda: network.of("a", SctpConnected) and network.of("b", SctpConnected))
    network.a.send(3, PPID_STRING, b"after the collision")
    network.run_until(lambda: messages(network, "b"))
    assert messages(network, "b")[0].data == b"after the collision"
    assert len(network.of("a", SctpConnected)) == len(network.of("b", SctpConnected)) == 1


def test_lost_init_and_cookie_echo_are_retransmitted() -> None:
    lost: set[int] = set()

    def drop(sender: str, packet: bytes) -> bool:
        chunk_type = packet[12]
        if chunk_type in (1, 10) and chunk_type not in lost:
            lost.add(chunk_type)
            return True
        return False

    network = Network(association(1), association(2), drop=drop)
    network.connect()
    assert lost == {1, 10}
    assert network.now == pytest.approx(RTO_INITIAL + 2 * RTO_INITIAL + 4 * 0.005)  # backoff


def test_init_to_nobody_times_out() -> None:
    network = Network(association(1), association(2), drop=lambda sender, packet: True)
    network.a.connect(0.0)
    network.run_until(lambda: network.of("a", SctpClosed), limit=1000)
    (closed,) = network.of("a", SctpClosed)
    assert closed.reason is SctpCloseReason.TIMEOUT
    assert network.a.get_timer() is None
    assert sum(1 for sender, packet in network.sent if packet[12] == 1) == 9  # 1 + 8 retries


def test_tampered_or_stale_cookie_is_refused() -> None:
    a, b = association(1), association(2)
    a.connect(0.0)
    (init,) = a.packets_to_send(0.0)
    b.receive_packet(init, 0.0)
    (init_ack,) = b.packets_to_send(0.0)
    a.receive_packet(init_ack, 0.0)
    (echo,) = a.packets_to_send(0.0)
    assert echo[12] == 10

    tampered = bytearray(echo)
    tampered[30] ^= 1  # inside the cookie's fields
    b.receive_packet(resum(bytes(tampered)), 0.0)
    assert b.state is SctpState.NEW and b.ignored_chunks == 1

    b.receive_packet(echo, COOKIE_LIFETIME + 1)
    (error,) = b.packets_to_send(COOKIE_LIFETIME + 1)
    assert error[12] == 9 and struct.unpack_from("!H", error, 16)[0] == 3  # Stale Cookie Error
    assert b.state is SctpState.NEW

    b.receive_packet(echo, 1.0)
    assert b.state is SctpState.ESTABLISHED


# -- data transfer -----------------------------------------------------------------------------

SIZES = [1, 1024, 65536, 200 * 1024]


@pytest.mark.parametrize("seed", range(4))
def test_messages_arrive_intact_and_in_order_over_a_lossy_network(seed: int) -> None:
    network = connected_pair(seed=seed, loss=0.05, duplicate=0.03, reorder=0.1)
    sent = [payload(size, seed * 10 + i) for i, size in enumerate(SIZES)]
    for data in sent:
        network.a.send(1, PPID_BINARY, data)
        network.b.send(2, PPID_BINARY, data[::-1])
    network.run_until(
        lambda: (
            len(messages(network, "b")) == len(sent) and len(messages(network, "a")) == len(sent)
        )
    )
    assert [m.data for m in messages(network, "b")] == sent
    assert [m.data for m in messages(network, "a")] == [d[::-1] for d in sent]
    assert {m.stream_id for m in messages(network, "b")} == {1}
    assert network.a.retransmissions > 0 and network.b.duplicate_tsns > 0
    network.run_until(lambda: not network.a.buffered_amount and not network.b.buffered_amount)


def test_ordered_delivery_per_stream_across_many_small_messages() -> None:
    network = connected_pair(seed=9, loss=0.1, reorder=0.3)
    for i in range(300):
        network.a.send(i % 3, PPID_STRING, f"{i}".encode())
    network.run_until(lambda: len(messages(network, "b")) == 300)
    for stream in range(3):
        got = [int(m.data) for m in messages(network, "b") if m.stream_id == stream]
        assert got == list(range(stream, 300, 3))


def test_unordered_messages_are_all_delivered() -> None:
    network = connected_pair(seed=3, loss=0.1, reorder=0.3)
    for i in range(50):
        network.a.send(0, PPID_STRING, f"{i}".encode() * 200, ordered=False)
    network.run_until(lambda: len(messages(network, "b")) == 50)
    assert sorted(int(m.data[: len(m.data) // 200]) for m in messages(network, "b")) == list(
        range(50)
    )


def test_packets_bundle_small_messages() -> None:
    network = connected_pair()
    before = len(network.sent)
    for _ in range(10):
        network.a.send(0, PPID_STRING, b"x" * 50)
    network.flush()
    data_packets = [p for sender, p in network.sent[before:] if sender == "a"]
    assert len(data_packets) == 1


def test_lost_packet_is_retransmitted_after_the_rto() -> None:
    dropped = []

    def drop(sender: str, packet: bytes) -> bool:
        if sender == "a" and packet[12] == 0 and not dropped:
            dropped.append(packet)
            return True
        return False

    network = connected_pair(drop=drop)
    # The handshake gave each side an RTT sample, so the RTO is already at its floor.
    assert network.a.rto == network.b.rto == RTO_MIN
    start = network.now
    network.a.send(0, PPID_STRING, b"lost once")
    network.run_until(lambda: messages(network, "b"))
    assert dropped and network.a.retransmissions == 1
    assert network.now - start == pytest.approx(RTO_MIN + network.latency)
    # The timer backed off, and stays so: the retransmission gives no sample (Karn's rule).
    network.run_until(lambda: not network.a.buffered_amount)
    assert network.a.rto == 2 * RTO_MIN


def test_fast_retransmit_beats_the_timer() -> None:
    dropped = []

    def drop(sender: str, packet: bytes) -> bool:
        # Lose the first packet of the burst once: later packets report it missing.
        if sender == "a" and packet[12] == 0 and not dropped and network.a.buffered_amount > 50_000:
            dropped.append(packet)
            return True
        return False

    network = connected_pair(drop=drop)
    start = network.now
    network.a.send(0, PPID_BINARY, payload(60_000, 1))
    network.run_until(lambda: messages(network, "b"))
    assert dropped and network.a.retransmissions == 1
    assert network.now - start < RTO_MIN  # recovered by fast retransmit, not T3


def test_rto_follows_measured_rtt_down_to_its_minimum() -> None:
    network = connected_pair(latency=0.001)
    for i in range(20):
        network.a.send(0, PPID_STRING, b"ping" * 10)
        network.run_until(lambda i=i: len(messages(network, "b")) == i + 1)
        network.run_for(0.5)
    assert network.a.rto == RTO_MIN


def test_sack_is_delayed_for_one_packet_and_immediate_for_two() -> None:
    network = connected_pair(latency=0.001)
    network.a.send(0, PPID_STRING, b"one")
    network.flush()
    network.step()  # delivered to b
    assert network.b.get_timer() == pytest.approx(network.now + SACK_DELAY)
    assert not [p for s, p in network.sent if s == "b" and p[12] == 3]
    network.run_until(lambda: not network.a.buffered_amount)
    sacks = [p for s, p in network.sent if s == "b" and p[12] == 3]
    assert len(sacks) == 1

    network.a.send(0, PPID_BINARY, payload(2000, 1))  # two packets
    network.flush()
    network.step()
    network.step()
    assert len([p for s, p in network.sent if s == "b" and p[12] == 3]) == 2  # at once


def test_zero_receive_window_still_makes_progress() -> None:
    network = Network(association(1), association(2, receive_window=1500, max_message_size=1500))
    network.connect()
    for i in range(20):
        network.a.send(0, PPID_BINARY, payload(1400, i))
    network.run_until(lambda: len(messages(network, "b")) == 20)
    assert [m.data for m in messages(network, "b")] == [payload(1400, i) for i in range(20)]


# -- stream reset (RFC 6525) -------------------------------------------------------------------


def test_stream_reset_in_both_directions_restarts_the_stream() -> None:
    network = connected_pair(seed=5, loss=0.05)
    network.a.send(4, PPID_STRING, b"before")
    network.a.reset_streams([4])
    with pytest.raises(LocalError):
        network.a.send(4, PPID_STRING, b"while resetting")
    network.run_until(lambda: network.of("a", SctpStreamReset))
    assert network.of("a", SctpStreamReset) == [SctpStreamReset((4,), "outgoing")]
    network.run_until(lambda: network.of("b", SctpStreamReset))
    assert [type(e) for e in network.events["b"][-2:]] == [SctpMessage, SctpStreamReset]
    assert network.of("b", SctpStreamReset) == [SctpStreamReset((4,), "incoming")]

    network.b.reset_streams([4])
    network.a.send(4, PPID_STRING, b"after")  # reusable, from SSN 0 (RFC 6525 §5.2.2)
    network.run_until(lambda: len(messages(network, "b")) == 2)
    network.run_until(lambda: len(network.of("a", SctpStreamReset)) == 2)
    assert network.of("a", SctpStreamReset)[1] == SctpStreamReset((4,), "incoming")
    first_data = [p for s, p in network.sent if s == "a" and p[12] == 0][-1]
    assert struct.unpack_from("!H", first_data, 12 + 10)[0] == 0


def test_reset_waits_for_data_still_in_flight() -> None:
    """The request overtakes lost data: the peer answers "In progress" (RFC 6525 §5.2.2 E2)."""
    dropped = []

    def drop(sender: str, packet: bytes) -> bool:
        if sender == "a" and packet[12] == 0 and not dropped:
            dropped.append(packet)
            return True
        return False

    network = connected_pair(drop=drop)
    network.a.send(2, PPID_STRING, b"late")
    network.flush()
    network.a.reset_streams([2])
    network.run_until(lambda: network.of("a", SctpStreamReset))
    assert dropped
    assert [type(e) for e in network.events["b"][-2:]] == [SctpMessage, SctpStreamReset]
    assert messages(network, "b")[0].data == b"late"
    answers = [p[27] for s, p in network.sent if s == "b" and p[12] == 130]
    assert answers == [6, 1]  # In progress, then Performed without being asked again
    assert len(network.of("b", SctpStreamReset)) == 1


def test_reset_needs_an_established_association_and_valid_streams() -> None:
    network = connected_pair()
    with pytest.raises(LocalError):
        network.a.reset_streams([5000])
    with pytest.raises(LocalError):
        association(3).reset_streams([1])


# -- FORWARD-TSN (RFC 3758) --------------------------------------------------------------------


class Crafter:
    """Hand-made packets from a fake peer to one of our associations, already established."""

    def __init__(self) -> None:
        self.ours = association(2)
        self.peer_tag = 0x11223344
        self.tsn = 1000
        init_value = struct.pack("!IIHHI", self.peer_tag, 65536, 16, 16, self.tsn)
        init_value += struct.pack("!HH", 0x8008, 6) + bytes([130, 192]) + b"\0\0"
        self.ours.receive_packet(packet(0, chunk(1, 0, init_value)), 0.0)
        (init_ack,) = self.ours.packets_to_send(0.0)
        self.our_tag = struct.unpack_from("!I", init_ack, 16)[0]
        cookie = init_ack[init_ack.index(b"\x00\x07\x00") + 4 :][:66]
        self.send(chunk(10, 0, cookie))
        assert self.ours.state is SctpState.ESTABLISHED
        self.ours.packets_to_send(0.0)
        drain(self.ours)

    def send(self, *chunks: bytes, now: float = 0.0) -> None:
        self.ours.receive_packet(packet(self.our_tag, b"".join(chunks)), now)

    def data(self, tsn: int, data: bytes, flags: int = 3, stream: int = 0, ppid: int = 51):
        return chunk(0, flags, struct.pack("!IHHI", tsn, stream, 0, ppid) + data)

    def replies(self, now: float = 0.0) -> list[tuple[int, bytes]]:
        """(chunk type, chunk value) of everything our side sent."""
        out = []
        for p in self.ours.packets_to_send(now):
            offset = 12
            while offset < len(p):
                t, _, length = struct.unpack_from("!BBH", p, offset)
                out.append((t, p[offset + 4 : offset + length]))
                offset += (length + 3) & ~3
        return out


def chunk(chunk_type: int, flags: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("!BBH", chunk_type, flags, length) + value + bytes(-length % 4)


def packet(tag: int, chunks: bytes, ports: tuple[int, int] = (PORT, PORT)) -> bytes:
    return resum(struct.pack("!HHII", *ports, tag, 0) + chunks)


def resum(data: bytes) -> bytes:
    return data[:8] + struct.pack("<I", crc32c(data[:8] + b"\0\0\0\0" + data[12:])) + data[12:]


def test_forward_tsn_skips_an_abandoned_message() -> None:
    peer = Crafter()
    peer.send(peer.data(1000, b"first"))
    peer.send(peer.data(1001, b"abandoned-begin", flags=2))  # 1002 (its end) never comes
    peer.send(peer.data(1003, b"after"))
    assert [m.data for m in drain(peer.ours)] == [b"first"]
    peer.send(chunk(192, 0, struct.pack("!IHH", 1002, 0, 1)))
    assert [m.data for m in drain(peer.ours)] == [b"after"]
    assert peer.ours.broken_messages == 1
    sack = [v for t, v in peer.replies() if t == 3][-1]
    assert struct.unpack_from("!IIHH", sack) == (1003, 1024 * 1024, 0, 0)


def test_forward_tsn_keeps_a_message_that_continues_past_it() -> None:
    peer = Crafter()
    peer.send(peer.data(1001, b"b", flags=2), peer.data(1002, b"m", flags=0))
    peer.send(chunk(192, 0, struct.pack("!I", 1000)))  # only TSN 1000 was abandoned
    peer.send(peer.data(1003, b"e", flags=1))
    assert [m.data for m in drain(peer.ours)] == [b"bme"]


def test_sack_reports_gaps_and_duplicates_at_once() -> None:
    peer = Crafter()
    peer.send(peer.data(1000, b"a"))
    peer.send(peer.data(1002, b"c"), peer.data(1004, b"e"))
    peer.send(peer.data(1000, b"a"))
    sacks = [v for t, v in peer.replies() if t == 3]
    assert len(sacks) == 1
    cumulative, _, gaps, dups = struct.unpack_from("!IIHH", sacks[0])
    assert (cumulative, gaps, dups) == (1000, 2, 1)
    assert struct.unpack_from("!HHHHI", sacks[0], 12) == (2, 2, 4, 4, 1000)


def test_data_on_a_stream_beyond_the_agreed_count_is_reported() -> None:
    peer = Crafter()
    peer.send(peer.data(1000, b"x", stream=16))
    assert not drain(peer.ours)
    errors = [v for t, v in peer.replies() if t == 9]
    assert errors and struct.unpack_from("!HHH", errors[0]) == (1, 8, 16)


def test_a_message_larger_than_the_limit_aborts() -> None:
    peer = Crafter()
    peer.ours._max_message = 3000  # as if our SDP said a=max-message-size:3000
    peer.send(peer.data(1000, b"x" * 1000, flags=2))
    peer.send(peer.data(1001, b"x" * 1000, flags=0))
    peer.send(peer.data(1002, b"x" * 1000, flags=0))
    peer.send(peer.data(1003, b"x" * 1000, flags=1))
    (closed,) = drain(peer.ours)
    assert closed.reason is SctpCloseReason.PROTOCOL_VIOLATION
    assert [t for t, v in peer.replies()] == [6]  # ABORT


def test_data_without_user_data_aborts() -> None:
    peer = Crafter()
    peer.send(peer.data(1000, b""))
    (closed,) = drain(peer.ours)
    assert closed.reason is SctpCloseReason.PROTOCOL_VIOLATION
    abort = peer.replies()[0][1]
    assert struct.unpack_from("!H", abort)[0] == 9  # No User Data


def test_heartbeat_is_echoed() -> None:
    peer = Crafter()
    info = struct.pack("!HH", 1, 12) + b"nonce123"
    peer.send(chunk(4, 0, info))
    assert peer.replies() == [(5, info)]


def test_unknown_chunks_follow_their_type_bits() -> None:
    peer = Crafter()
    # 0x3f: stop, no report; the DATA after it is never seen.
    peer.send(chunk(0x3F, 0, b"????"), peer.data(1000, b"hidden"))
    assert not drain(peer.ours)
    # 0xff: skip and report; the DATA after it is processed.
    peer.send(chunk(0xFF, 0, b"????"), peer.data(1000, b"seen"))
    assert [m.data for m in drain(peer.ours)] == [b"seen"]
    assert 9 in [t for t, v in peer.replies()]


def test_peer_reset_request_is_answered_and_retransmissions_get_the_same_answer() -> None:
    peer = Crafter()
    request = struct.pack("!IIIH", 1000, 0, 999, 3) + b"\0\0"
    param = struct.pack("!HH", 13, 18) + request[:14]
    peer.send(chunk(130, 0, param + b"\0\0"))
    assert drain(peer.ours) == [SctpStreamReset((3,), "incoming")]
    first = [v for t, v in peer.replies() if t == 130]
    peer.send(chunk(130, 0, param + b"\0\0"))
    assert drain(peer.ours) == []  # performed once only
    assert [v for t, v in peer.replies() if t == 130] == first
    assert struct.unpack_from("!HHII", first[0]) == (16, 12, 1000, 1)  # Success - Performed
    bad = struct.pack("!HH", 13, 16) + struct.pack("!IIII", 5, 0, 999, 0)[:12]
    peer.send(chunk(130, 0, bad))
    assert struct.unpack_from("!HHII", [v for t, v in peer.replies() if t == 130][0])[3] == 5


# -- shutdown and abort ------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_shutdown_delivers_queued_data_then_closes_both_sides(loss: float) -> None:
    network = connected_pair(seed=11, loss=loss)
    sent = payload(100_000, 3)
    network.a.send(0, PPID_BINARY, sent)
    network.a.shutdown()
    with pytest.raises(LocalError):
        network.a.send(0, PPID_BINARY, b"too late")
    network.run_until(lambda: network.of("a", SctpClosed) and network.of("b", SctpClosed))
    assert [m.data for m in messages(network, "b")] == [sent]
    assert network.of("a", SctpClosed)[0].reason is SctpCloseReason.SHUTDOWN
    assert network.of("b", SctpClosed)[0].reason is SctpCloseReason.SHUTDOWN
    assert network.a.get_timer() is None and network.b.get_timer() is None


def test_shutdown_from_both_sides_at_once() -> None:
    network = connected_pair()
    network.a.shutdown()
    network.b.shutdown()
    network.run_until(lambda: network.of("a", SctpClosed) and network.of("b", SctpClosed))
    assert network.a.state is network.b.state is SctpState.CLOSED


def test_peer_keeps_sending_while_we_shut_down() -> None:
    network = connected_pair(seed=2, loss=0.1)
    network.b.send(0, PPID_BINARY, payload(30_000, 4))
    network.a.shutdown()
    network.run_until(lambda: network.of("a", SctpClosed) and network.of("b", SctpClosed))
    assert [m.data for m in messages(network, "a")] == [payload(30_000, 4)]


def test_abort_closes_both_sides_at_once() -> None:
    network = connected_pair()
    network.a.send(0, PPID_BINARY, payload(50_000, 1))
    network.a.abort("drain")
    assert network.a.state is SctpState.CLOSED
    network.run_until(lambda: network.of("b", SctpClosed))
    assert network.of("a", SctpClosed) == [SctpClosed(SctpCloseReason.ABORTED, "drain")]
    assert network.of("b", SctpClosed)[0].reason is SctpCloseReason.PEER_ABORTED
    assert network.a.get_timer() is None and network.b.get_timer() is None


def test_unreachable_peer_times_out_the_data() -> None:
    network = connected_pair()
    network.drop = lambda sender, packet: True
    network.a.send(0, PPID_STRING, b"into the void")
    network.run_until(lambda: network.of("a", SctpClosed), limit=10_000)
    assert network.of("a", SctpClosed)[0].reason is SctpCloseReason.TIMEOUT


# -- API misuse --------------------------------------------------------------------------------


def test_send_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(LocalError):
        association(1).send(0, PPID_STRING, b"not connected")
    network = Network(association(1, remote_max_message_size=100), association(2))
    network.connect()
    with pytest.raises(LocalError):
        network.a.send(0, PPID_STRING, b"")  # RFC 9260 §3.3.1: no empty DATA
    with pytest.raises(LocalError):
        network.a.send(1024, PPID_STRING, b"no such stream")
    with pytest.raises(LocalError):
        network.a.send(0, PPID_BINARY, bytes(101))  # over the peer's a=max-message-size
    network.a.send(0, PPID_BINARY, bytes(100))
    with pytest.raises(LocalError):
        network.a.connect(network.now)


@pytest.mark.parametrize(
    "options",
    [
        {"max_packet_size": 50},
        {"max_streams": 0},
        {"receive_window": 1000},
        {"max_message_size": 2 << 20},
        {"random_bytes": lambda n: bytes(n)},
    ],
)
def test_constructor_refuses_unusable_settings(options: dict) -> None:
    with pytest.raises(LocalError):
        association(1, **options)


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x13\x88" * 7, id="header-only"),
        pytest.param(packet(0, b"\x00\x00\x00\x02"), id="chunk-length-below-4"),
        pytest.param(packet(0, b"\x00\x00\x00\x40"), id="chunk-beyond-packet"),
        pytest.param(packet(0, chunk(0, 3, b"\0" * 8)), id="data-too-short"),
        pytest.param(packet(0, chunk(1, 0, b"\0" * 16)), id="init-zero-tag"),
        pytest.param(packet(0, chunk(3, 0, struct.pack("!IIHH", 1, 1, 1, 0))), id="sack-counts"),
        pytest.param(
            packet(0, chunk(3, 0, struct.pack("!IIHHHH", 1, 1, 1, 0, 5, 2))), id="sack-gap-order"
        ),
        pytest.param(packet(0, chunk(192, 0, b"\0\0\0\1\0\0")), id="forward-tsn-length"),
        pytest.param(packet(0, chunk(130, 0, struct.pack("!HH", 13, 7) + b"\0" * 4)), id="reset"),
        pytest.param(packet(0, chunk(7, 0, b"")), id="shutdown-empty"),
        pytest.param(packet(0, chunk(1, 0, b"\1" * 16) + chunk(11, 0, b"")), id="init-bundled"),
        pytest.param(packet(0, chunk(0, 3, b"\0" * 12) + b"\0\0"), id="trailing-bytes"),
    ],
)
def test_malformed_packets_raise_parse_error(data: bytes) -> None:
    ours = association(2)
    with pytest.raises(ParseError):
        ours.receive_packet(data, 0.0)


def test_bad_checksum_tag_or_port_is_dropped_and_counted() -> None:
    peer = Crafter()
    good = packet(peer.our_tag, peer.data(1000, b"x"))
    peer.ours.receive_packet(good[:8] + b"\0\0\0\0" + good[12:], 0.0)
    assert peer.ours.bad_checksums == 1
    peer.ours.receive_packet(packet(peer.our_tag + 1, peer.data(1000, b"x")), 0.0)
    peer.ours.receive_packet(packet(peer.our_tag, peer.data(1000, b"x"), (5001, PORT)), 0.0)
    assert peer.ours.bad_tags == 2
    assert not drain(peer.ours)
    peer.ours.receive_packet(good, 0.0)
    assert [m.data for m in drain(peer.ours)] == [b"x"]


def live_pair() -> tuple[Network, list[bytes]]:
    """A connected pair, and the packets a sent to b while establishing and exchanging data."""
    network = connected_pair(seed=1)
    network.a.send(1, PPID_BINARY, payload(3000, 1))
    network.a.reset_streams([2])
    network.b.send(1, PPID_STRING, b"reply")
    network.run_until(lambda: messages(network, "b") and network.of("a", SctpStreamReset))
    return network, [p for sender, p in network.sent if sender == "a"]


def still_works(network: Network) -> None:
    """Both sides are still established and both directions still deliver."""
    assert network.a.state is network.b.state is SctpState.ESTABLISHED
    count_a, count_b = len(messages(network, "a")), len(messages(network, "b"))
    network.a.send(7, PPID_STRING, b"still here")
    network.b.send(7, PPID_STRING, b"me too")
    network.run_until(
        lambda: len(messages(network, "b")) > count_b and len(messages(network, "a")) > count_a
    )
    assert messages(network, "b")[-1].data == b"still here"
    assert messages(network, "a")[-1].data == b"me too"


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_random_bytes_never_break_a_live_association(data: bytes) -> None:
    network, _ = live_pair()
    try:
        network.b.receive_packet(data, network.now)
    except ParseError:
        pass
    still_works(network)


# Chunk types a forged packet may carry without legitimately ending the association or taking
# TSNs the real peer will use: no DATA, FORWARD-TSN, ABORT or SHUTDOWN family.
SAFE_TYPES = [1, 2, 3, 4, 5, 9, 10, 11, 130, 0x3F, 0x7F, 0xBF, 0xFF]


@settings(max_examples=250)
@given(
    st.lists(
        st.tuples(st.sampled_from(SAFE_TYPES), st.integers(0, 255), st.binary(max_size=80)),
        min_size=1,
        max_size=4,
    )
)
def test_well_checksummed_random_chunks_never_break_a_live_association(chunks) -> None:
    network, _ = live_pair()
    body = b"".join(chunk(t, flags, value) for t, flags, value in chunks)
    try:
        network.b.receive_packet(packet(network.b._local_tag, body), network.now)
    except ParseError:
        pass
    still_works(network)


@settings(max_examples=250)
@given(st.data())
def test_mutated_real_packets_raise_only_parse_error(data) -> None:
    """Any mutation of a packet we really sent, checksum fixed: ParseError or a clean outcome."""
    network, sent = live_pair()
    original = data.draw(st.sampled_from(sent))
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(12, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(12, len(mutated)))
    try:
        network.b.receive_packet(resum(bytes(mutated[:cut])), network.now)
    except ParseError:
        pass
    network.flush()
    # Whatever it did (a forged ABORT or DATA may legitimately close or confuse the receive
    # side), the association is consistent: timers are sane and our own sending still works.
    assert network.b._held_bytes >= 0 and network.b._flight >= 0
    if network.b.state is SctpState.ESTABLISHED and network.a.state is SctpState.ESTABLISHED:
        count = len(messages(network, "a"))
        network.b.send(9, PPID_STRING, b"outbound intact")
        network.run_until(lambda: len(messages(network, "a")) > count)
        assert messages(network, "a")[-1].data == b"outbound intact"


class Sender(Crafter):
    """The crafted peer receives from us: we send, it answers with hand-made SACKs."""

    def sent_data(self) -> list[int]:
        return [struct.unpack_from("!I", v)[0] for t, v in self.replies() if t == 0]

    def sack(self, cumulative: int, *gaps: tuple[int, int], now: float = 0.0) -> None:
        value = struct.pack("!IIHH", cumulative, 1 << 20, len(gaps), 0)
        value += b"".join(struct.pack("!HH", *gap) for gap in gaps)
        self.send(chunk(3, 0, value), now=now)


def test_three_miss_reports_trigger_one_fast_retransmission() -> None:
    peer = Sender()
    for i in range(4):
        peer.ours.send(0, PPID_STRING, b"m%d" % i)
    peer.ours._max_packet = 60  # one DATA chunk per packet, as if the path were tiny
    tsns = peer.sent_data()
    assert len(tsns) == 4
    first = tsns[0]
    for reports in range(1, 4):  # the peer got 2, 3, 4 but not 1
        peer.sack((first - 1) & 0xFFFFFFFF, (2, 1 + reports))
        resent = peer.sent_data()
        assert resent == ([first] if reports == 3 else []), reports
    peer.sack((first - 1) & 0xFFFFFFFF, (2, 4))
    assert peer.sent_data() == []  # once only (RFC 9260 §7.2.4)
    peer.sack(tsns[-1])
    assert peer.ours.buffered_amount == 0 and peer.ours.get_timer() is None


def test_sack_with_huge_claimed_ranges_costs_what_we_sent() -> None:
    peer = Sender()
    peer.ours.send(0, PPID_BINARY, payload(5000, 1))
    tsns = peer.sent_data()  # four chunks fill the initial window (RFC 9260 §7.2.1)
    first = tsns[0]
    gaps = [(2 + 600 * i, 600 * (i + 1)) for i in range(100)]  # 60000 TSNs claimed
    started = time.perf_counter()
    for _ in range(100):
        peer.sack((first - 1) & 0xFFFFFFFF, *gaps)
    assert time.perf_counter() - started < 0.5
    assert peer.ours._flight == 1132  # all but the first chunk gap-acked, nothing else
    peer.sack(tsns[-1])
    assert peer.ours.buffered_amount == 5000 - 4 * 1132  # the fifth, now in flight
    assert peer.sent_data() == [(tsns[-1] + 1) & 0xFFFFFFFF]


def test_close_then_shutdown_still_ends_cleanly() -> None:
    network = connected_pair()
    network.a.send(1, PPID_STRING, b"x")
    network.a.reset_streams([1])
    network.a.shutdown()
    network.run_until(lambda: network.of("a", SctpClosed) and network.of("b", SctpClosed))
    assert network.of("a", SctpClosed)[0].reason is SctpCloseReason.SHUTDOWN


def test_lost_shutdown_complete_is_sent_again_from_the_closed_side() -> None:
    lost = []

    def drop(sender: str, data: bytes) -> bool:
        if data[12] == 14 and not lost:  # the first SHUTDOWN-COMPLETE
            lost.append(data)
            return True
        return False

    network = connected_pair(drop=drop)
    network.a.shutdown()
    network.run_until(lambda: network.of("a", SctpClosed) and network.of("b", SctpClosed))
    assert lost and network.of("b", SctpClosed)[0].reason is SctpCloseReason.SHUTDOWN
    (again,) = [p for s, p in network.sent if p[12] == 14 and p is not lost[0]]
    assert again[13] == 1  # RFC 9260 §8.4: the T bit, the peer's own tag reflected


def test_i_bit_asks_for_an_immediate_sack() -> None:
    lazy, eager = Crafter(), Crafter()
    lazy.send(lazy.data(1000, b"one packet"))
    assert [t for t, v in lazy.replies()] == []  # delayed (RFC 9260 §6.2)
    eager.send(eager.data(1000, b"one packet", flags=0x08 | 3))
    assert [t for t, v in eager.replies()] == [3]
