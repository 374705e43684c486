"""Binding the relay's sockets: one public port shared by every worker, one internal port each.

Workers share the public port with SO_REUSEPORT, so the kernel keeps each client's datagrams on
one worker (it hashes the 4-tuple over the group in binding order, and the supervisor binds the
group once and keeps it across worker restarts: a respawned worker inherits the same place).
SO_REUSEPORT would also let a second relay silently join the group, so a probe bind without it
runs first: if anyone holds the port, the relay refuses to start instead of splitting traffic.
"""

from __future__ import annotations

import socket


class BindError(Exception):
    """A socket could not be bound; the message names the address and the reason."""


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _udp(host: str, buffer_size: int) -> socket.socket:
    sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # also serve IPv4 clients
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
    return sock


def _bind(sock: socket.socket, address: tuple[str, int], role: str) -> None:
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        host, port = address
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise BindError(f"cannot bind {role} UDP {shown}: {exc.strerror or exc}") from None


def bind_public(address: tuple[str, int], workers: int, buffer_size: int) -> list[socket.socket]:
    host, port = address
    probe = _udp(host, buffer_size)
    _bind(probe, address, "public")
    port = probe.getsockname()[1]
    probe.close()
    group = []
    try:
        for _ in range(workers):
            sock = _udp(host, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            _bind(sock, (host, port), "public")
            group.append(sock)
    except BindError:
        for sock in group:
            sock.close()
        raise
    return group


def bind_internal(address: tuple[str, int], workers: int, buffer_size: int) -> list[socket.socket]:
    """Worker i listens on PORT + i (or an ephemeral port each when PORT is 0)."""
    host, port = address
    bound: list[socket.socket] = []
    try:
        for index in range(workers):
            sock = _udp(host, buffer_size)
            _bind(sock, (host, port + index if port else 0), "internal")
            bound.append(sock)
    except BindError:
        for sock in bound:
            sock.close()
        raise
    return bound
