"""The routing token: a server ICE ufrag that names, and vouches for, the transceiver of a session.

Every STUN binding request a client sends carries ``USERNAME = <server ufrag>:<client ufrag>``
(RFC 8445 §7.2.2). Because the transceiver mints its ufrag as a signed token, a relay learns where
a new flow belongs from the first packet, with no lookup and no shared store (DESIGN §2). The MAC
is the safety: without a valid one the relay forwards nothing, so nobody can aim it at an
arbitrary internal address.

Layout (all integers big-endian), then standard base64 without padding, whose alphabet
``A-Z a-z 0-9 + /`` is exactly the ICE character set (RFC 8839 §5.4)::

    version(1) key_id(1) cluster_id(2) address(4 or 16) port(2) nonce(8) mac(10)

The address family follows from the length: 28 bytes (38 characters) for IPv4, 40 bytes
(54 characters) for IPv6. ``docs/protocol.md`` has the byte layout and test vectors.
"""

from __future__ import annotations

import binascii
import hmac
import os
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

VERSION = 1
NONCE_SIZE = 8
MAC_SIZE = 10
MIN_SECRET_SIZE = 16
_PREFIX = struct.Struct("!BBH")  # version, key id, cluster id
_SIZE_V4 = _PREFIX.size + 4 + 2 + NONCE_SIZE + MAC_SIZE
_SIZE_V6 = _PREFIX.size + 16 + 2 + NONCE_SIZE + MAC_SIZE
_CHARS_V4 = 38
_CHARS_V6 = 54


class TokenError(ValueError):
    """The string is not a token this key ring issued: malformed, unknown key, or bad MAC."""


@dataclass(frozen=True, slots=True)
class RoutingToken:
    """What a verified token says: who signed it, which cluster and transceiver own the session."""

    key_id: int
    cluster_id: int
    transceiver: tuple[str, int]
    nonce: bytes


class RoutingKeys:
    """A key ring of routing secrets, by key id.

    Several secrets live at once so they can rotate without dropping sessions: relays learn a new
    key first (it verifies), then transceivers start signing with it, then the old one goes.
    The first key given is the one that signs.
    """

    def __init__(self, secrets: Iterable[tuple[int, bytes]]) -> None:
        ring: dict[int, bytes] = {}
        for key_id, secret in secrets:
            if not 0 <= key_id <= 255:
                raise ValueError(f"key id {key_id} is outside 0..255")
            if len(secret) < MIN_SECRET_SIZE:
                raise ValueError(
                    f"key {key_id}: a routing secret needs at least {MIN_SECRET_SIZE} bytes"
                )
            if key_id in ring:
                raise ValueError(f"key id {key_id} is given twice")
            ring[key_id] = secret
        if not ring:
            raise ValueError("no routing secrets given")
        self._secrets: Mapping[int, bytes] = ring
        self.signing_key_id = next(iter(ring))

    @classmethod
    def parse(cls, spec: str) -> RoutingKeys:
        """Read ``kid:hex`` entries separated by commas or newlines; ``#`` starts a comment."""
        entries = []
        for line in spec.splitlines():
            for item in line.split("#", 1)[0].split(","):
                item = item.strip()
                if not item:
                    continue
                kid, sep, hexkey = item.partition(":")
                if not sep:
                    raise ValueError(f"routing secret entry {item[:8]!r}… is not kid:hex")
                try:
                    entries.append((int(kid), bytes.fromhex(hexkey.strip())))
                except ValueError:
                    raise ValueError(
                        f"routing secret {kid.strip()!r}: key id must be an integer "
                        "and the secret hex digits"
                    ) from None
        return cls(entries)

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(self._secrets)

    def secret(self, key_id: int) -> bytes:
        return self._secrets[key_id]

    def issue(
        self, transceiver: tuple[str, int], cluster_id: int = 0, nonce: bytes | None = None
    ) -> str:
        """Mint a ufrag naming ``transceiver`` (host, port); the nonce makes each one unique."""
        if nonce is None:
            nonce = os.urandom(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        if not 0 <= cluster_id <= 0xFFFF:
            raise ValueError("cluster id is outside 0..65535")
        host, port = transceiver
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"transceiver port {port} is outside 1..65535")
        key_id = self.signing_key_id
        body = (
            _PREFIX.pack(VERSION, key_id, cluster_id)
            + _pack_ip(host)
            + port.to_bytes(2, "big")
            + nonce
        )
        mac = hmac.digest(self._secrets[key_id], body, "sha256")[:MAC_SIZE]
        return binascii.b2a_base64(body + mac, newline=False).rstrip(b"=").decode("ascii")

    def verify(self, ufrag: str | bytes) -> RoutingToken:
        """Check a ufrag and say what it names; raise TokenError for anything we did not issue.

        Only canonical encodings pass (re-encoding must give the same characters), so one token
        has exactly one spelling. The MAC comparison is constant-time.
        """
        raw = ufrag.encode("ascii", "replace") if isinstance(ufrag, str) else bytes(ufrag)
        if len(raw) == _CHARS_V4:
            size = _SIZE_V4
        elif len(raw) == _CHARS_V6:
            size = _SIZE_V6
        else:
            raise TokenError("wrong length")
        try:
            data = binascii.a2b_base64(raw + b"==", strict_mode=True)
        except binascii.Error:
            raise TokenError("not base64") from None
        if len(data) != size or binascii.b2a_base64(data, newline=False)[: len(raw)] != raw:
            raise TokenError("not canonical base64")
        version, key_id, cluster_id = _PREFIX.unpack_from(data)
        if version != VERSION:
            raise TokenError(f"unknown version {version}")
        secret = self._secrets.get(key_id)
        if secret is None:
            raise TokenError(f"unknown key id {key_id}")
        body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
        if not hmac.compare_digest(hmac.digest(secret, body, "sha256")[:MAC_SIZE], mac):
            raise TokenError("bad MAC")
        address_end = len(body) - NONCE_SIZE - 2
        family = socket.AF_INET if size == _SIZE_V4 else socket.AF_INET6
        host = socket.inet_ntop(family, body[_PREFIX.size : address_end])
        port = int.from_bytes(body[address_end : address_end + 2], "big")
        return RoutingToken(key_id, cluster_id, (host, port), body[-NONCE_SIZE:])


def _pack_ip(host: str) -> bytes:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, host)
        except OSError:
            continue
    raise ValueError(f"{host!r} is not an IPv4 or IPv6 address")
