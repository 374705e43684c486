"""A userspace NAT between a test client and the relay: it can move to a new port or go dark.

The client is told (through the answer's candidate) that the server is at this NAT's address.
Datagrams from the client leave through an upstream socket, so the relay sees the NAT's port as
the client's address; ``rebind`` swaps that socket for a new one (a NAT rebinding), ``blackhole``
drops everything (the client vanished without a goodbye).
"""

from __future__ import annotations

import asyncio


class UdpNat(asyncio.DatagramProtocol):
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: tuple | None = None
        self.dark = False
        self._front: asyncio.DatagramTransport | None = None
        self._upstream: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls, server: tuple[str, int]) -> UdpNat:
        nat = cls(server)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: nat, local_addr=("127.0.0.1", 0))
        await nat.rebind()
        return nat

    @property
    def address(self) -> tuple[str, int]:
        assert self._front is not None
        return self._front.get_extra_info("sockname")[:2]

    @property
    def upstream_address(self) -> tuple[str, int]:
        assert self._upstream is not None
        return self._upstream.get_extra_info("sockname")[:2]

    async def rebind(self) -> None:
        """Send from a new source port from now on; the old one is closed."""
        old = self._upstream
        loop = asyncio.get_running_loop()
        self._upstream, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self), local_addr=("127.0.0.1", 0)
        )
        if old is not None:
            old.close()

    def blackhole(self) -> None:
        self.dark = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._front = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.client = addr
        if not self.dark and self._upstream is not None:
            self._upstream.sendto(data, self.server)

    def from_server(self, data: bytes) -> None:
        if not self.dark and self.client is not None and self._front is not None:
            self._front.sendto(data, self.client)

    def close(self) -> None:
        for transport in (self._front, self._upstream):
            if transport is not None:
                transport.close()


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, nat: UdpNat) -> None:
        self.nat = nat

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.nat.from_server(data)
