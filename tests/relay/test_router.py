"""The relay's routing decisions without sockets: what is forwarded where, and what is dropped.

Addresses are socket address bytes, as the worker's recvmmsg gives them (``router`` docstring).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.relay.stun_requests import binding_request
from voicewire.relay.allow_list import AllowList
from voicewire.relay.counters import Drop
from voicewire.relay.router import (
    Router,
    client_of,
    from_sockaddr,
    header_of,
    to_sockaddr,
)
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

KEYS = RoutingKeys([(1, bytes(range(32)))])
OTHER_KEYS = RoutingKeys([(1, bytes(range(1, 33)))])
TRANSCEIVER_HOST = ("10.0.0.5", 3479)
TRANSCEIVER = to_sockaddr(*TRANSCEIVER_HOST, v6=False)
CLIENT_HOST = ("198.51.100.7", 50000)
CLIENT = to_sockaddr(*CLIENT_HOST, v6=False)
RTP = b"\x80" + bytes(171)


def make_router(public=socket.AF_INET, internal=socket.AF_INET) -> Router:
    return Router(KEYS, AllowList.parse("10.0.0.0/8,fd00::/8"), 30.0, public, internal)


def test_binding_request_with_valid_token_installs_the_flow():
    router = make_router()
    route = router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER_HOST)), CLIENT)
    assert route.transceiver == TRANSCEIVER
    assert route.header == relay_header.encode(*CLIENT_HOST)
    assert router.route_upstream(RTP, CLIENT) is route  # later media follows the flow
    assert router.counters.learned_from_stun == 1


@pytest.mark.parametrize(
    "ufrag, reason",
    [
        (OTHER_KEYS.issue(TRANSCEIVER_HOST), Drop.BAD_TOKEN),  # wrong key
        (KEYS.issue(TRANSCEIVER_HOST)[:-3], Drop.BAD_TOKEN),  # truncated
        ("garbage-ufrag", Drop.BAD_TOKEN),
        (KEYS.issue(("192.168.1.1", 22)), Drop.NOT_ALLOWED),  # signed, but outside the networks
    ],
)
def test_untrusted_ufrags_forward_nothing(ufrag, reason):
    router = make_router()
    assert router.route_upstream(binding_request(ufrag), CLIENT) is None
    assert router.counters.drops[reason] == 1
    assert len(router.flows) == 0


def test_non_stun_from_unknown_client_is_dropped():
    router = make_router()
    assert router.route_upstream(RTP, CLIENT) is None
    assert router.counters.drops[Drop.UNKNOWN_FLOW] == 1


def test_binding_request_with_a_new_token_moves_a_known_flow():
    """A client that reuses its port for a new session must reach the new session's owner."""
    router = make_router()
    router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER_HOST)), CLIENT)
    other = ("10.0.0.6", 3479)
    moved = router.route_upstream(binding_request(KEYS.issue(other)), CLIENT)
    assert moved.transceiver == to_sockaddr(*other, v6=False)
    assert router.route_upstream(RTP, CLIENT) is moved


def test_forged_binding_request_on_a_known_flow_is_dropped():
    router = make_router()
    router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER_HOST)), CLIENT)
    forged = binding_request(OTHER_KEYS.issue(TRANSCEIVER_HOST))
    assert router.route_upstream(forged, CLIENT) is None
    assert router.counters.drops[Drop.BAD_TOKEN] == 1
    assert router.route_upstream(RTP, CLIENT).transceiver == TRANSCEIVER


def test_downstream_from_allowed_transceiver_learns_the_flow():
    router = make_router()
    datagram = relay_header.encode(*CLIENT_HOST) + RTP
    assert router.route_downstream(datagram, TRANSCEIVER) == (CLIENT, 8)
    assert router.counters.learned_from_downstream == 1
    assert router.route_upstream(RTP, CLIENT).transceiver == TRANSCEIVER


def test_downstream_from_elsewhere_is_not_allowed():
    router = make_router()
    datagram = relay_header.encode(*CLIENT_HOST) + RTP
    assert router.route_downstream(datagram, to_sockaddr("192.0.2.1", 3479, v6=False)) is None
    assert router.counters.drops[Drop.NOT_ALLOWED] == 1
    assert len(router.flows) == 0


def test_dual_stack_public_socket_sees_ipv4_clients_as_mapped():
    router = make_router(public=socket.AF_INET6)
    mapped = to_sockaddr(*CLIENT_HOST, v6=True)
    assert from_sockaddr(mapped) == ("::ffff:198.51.100.7", 50000)
    route = router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER_HOST)), mapped)
    assert route.header == relay_header.encode(*CLIENT_HOST)  # an IPv4 client on the wire
    assert router.route_downstream(route.header + RTP, TRANSCEIVER) == (mapped, 8)


