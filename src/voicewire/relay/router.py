"""The relay's decisions, apart from its sockets: where does this datagram go, if anywhere?

DESIGN §4, upstream (public port, from client C):
1. C has a flow → its transceiver. For media this is the whole hot path.
2. A STUN binding request → read the server ufrag, verify the routing token, (re)install C's flow.
   Checks on a known flow whose ufrag is the one already verified skip the MAC.
3. Anything else → with ``--redis``, ask who owns C (``flow_recovery``: the answer comes later,
   and installs C's flow through ``adopt``); else drop and count.

Downstream (internal socket, from transceiver T): only from allow-listed networks; the relay
header names C; the flow C → T is (re)learned, so a restarted relay recovers a live session
from the first downstream packet instead of waiting for the next consent check.

The router never answers a client and never names a destination that neither a valid token nor
an allow-listed source gave it: a transceiver named by a token or by a flow record in Redis is
used only inside the allow-list.

Addresses are socket address bytes: ``struct sockaddr_in`` or ``sockaddr_in6`` exactly as
recvmmsg(2) writes them and sendmmsg(2) reads them (see ``mmsg``), for the family of the socket
concerned; an IPv6 socket sees IPv4 peers as IPv4-mapped. Flow keys are therefore what the kernel
gave, with no address string built per datagram, and routes go back to the kernel unchanged. The
functions below convert between these bytes, relay headers and (host, port).
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, NamedTuple

from voicewire.relay.allow_list import AllowList
from voicewire.relay.counters import Drop, RelayCounters
from voicewire.relay.flow_table import FlowTable
from voicewire.wire import relay_header, stun_username
from voicewire.wire.routing_token import RoutingKeys, TokenError

if TYPE_CHECKING:
    from voicewire.relay.flow_recovery import FlowRecovery

SockAddr = bytes  # struct sockaddr_in (16 bytes) or struct sockaddr_in6 (28 bytes)

# sa_family is in host byte order, port and address in network order (as in a relay header).
_AF_INET = socket.AF_INET.to_bytes(2, sys.byteorder)
_AF_INET6 = socket.AF_INET6.to_bytes(2, sys.byteorder)
_SIN_ZERO = bytes(8)
_FLOWINFO = _SCOPE_ID = bytes(4)
_V4_MAPPED = bytes(10) + b"\xff\xff"  # RFC 4291 §2.5.5.2
_HEADER_V4 = bytes((relay_header.VERSION, 4))
_HEADER_V6 = bytes((relay_header.VERSION, 6))
_MAX_TRANSCEIVERS = 4096


def _sockaddr_in(port: bytes | memoryview, address: bytes | memoryview) -> SockAddr:
    return _AF_INET + port + address + _SIN_ZERO


def _sockaddr_in6(port: bytes | memoryview, address: bytes | memoryview) -> SockAddr:
    return _AF_INET6 + port + _FLOWINFO + address + _SCOPE_ID


def to_sockaddr(host: str, port: int, v6: bool) -> SockAddr | None:
    """(host, port) as an IPv6 (``v6``) or IPv4 socket addresses it, or None if it cannot.

    An IPv6 socket reaches IPv4 hosts as IPv4-mapped addresses; an IPv4 socket reaches no IPv6.
    """
    packed_port = port.to_bytes(2, "big")
    if ":" in host:
        return _sockaddr_in6(packed_port, socket.inet_pton(socket.AF_INET6, host)) if v6 else None
    address = socket.inet_pton(socket.AF_INET, host)
    if v6:
        return _sockaddr_in6(packed_port, _V4_MAPPED + address)
    return _sockaddr_in(packed_port, address)


def from_sockaddr(address: SockAddr) -> tuple[str, int]:
    """(host, port) of a socket address; IPv4-mapped hosts stay in their ``::ffff:`` form."""
    port = int.from_bytes(address[2:4], "big")
    if len(address) == 16:
        return socket.inet_ntop(socket.AF_INET, address[4:8]), port
    return socket.inet_ntop(socket.AF_INET6, address[8:24]), port


def header_of(client: SockAddr) -> bytes:
    """The relay header naming the client at this socket address (DESIGN §3).

    Both layouts hold the port and then the address in network order, as the header does, so
    this is slicing; an IPv4-mapped client is an IPv4 client on the wire.
    """
    if len(client) == 16:
        return _HEADER_V4 + client[2:8]
    port, address = client[2:4], client[8:24]
    if address[:12] == _V4_MAPPED:
        return _HEADER_V4 + port + address[12:]
    return _HEADER_V6 + port + address


def client_of(datagram: bytes | memoryview, v6: bool) -> tuple[SockAddr | None, int]:
    """Read the relay header in front of a downstream datagram, accepting exactly what
    ``relay_header.decode`` accepts: the client's address for an IPv6 (``v6``) or IPv4 socket,
    or None when that socket cannot reach it, and the payload offset. Raises HeaderError."""
    size = len(datagram)
    if size < relay_header.SIZE_V4 or datagram[0] != relay_header.VERSION:
        raise relay_header.HeaderError("not a relay header")
    family = datagram[1]
    if family == 4:
        if v6:
            return _sockaddr_in6(datagram[2:4], _V4_MAPPED + datagram[4:8]), relay_header.SIZE_V4
        return _sockaddr_in(datagram[2:4], datagram[4:8]), relay_header.SIZE_V4
    if family == 6 and size >= relay_header.SIZE_V6:
        if v6:
            return _sockaddr_in6(datagram[2:4], datagram[4:20]), relay_header.SIZE_V6
        return None, relay_header.SIZE_V6
    raise relay_header.HeaderError("unknown address family or truncated header")


class Route(NamedTuple):
    """Where a client's datagrams go, with its relay header ready to prepend."""

    transceiver: SockAddr
    header: bytes
    ufrag: bytes | None  # the verified server ufrag, or None when learned from downstream


