"""A stand-in relay for proving the bed: a UDP echo that says who answered and whom it saw.

Every datagram ``D`` from ``ip:port`` comes back as ``<name>|<ip>:<port>|D``, so a test learns in
one round trip which relay the load balancer chose and that the client's address survived the
path unchanged. ``STATS?`` answers ``<name>|<ip>:<port>|STATS <n>``: how many datagrams arrived
from that address, which splits measured loss into its upstream and downstream halves.

Run in a host (the tests do this)::

    python -m tests.cluster.testbed.udp_echo --name relay1 --port 3478
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections import Counter

STATS_QUERY = b"STATS?"


def parse_reply(data: bytes) -> tuple[str, tuple[str, int], bytes]:
    """Split an echo reply into (server name, client address it saw, echoed payload)."""
    name, seen, payload = data.split(b"|", 2)
    host, port = seen.decode().rsplit(":", 1)
    return name.decode(), (host, int(port)), payload


def serve(name: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("0.0.0.0", port))
    received: Counter[tuple[str, int]] = Counter()
    label = name.encode()
    while True:
        data, addr = sock.recvfrom(65535)
        prefix = label + b"|" + f"{addr[0]}:{addr[1]}".encode() + b"|"
        if data == STATS_QUERY:
            sock.sendto(prefix + b"STATS %d" % received[addr], addr)
            continue
        received[addr] += 1
        sock.sendto(prefix + data, addr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="udp_echo")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=3478)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.name, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
