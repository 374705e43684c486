"""The relay header: how relay and transceiver tell each other which client a datagram belongs to.

One internal socket on each side serves every session, so each datagram between them is prefixed
with the client's address (DESIGN §3). Upstream (relay → transceiver) it names the client that
sent the datagram; downstream (transceiver → relay) the client to send the payload to. The
original datagram follows untouched::

    version(1)=1  family(1)=4|6  client port(2, big-endian)  client IP(4 or 16)

8 bytes of overhead for IPv4 clients, 20 for IPv6. Clients that reached a dual-stack socket as
IPv4-mapped IPv6 addresses are IPv4 clients on the wire: the header says what the client is,
not how a socket saw it.
"""

from __future__ import annotations

import socket

VERSION = 1
SIZE_V4 = 8
SIZE_V6 = 20
MAX_SIZE = SIZE_V6
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


class HeaderError(ValueError):
    """The bytes do not start with a well-formed relay header."""


def encode(host: str, port: int) -> bytes:
    """The header naming client ``(host, port)``; ``host`` is an IPv4 or IPv6 literal."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is outside 0..65535")
    if ":" in host:
        packed = socket.inet_pton(socket.AF_INET6, host)
        if packed[:12] == _V4_MAPPED_PREFIX:
            return bytes((VERSION, 4)) + port.to_bytes(2, "big") + packed[12:]
        return bytes((VERSION, 6)) + port.to_bytes(2, "big") + packed
    return bytes((VERSION, 4)) + port.to_bytes(2, "big") + socket.inet_pton(socket.AF_INET, host)


def decode(datagram: bytes | bytearray | memoryview) -> tuple[int, str, int, int]:
    """Read a header: return (family 4 or 6, client host, client port, offset of the payload)."""
    if len(datagram) < SIZE_V4 or datagram[0] != VERSION:
        raise HeaderError("not a relay header")
    family = datagram[1]
    port = (datagram[2] << 8) | datagram[3]
    if family == 4:
        return 4, socket.inet_ntop(socket.AF_INET, datagram[4:8]), port, SIZE_V4
    if family == 6 and len(datagram) >= SIZE_V6:
        return 6, socket.inet_ntop(socket.AF_INET6, datagram[4:20]), port, SIZE_V6
    raise HeaderError("unknown address family or truncated header")