def test_ipv6_transceiver_needs_an_ipv6_internal_socket():
    ufrag = KEYS.issue(("fd00::5", 3479))
    assert make_router().route_upstream(binding_request(ufrag), CLIENT) is None
    v6 = make_router(internal=socket.AF_INET6)
    route = v6.route_upstream(binding_request(ufrag), CLIENT)
    assert from_sockaddr(route.transceiver) == ("fd00::5", 3479)


def test_ipv4_transceiver_through_an_ipv6_internal_socket_is_ipv4_mapped():
    router = make_router(internal=socket.AF_INET6)
    route = router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER_HOST)), CLIENT)
    assert from_sockaddr(route.transceiver) == ("::ffff:10.0.0.5", 3479)
    back = router.route_downstream(route.header + RTP, to_sockaddr(*TRANSCEIVER_HOST, v6=True))
    assert back == (CLIENT, 8)
    assert router.counters.learned_from_downstream == 0  # the same transceiver: nothing relearned


def test_downstream_from_another_transceiver_moves_the_flow():
    router = make_router()
    router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER_HOST)), CLIENT)
    other = to_sockaddr("10.0.0.6", 3479, v6=False)
    assert router.route_downstream(relay_header.encode(*CLIENT_HOST) + RTP, other) == (CLIENT, 8)
    assert router.route_upstream(RTP, CLIENT).transceiver == other
    assert router.route_upstream(RTP, CLIENT).ufrag is None  # the next check is verified again


def test_ipv6_client_on_ipv4_public_socket_is_unreachable():
    router = make_router()
    datagram = relay_header.encode("2001:db8::1", 5000) + RTP
    assert router.route_downstream(datagram, TRANSCEIVER) is None
    assert router.counters.drops[Drop.UNREACHABLE] == 1


clients = st.builds(
    to_sockaddr, st.ip_addresses(v=4).map(str), st.integers(1, 65535), v6=st.booleans()
)


@given(data=st.binary(max_size=300), client=clients)
def test_any_bytes_from_an_unknown_client_are_dropped(data, client):
    router = make_router()
    assert router.route_upstream(data, client) is None
    assert len(router.flows) == 0
    assert sum(router.counters.drops) == 1


@given(data=st.binary(max_size=300), source=clients)
def test_any_bytes_from_outside_the_allow_list_are_dropped(data, source):
    router = make_router()
    if router.allow.permits(from_sockaddr(source)[0]):
        return
    assert router.route_downstream(data, source) is None
    assert len(router.flows) == 0


@given(data=st.binary(max_size=64), v6=st.booleans())
def test_any_bytes_from_a_transceiver_go_only_where_a_valid_header_says(data, v6):
    router = make_router(public=socket.AF_INET6 if v6 else socket.AF_INET)
    delivery = router.route_downstream(data, TRANSCEIVER)
    if delivery is None:
        assert len(router.flows) == 0
        return
    client, offset = delivery
    _, host, port, header_size = relay_header.decode(data)
    assert client == to_sockaddr(host, port, v6) and offset == header_size


# Socket addresses, relay headers and (host, port): the conversions the router keys flows with.

hosts = st.ip_addresses().map(str)
ports = st.integers(0, 65535)


def canonical(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The client a relay header names for ``host``: IPv4-mapped IPv6 is IPv4 (DESIGN §3)."""
    address = ipaddress.ip_address(host)
    return getattr(address, "ipv4_mapped", None) or address


@given(host=hosts, port=ports, v6=st.booleans())
def test_sockaddr_round_trip(host, port, v6):
    address = to_sockaddr(host, port, v6)
    if address is None:  # an IPv4 socket cannot reach an IPv6 host
        assert ":" in host and not v6
        return
    assert len(address) == (28 if v6 else 16)
    back, back_port = from_sockaddr(address)
    assert (canonical(back), back_port) == (canonical(host), port)
    assert to_sockaddr(back, back_port, v6) == address


@given(host=hosts, port=ports, v6=st.booleans(), payload=st.binary(max_size=32))
def test_header_and_sockaddr_round_trip(host, port, v6, payload):
    """sockaddr → header is what relay_header.encode gives; header → sockaddr gives it back."""
    header = relay_header.encode(host, port)
    address = to_sockaddr(host, port, v6)
    if address is not None:
        assert header_of(address) == header
    client, offset = client_of(header + payload, v6)
    assert offset == len(header)
    assert client == to_sockaddr(str(canonical(host)), port, v6)  # None: IPv6 on an IPv4 socket
    if client is not None:
        assert header_of(client) == header


@given(data=st.binary(max_size=40), v6=st.booleans())
def test_client_of_accepts_exactly_what_relay_header_decode_accepts(data, v6):
    try:
        family, host, port, offset = relay_header.decode(data)
    except relay_header.HeaderError:
        with pytest.raises(relay_header.HeaderError):
            client_of(data, v6)
        return
    client, client_offset = client_of(data, v6)
    assert client_offset == offset
    assert client == (to_sockaddr(host, port, v6) if v6 or family == 4 else None)
