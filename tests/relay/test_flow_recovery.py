"""Flow recovery's decisions without Redis or threads: what is held, asked, installed, dropped.

The lookup thread is replaced by a list of questions and the answers a test gives; time is a
fake clock. Real Redis and real processes: ``tests/cluster/test_flow_recovery.py``.
"""

from __future__ import annotations

import socket

import pytest

from tests.relay.stun_requests import binding_request
from voicewire.relay.allow_list import AllowList
from voicewire.relay.counters import Drop
from voicewire.relay.flow_recovery import (
    BURST,
    HOLD,
    MAX_PENDING,
    NEGATIVE_TTL,
    RATE,
    Answer,
    FlowRecovery,
    NoOwner,
    _named,
)
from voicewire.relay.router import Router, to_sockaddr
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

KEYS = RoutingKeys([(1, bytes(range(32)))])
TRANSCEIVER_HOST = ("10.0.0.5", 3479)
CLIENT_HOST = ("198.51.100.7", 50000)
CLIENT = to_sockaddr(*CLIENT_HOST, v6=False)


def rtp(sequence: int) -> bytes:
    return b"\x80\x6f" + sequence.to_bytes(2, "big") + bytes(20)


class FakeLookups:
    fd = -1

    def __init__(self) -> None:
        self.asked: list[bytes] = []
        self.ready: list[Answer] = []

    def ask(self, client: bytes) -> None:
        self.asked.append(client)

    def answer(self, client: bytes, owner: tuple[str, int] | NoOwner) -> None:
        self.ready.append((client, owner))

    def answers(self) -> list[Answer]:
        ready, self.ready = self.ready, []
        return ready


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lookups() -> FakeLookups:
    return FakeLookups()


@pytest.fixture
def router(lookups: FakeLookups, clock: Clock) -> Router:
    allow = AllowList.parse("10.0.0.0/8,fd00::/8")
    router = Router(KEYS, allow, 30.0, socket.AF_INET, socket.AF_INET)
    router.recovery = FlowRecovery(router, lookups, clock)  # type: ignore[arg-type]
    return router


def test_the_first_datagrams_are_held_then_forwarded_on_the_flow_a_record_names(router, lookups):
    for sequence in range(HOLD + 2):
        assert router.route_upstream(rtp(sequence), CLIENT) is None
    assert lookups.asked == [CLIENT]  # one lookup, however many datagrams
    assert router.counters.drops[Drop.RECOVERING] == 2

    lookups.answer(CLIENT, TRANSCEIVER_HOST)
    [(route, held)] = router.recovery.answered()
    assert route.transceiver == to_sockaddr(*TRANSCEIVER_HOST, v6=False)
    assert route.header == relay_header.encode(*CLIENT_HOST)
    assert held == [rtp(sequence) for sequence in range(HOLD)]  # in order
    assert router.route_upstream(rtp(9), CLIENT) is route  # installed like a learned flow
    counters = router.counters
    assert (counters.lookups, counters.lookup_hits, counters.learned_from_redis) == (1, 1, 1)


@pytest.mark.parametrize(
    "owner, drop, counter",
    [
        (NoOwner.MISSING, Drop.UNKNOWN_FLOW, "lookup_misses"),
        (NoOwner.FAILED, Drop.UNKNOWN_FLOW, "lookup_errors"),
        (("192.0.2.1", 3479), Drop.NOT_ALLOWED, "lookup_refused"),  # a poisoned record
        (NoOwner.UNREADABLE, Drop.NOT_ALLOWED, "lookup_refused"),
        (("fd00::5", 3479), Drop.UNREACHABLE, "lookup_refused"),  # an IPv4 internal socket
    ],
)
def test_no_usable_record_forwards_nothing_and_is_not_asked_again_for_a_while(
    router, lookups, clock, owner, drop, counter
):
    router.route_upstream(rtp(0), CLIENT)
    router.route_upstream(rtp(1), CLIENT)
    lookups.answer(CLIENT, owner)
    assert router.recovery.answered() == []
    assert router.counters.drops[drop] == 2  # both held datagrams
    assert getattr(router.counters, counter) == 1
    assert len(router.flows) == 0

    clock.now += NEGATIVE_TTL - 0.01
    for sequence in range(100):
        router.route_upstream(rtp(sequence), CLIENT)
    assert lookups.asked == [CLIENT]
    clock.now += 0.02
    router.route_upstream(rtp(0), CLIENT)
    assert lookups.asked == [CLIENT, CLIENT]


def test_a_flow_learned_while_the_lookup_was_pending_wins_over_the_record(router, lookups):
    router.route_upstream(rtp(0), CLIENT)
    stun = binding_request(KEYS.issue(TRANSCEIVER_HOST))
    learned = router.route_upstream(stun, CLIENT)  # a consent check, meanwhile
    lookups.answer(CLIENT, ("10.0.0.9", 3479))  # stale: another transceiver
    assert router.recovery.answered() == [(learned, [rtp(0)])]
    assert router.route_upstream(rtp(1), CLIENT) is learned
    assert router.counters.learned_from_redis == 0


def test_lookups_are_rate_limited_per_worker(router, lookups, clock):
    clients = [to_sockaddr("198.51.100.8", port, v6=False) for port in range(1, 3 * BURST)]
    asked_at_once = 0
    for client in clients[: BURST + 10]:
        router.route_upstream(rtp(0), client)
        lookups.answer(client, NoOwner.MISSING)  # answered at once: the in-flight cap is apart
        router.recovery.answered()
        asked_at_once = len(lookups.asked)
    assert asked_at_once == BURST
    assert router.counters.drops[Drop.LOOKUP_RATE_LIMITED] == 10

    clock.now += 10.5 / RATE  # the bucket refills at RATE a second
    for client in clients[BURST + 10 : BURST + 30]:
        router.route_upstream(rtp(0), client)
    assert len(lookups.asked) == BURST + 10


def test_lookups_in_flight_are_capped(router, lookups):
    for port in range(1, MAX_PENDING + 6):
        router.route_upstream(rtp(0), to_sockaddr("198.51.100.8", port, v6=False))
    assert len(lookups.asked) == MAX_PENDING
    assert router.counters.drops[Drop.LOOKUP_RATE_LIMITED] == 5


def test_stun_never_waits_for_a_lookup(router, lookups):
    route = router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER_HOST)), CLIENT)
    assert route is not None and lookups.asked == []


def test_a_mapped_client_is_looked_up_as_the_ipv4_client_its_relay_header_names():
    assert _named(to_sockaddr(*CLIENT_HOST, v6=True)) == CLIENT_HOST
    assert _named(to_sockaddr("2001:db8::7", 443, v6=True)) == ("2001:db8::7", 443)


def test_without_recovery_unknown_clients_are_dropped_as_before():
    router = Router(KEYS, AllowList.parse("10.0.0.0/8"), 30.0, socket.AF_INET, socket.AF_INET)
    assert router.route_upstream(rtp(0), CLIENT) is None
    assert router.counters.drops[Drop.UNKNOWN_FLOW] == 1
    assert router.counters.lookups == 0
