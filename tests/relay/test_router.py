"""The relay's routing decisions without sockets: what is forwarded where, and what is dropped."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.relay.stun_requests import binding_request
from voicewire.relay.allow_list import AllowList
from voicewire.relay.counters import Drop
from voicewire.relay.router import Router
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

KEYS = RoutingKeys([(1, bytes(range(32)))])
OTHER_KEYS = RoutingKeys([(1, bytes(range(1, 33)))])
TRANSCEIVER = ("10.0.0.5", 3479)
CLIENT = ("198.51.100.7", 50000)
RTP = b"\x80" + bytes(171)


def make_router(public=socket.AF_INET, internal=socket.AF_INET) -> Router:
    return Router(KEYS, AllowList.parse("10.0.0.0/8,fd00::/8"), 30.0, public, internal)


def test_binding_request_with_valid_token_installs_the_flow():
    router = make_router()
    route = router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER)), CLIENT)
    assert route.transceiver == TRANSCEIVER
    assert route.header == relay_header.encode(*CLIENT)
    assert router.route_upstream(RTP, CLIENT) is route  # later media follows the flow
    assert router.counters.learned_from_stun == 1


@pytest.mark.parametrize(
    "ufrag, reason",
    [
        (OTHER_KEYS.issue(TRANSCEIVER), Drop.BAD_TOKEN),  # wrong key
        (KEYS.issue(TRANSCEIVER)[:-3], Drop.BAD_TOKEN),  # truncated
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
    router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER)), CLIENT)
    other = ("10.0.0.6", 3479)
    assert router.route_upstream(binding_request(KEYS.issue(other)), CLIENT).transceiver == other
    assert router.route_upstream(RTP, CLIENT).transceiver == other


def test_forged_binding_request_on_a_known_flow_is_dropped():
    router = make_router()
    router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER)), CLIENT)
    assert router.route_upstream(binding_request(OTHER_KEYS.issue(TRANSCEIVER)), CLIENT) is None
    assert router.route_upstream(RTP, CLIENT).transceiver == TRANSCEIVER


def test_downstream_from_allowed_transceiver_learns_the_flow():
    router = make_router()
    datagram = relay_header.encode(*CLIENT) + RTP
    assert router.route_downstream(datagram, TRANSCEIVER) == (CLIENT, 8)
    assert router.counters.learned_from_downstream == 1
    assert router.route_upstream(RTP, CLIENT).transceiver == TRANSCEIVER


def test_downstream_from_elsewhere_is_not_allowed():
    router = make_router()
    datagram = relay_header.encode(*CLIENT) + RTP
    assert router.route_downstream(datagram, ("192.0.2.1", 3479)) is None
    assert router.counters.drops[Drop.NOT_ALLOWED] == 1
    assert len(router.flows) == 0


def test_dual_stack_public_socket_sees_ipv4_clients_as_mapped():
    router = make_router(public=socket.AF_INET6)
    mapped = ("::ffff:198.51.100.7", 50000, 0, 0)
    route = router.route_upstream(binding_request(KEYS.issue(TRANSCEIVER)), mapped)
    assert route.header == relay_header.encode(*CLIENT)  # an IPv4 client on the wire
    assert router.route_downstream(route.header + RTP, TRANSCEIVER) == (mapped, 8)


def test_ipv6_transceiver_needs_an_ipv6_internal_socket():
    ufrag = KEYS.issue(("fd00::5", 3479))
    assert make_router().route_upstream(binding_request(ufrag), CLIENT) is None
    v6 = make_router(internal=socket.AF_INET6)
    assert v6.route_upstream(binding_request(ufrag), CLIENT).transceiver == ("fd00::5", 3479, 0, 0)


def test_ipv6_client_on_ipv4_public_socket_is_unreachable():
    router = make_router()
    datagram = relay_header.encode("2001:db8::1", 5000) + RTP
    assert router.route_downstream(datagram, TRANSCEIVER) is None
    assert router.counters.drops[Drop.UNREACHABLE] == 1


clients = st.tuples(st.ip_addresses(v=4).map(str), st.integers(1, 65535))


@given(data=st.binary(max_size=300), client=clients)
def test_any_bytes_from_an_unknown_client_are_dropped(data, client):
    router = make_router()
    assert router.route_upstream(data, client) is None
    assert len(router.flows) == 0
    assert sum(router.counters.drops) == 1


@given(data=st.binary(max_size=300), source=clients)
def test_any_bytes_from_outside_the_allow_list_are_dropped(data, source):
    router = make_router()
    if router.allow.permits(source[0]):
        return
    assert router.route_downstream(data, source) is None
    assert len(router.flows) == 0


@given(data=st.binary(max_size=64))
def test_any_bytes_from_a_transceiver_go_only_where_a_valid_header_says(data):
    router = make_router()
    delivery = router.route_downstream(data, TRANSCEIVER)
    if delivery is None:
        assert len(router.flows) == 0
        return
    client, offset = delivery
    _, host, port, header_size = relay_header.decode(data)
    assert client == (host, port) and offset == header_size