class Router:
    def __init__(
        self,
        keys: RoutingKeys,
        allow: AllowList,
        idle_timeout: float,
        public_family: int,
        internal_family: int,
        counters: RelayCounters | None = None,
    ) -> None:
        self.keys = keys
        self.allow = allow
        self.flows: FlowTable[Route] = FlowTable(idle_timeout)
        self.counters = counters if counters is not None else RelayCounters()
        self._public_v6 = public_family == socket.AF_INET6
        self._internal_v6 = internal_family == socket.AF_INET6
        self._transceivers: set[SockAddr] = set()  # internal peers found in the allow-list
        self.recovery: FlowRecovery | None = None
        """Asks Redis about clients without a flow (``--redis``); None: they are dropped."""

    def route_upstream(self, datagram: bytes | memoryview, client: SockAddr) -> Route | None:
        """The route for a datagram from a client, or None (dropped and counted)."""
        route = self.flows.get(client)
        if route is not None and datagram and datagram[0] > 3:  # RFC 7983: not STUN
            return route
        return self._admit(datagram, client, route)

    def _admit(self, datagram: bytes | memoryview, client: SockAddr, route: Route | None):
        drops = self.counters.drops
        if not datagram:
            drops[Drop.MALFORMED] += 1
            return None
        if datagram[0] > 3:  # only reached for clients without a flow
            if self.recovery is None:
                drops[Drop.UNKNOWN_FLOW] += 1
            else:
                self.recovery.unknown(datagram, client)  # held or dropped; counted there
            return None
        try:
            ufrag = stun_username.server_ufrag(datagram)
        except stun_username.NotBindingRequest:
            if route is not None:  # other STUN on a vetted flow: the transceiver judges it
                return route
            drops[Drop.NOT_STUN] += 1
            return None
        except stun_username.MalformedStun:
            drops[Drop.MALFORMED] += 1
            return None
        if route is not None and route.ufrag == ufrag:
            return route
        try:
            token = self.keys.verify(ufrag)
        except TokenError:
            drops[Drop.BAD_TOKEN] += 1
            return None
        route = self._install(client, token.transceiver, ufrag)
        if isinstance(route, Drop):
            drops[route] += 1
            return None
        self.counters.learned_from_stun += 1
        return route

    def adopt(self, client: SockAddr, transceiver: tuple[str, int]) -> Route | Drop:
        """Install C → the transceiver a flow record in Redis named, on the terms a token's
        address gets; or say why not. The caller counts (it may have datagrams held)."""
        route = self._install(client, transceiver, None)
        if not isinstance(route, Drop):
            self.counters.learned_from_redis += 1
        return route

    def _install(
        self, client: SockAddr, transceiver: tuple[str, int], ufrag: bytes | None
    ) -> Route | Drop:
        host, port = transceiver
        if not self.allow.permits(host):
            return Drop.NOT_ALLOWED
        address = to_sockaddr(host, port, self._internal_v6)
        if address is None:
            return Drop.UNREACHABLE
        route = Route(address, header_of(client), ufrag)
        self.flows.install(client, route)
        return route

    def route_downstream(
        self, datagram: bytes | memoryview, transceiver: SockAddr
    ) -> tuple[SockAddr, int] | None:
        """For a datagram from the internal side: (client, payload offset), or None (dropped)."""
        drops = self.counters.drops
        if transceiver not in self._transceivers and not self._allowed(transceiver):
            drops[Drop.NOT_ALLOWED] += 1
            return None
        try:
            client, offset = client_of(datagram, self._public_v6)
        except relay_header.HeaderError:
            drops[Drop.MALFORMED] += 1
            return None
        if client is None:
            drops[Drop.UNREACHABLE] += 1
            return None
        route = self.flows.get(client)
        if route is None or route.transceiver != transceiver:
            self.flows.install(client, Route(transceiver, bytes(datagram[:offset]), None))
            self.counters.learned_from_downstream += 1
        return client, offset

    def tick(self) -> None:
        """Age the flow table one step (call every ``flows.rotation_period`` seconds)."""
        self.counters.expired += self.flows.rotate()

    def _allowed(self, peer: SockAddr) -> bool:
        """Is this internal peer in the allow-list? Only peers found in it are remembered
        (transceivers are few), so strangers cannot grow the set."""
        if not self.allow.permits(from_sockaddr(peer)[0]):
            return False
        if len(self._transceivers) < _MAX_TRANSCEIVERS:
            self._transceivers.add(peer)
        return True
