"""The relay's decisions, apart from its sockets: where does this datagram go, if anywhere?

DESIGN §4, upstream (public port, from client C):
1. C has a flow → its transceiver. For media this is the whole hot path.
2. A STUN binding request → read the server ufrag, verify the routing token, (re)install C's flow.
   Checks on a known flow whose ufrag is the one already verified skip the MAC.
3. Anything else → drop and count.

Downstream (internal socket, from transceiver T): only from allow-listed networks; the relay
header names C; the flow C → T is (re)learned, so a restarted relay recovers a live session
from the first downstream packet instead of waiting for the next consent check.

The router never answers a client and never names a destination that neither a valid token nor
an allow-listed source gave it. Addresses are kept in the form the sockets use, so that flow keys
equal what ``recvfrom`` returns and routes can be handed to ``sendto`` unchanged.
"""

from __future__ import annotations

import socket
from typing import NamedTuple

from voicewire.relay.allow_list import AllowList
from voicewire.relay.counters import Drop, RelayCounters
from voicewire.relay.flow_table import FlowTable
from voicewire.wire import relay_header, stun_username
from voicewire.wire.routing_token import RoutingKeys, TokenError

Address = tuple  # what recvfrom returns: (host, port) or (host, port, flowinfo, scope_id)


class Route(NamedTuple):
    """Where a client's datagrams go, with its relay header ready to prepend."""

    transceiver: Address
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

    def route_upstream(self, datagram: bytes | memoryview, client: Address) -> Route | None:
        """The route for a datagram from a client, or None (dropped and counted)."""
        route = self.flows.get(client)
        if route is not None and datagram and datagram[0] > 3:  # RFC 7983: not STUN
            return route
        return self._admit(datagram, client, route)

    def _admit(self, datagram: bytes | memoryview, client: Address, route: Route | None):
        drops = self.counters.drops
        if not datagram:
            drops[Drop.MALFORMED] += 1
            return None
        if datagram[0] > 3:  # only reached for clients without a flow
            drops[Drop.UNKNOWN_FLOW] += 1
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
        host, port = token.transceiver
        if not self.allow.permits(host):
            drops[Drop.NOT_ALLOWED] += 1
            return None
        transceiver = self._internal_address(host, port)
        if transceiver is None:
            drops[Drop.UNREACHABLE] += 1
            return None
        route = Route(transceiver, relay_header.encode(client[0], client[1]), ufrag)
        self.flows.install(client, route)
        self.counters.learned_from_stun += 1
        return route

    def route_downstream(
        self, datagram: bytes | memoryview, transceiver: Address
    ) -> tuple[Address, int] | None:
        """For a datagram from the internal side: (client, payload offset), or None (dropped)."""
        drops = self.counters.drops
        if not self.allow.permits(transceiver[0]):
            drops[Drop.NOT_ALLOWED] += 1
            return None
        try:
            family, host, port, offset = relay_header.decode(datagram)
        except relay_header.HeaderError:
            drops[Drop.MALFORMED] += 1
            return None
        if family == 4:
            client = (f"::ffff:{host}", port, 0, 0) if self._public_v6 else (host, port)
        elif self._public_v6:
            client = (host, port, 0, 0)
        else:
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

    def _internal_address(self, host: str, port: int) -> Address | None:
        """A token's transceiver address in the form the internal socket sends to."""
        if ":" not in host:
            return (f"::ffff:{host}", port, 0, 0) if self._internal_v6 else (host, port)
        return (host, port, 0, 0) if self._internal_v6 else None
