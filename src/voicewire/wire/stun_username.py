"""Read the server ufrag out of a STUN binding request, and nothing else.

The relay routes a new flow on one field of one packet type (DESIGN §4): it needs the part of
USERNAME before the colon (RFC 8445 §7.2.2), which is the routing token. The transceiver uses the
same field to find the session a check from a new address belongs to. Neither checks
MESSAGE-INTEGRITY here (the relay holds no ICE passwords; the session's ICE engine authenticates
every check), so this parser is deliberately minimal, allocation-light, and strict about framing.
"""

from __future__ import annotations

_MAGIC_COOKIE = b"\x21\x12\xa4\x42"  # RFC 8489 §5
_BINDING_REQUEST = 0x0001  # RFC 8489 §18.2, class request
_USERNAME = 0x0006  # RFC 8489 §14.3
_HEADER_SIZE = 20
_MAX_USERNAME = 513  # RFC 8489 §14.3: fewer than 513 bytes


class NotBindingRequest(ValueError):
    """The datagram is not a STUN binding request (another STUN message, or not STUN at all)."""


class MalformedStun(ValueError):
    """A binding request whose framing is broken or that carries no usable USERNAME."""


def server_ufrag(datagram: bytes | bytearray | memoryview) -> bytes:
    """Return the server ufrag of a binding request, or raise one of this module's errors."""
    size = len(datagram)
    if (
        size < _HEADER_SIZE
        or ((datagram[0] << 8) | datagram[1]) != _BINDING_REQUEST
        or datagram[4:8] != _MAGIC_COOKIE
    ):
        raise NotBindingRequest
    length = (datagram[2] << 8) | datagram[3]
    if length % 4 or _HEADER_SIZE + length != size:  # RFC 8489 §5: padded to 4, exact length
        raise MalformedStun("bad message length")
    offset = _HEADER_SIZE
    while offset + 4 <= size:
        kind = (datagram[offset] << 8) | datagram[offset + 1]
        value_length = (datagram[offset + 2] << 8) | datagram[offset + 3]
        start = offset + 4
        end = start + value_length
        if end > size:
            raise MalformedStun("attribute overruns the message")
        if kind == _USERNAME:
            if value_length > _MAX_USERNAME:
                raise MalformedStun("USERNAME too long")
            username = bytes(datagram[start:end])
            ufrag, colon, _ = username.partition(b":")
            if not colon or not ufrag:
                raise MalformedStun("USERNAME is not server:client")
            return ufrag
        offset = end + (-value_length % 4)  # RFC 8489 §14: values padded to 4 bytes
    raise MalformedStun("no USERNAME")
