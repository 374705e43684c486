"""Flow record keys and addresses: how a client address and its owning transceiver are written
in Redis (the schema is in ``flows.py``).

Apart from ``flows.py`` because a relay worker reads the records: it needs these few functions
on its hot loop's side, and must not import redis-py (a tenth of a second) before it serves.
"""

from __future__ import annotations

import ipaddress


def flow_key(cluster_id: int, client: tuple[str, int]) -> str:
    return f"voicewire:flow:{cluster_id}:{address_text(client)}"


def address_text(address: tuple[str, int]) -> str:
    """``host:port``, with an IPv6 host in brackets: how addresses are written in Redis."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int] | None:
    """The (host, port) an ``address_text`` wrote, or None for anything else: a record is read
    from a shared store, so it is checked like bytes from the network. The host comes back in
    its canonical form, IPv4-mapped IPv6 as IPv4 (as the relay header writes it)."""
    if not text.isascii():
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 0 < int(port) <= 0xFFFF:
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if "%" in host:  # a scope id names an interface of the writer's host, not of ours
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if not bracketed:
            return None
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    elif bracketed:
        return None
    return str(address), int(port)
