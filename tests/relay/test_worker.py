"""The worker's batched pumps in-process, on real loopback sockets: one pump call is one
recvmmsg and one sendmmsg, so a batch here mixes what the service tests send one at a time."""

from __future__ import annotations

import socket

import pytest

from tests.relay.relay_process import nothing_arrives, udp
from tests.relay.stun_requests import binding_request
from voicewire.relay.allow_list import AllowList
from voicewire.relay.counters import Drop
from voicewire.relay.router import Router
from voicewire.relay.worker import MAX_DATAGRAM, Worker
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

KEYS = RoutingKeys([(1, bytes(range(32)))])
RTP = b"\x80" + bytes(159)


def bound(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, 0))
    return sock


def make_worker(public_host: str = "127.0.0.1", internal_host: str = "127.0.0.1") -> Worker:
    public, internal = bound(public_host), bound(internal_host)
    router = Router(
        KEYS, AllowList.parse("127.0.0.0/8,::1/128"), 30.0, public.family, internal.family
    )
    return Worker(public, internal, router)


def decode(datagram: bytes) -> tuple[tuple[str, int], bytes]:
    _, host, port, offset = relay_header.decode(datagram)
    return (host, port), datagram[offset:]


@pytest.mark.parametrize(
    "public_host, internal_host, client_host, transceiver_host",
    [
        ("127.0.0.1", "::1", "127.0.0.1", "::1"),
        ("::", "::", "127.0.0.1", "127.0.0.1"),  # both IPv4 peers reached as IPv4-mapped
        ("::1", "::", "::1", "::1"),
    ],
)
def test_both_directions_over_any_mix_of_families(
    public_host, internal_host, client_host, transceiver_host
):
    worker = make_worker(public_host, internal_host)
    relay_public = (
        "127.0.0.1" if public_host == "::" else public_host,
        worker.public.getsockname()[1],
    )
    relay_internal = worker.internal.getsockname()[1]
    client, transceiver = udp(client_host), udp(transceiver_host)
    client.sendto(binding_request(KEYS.issue(transceiver.getsockname()[:2])), relay_public)
    client.sendto(RTP, relay_public)
    worker.pump_upstream()
    named = client.getsockname()[:2]
    assert decode(transceiver.recv(4096))[0] == named
    assert decode(transceiver.recv(4096)) == (named, RTP)

    transceiver.sendto(relay_header.encode(*named) + b"answer", (transceiver_host, relay_internal))
    worker.pump_downstream()
    assert client.recv(4096) == b"answer"
    counters = worker.router.counters
    assert (counters.upstream_packets, counters.downstream_packets) == (2, 1)
    assert counters.downstream_bytes == len(b"answer")


def test_a_datagram_longer_than_a_slot_is_dropped_as_malformed_and_the_batch_goes_on():
    worker = make_worker()
    client, transceiver = udp(), udp()
    public = worker.public.getsockname()
    client.sendto(binding_request(KEYS.issue(transceiver.getsockname())), public)
    client.sendto(b"\x80" * (MAX_DATAGRAM + 1), public)
    client.sendto(b"\x80" * MAX_DATAGRAM, public)
    worker.pump_upstream()
    transceiver.recv(4096)  # the binding request
    assert decode(transceiver.recv(4096))[1] == b"\x80" * MAX_DATAGRAM
    assert nothing_arrives(transceiver, 0.05)
    assert worker.router.counters.drops[Drop.MALFORMED] == 1
    assert worker.router.counters.upstream_packets == 2

    header = relay_header.encode(*client.getsockname())  # the slot also fits an IPv6 header
    too_long = relay_header.MAX_SIZE + MAX_DATAGRAM + 1 - len(header)
    transceiver.sendto(header + b"\x80" * too_long, worker.internal.getsockname())
    transceiver.sendto(header + b"\x80" * MAX_DATAGRAM, worker.internal.getsockname())
    worker.pump_downstream()
    assert client.recv(4096) == b"\x80" * MAX_DATAGRAM
    assert worker.router.counters.drops[Drop.MALFORMED] == 2


def test_a_refused_send_is_counted_and_the_rest_of_the_batch_forwarded():
    """Linux refuses a broadcast address without SO_BROADCAST (EACCES): a token may name one."""
    worker = make_worker()
    good, refused, stranger, transceiver = udp(), udp(), udp(), udp()
    public = worker.public.getsockname()
    stun = binding_request(KEYS.issue(transceiver.getsockname()))
    good.sendto(stun, public)
    refused.sendto(binding_request(KEYS.issue(("127.255.255.255", 9))), public)
    for sequence in range(3):
        refused.sendto(RTP, public)
        stranger.sendto(RTP, public)  # no flow: dropped before sending
        good.sendto(bytes([0x80, sequence]), public)
    worker.pump_upstream()  # one batch of 11, interleaved: 4 sent, 4 refused, 3 never routed

    received = [decode(transceiver.recv(4096))[1] for _ in range(4)]
    assert received == [stun, b"\x80\x00", b"\x80\x01", b"\x80\x02"]
    counters = worker.router.counters
    assert counters.drops[Drop.SEND_FAILED] == 4  # the refused client's request and 3 datagrams
    assert counters.drops[Drop.UNKNOWN_FLOW] == 3
    assert counters.upstream_packets == 4
    assert counters.upstream_bytes == len(stun) + 3 * 2
