"""STUN for the ICE-lite engine: aioice's codec behind one error type.

aioice already encodes and decodes STUN (RFC 8489), computes MESSAGE-INTEGRITY (HMAC-SHA1 with
the short-term key) and FINGERPRINT (CRC-32), and is exercised by aiortc against every browser.
This module reuses it rather than re-implementing any of that, and adds only what the ICE-lite
engine needs around it:

- `parse` turns whatever the codec raises on hostile bytes (`ValueError`, `struct.error`) into
  `ParseError`, and rejects the header shapes the codec lets through (a wrong magic cookie, a
  length that is not a multiple of 4), so the receive boundary catches exactly one type.
- `binding_success` and `binding_error` build the only two messages a lite agent ever sends,
  always signed with the session's ice-pwd and fingerprinted.

Importing `aioice` loads its asyncio-based modules too, but nothing here uses them: every function
below is pure bytes in, bytes or a `Message` out.
"""

import struct

from aioice.stun import COOKIE, HEADER_LENGTH, Class, Message, Method, parse_message

from voicewire.rtc.errors import ParseError

__all__ = [
    "Address",
    "Message",
    "binding_error",
    "binding_success",
    "is_binding_request",
    "is_stun",
    "parse",
]

Address = tuple[str, int]
"""A UDP transport address as `(host, port)`, with `host` in `ipaddress`'s canonical text form."""


def is_stun(first_byte: int) -> bool:
    """Whether a datagram starting with `first_byte` is STUN in a demultiplexed flow.

    RFC 7983 §7: STUN is the range 0-3 (the two most significant bits of a STUN message are
    zero, RFC 8489 §5), as distinct from DTLS (20-63) and RTP/RTCP (128-191) on the same port.
    """
    return first_byte < 4


def parse(data: bytes) -> Message:
    """Decode one STUN message, or raise `ParseError`.

    A FINGERPRINT that does not match also raises `ParseError`: its purpose is to tell STUN from
    other protocols on the port (RFC 8489 §14.7), so a mismatch means the bytes are not STUN.
    MESSAGE-INTEGRITY is not checked here; see `Message.check_message_integrity`.
    """
    if (
        len(data) < HEADER_LENGTH
        or not is_stun(data[0])
        or int.from_bytes(data[2:4]) % 4  # RFC 8489 §5: the length is a multiple of 4
        or int.from_bytes(data[4:8]) != COOKIE  # RFC 8489 §5; RFC 8445 §7.3: no RFC 3489 peers
    ):
        raise ParseError("not a STUN message header")
    try:
        return parse_message(data)
    except (ValueError, struct.error) as exc:
        raise ParseError(f"malformed STUN message: {exc}") from exc


def is_binding_request(message: Message) -> bool:
    """Whether `message` is a Binding request: the only STUN message a lite agent answers."""
    return message.message_method == Method.BINDING and message.message_class == Class.REQUEST


def binding_success(request: Message, mapped_address: Address, key: bytes) -> bytes:
    """A Binding success response to `request`, telling the client where it was seen from.

    RFC 8445 §7.3 and RFC 8489 §9.1.3: XOR-MAPPED-ADDRESS is the source address of the request
    (RFC 8489 §14.2), and the response is signed with the same short-term key.
    """
    response = Message(Method.BINDING, Class.RESPONSE, request.transaction_id)
    response.attributes["XOR-MAPPED-ADDRESS"] = mapped_address
    return _signed(response, key)


def binding_error(request: Message, code: int, reason: str, key: bytes) -> bytes:
    """A Binding error response to an authenticated `request` (RFC 8489 §14.8 ERROR-CODE).

    Only authenticated requests get one, so it is signed like a success (RFC 8489 §9.1.3).
    """
    response = Message(Method.BINDING, Class.ERROR, request.transaction_id)
    response.attributes["ERROR-CODE"] = (code, reason)
    return _signed(response, key)


def _signed(response: Message, key: bytes) -> bytes:
    # RFC 8489 §14.5 MESSAGE-INTEGRITY, then §14.7 FINGERPRINT last, which RFC 8445 §7.3 requires.
    response.add_message_integrity(key)
    return bytes(response)
