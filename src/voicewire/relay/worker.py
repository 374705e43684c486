"""One relay worker: a single-threaded epoll loop over a public and an internal UDP socket.

Why not asyncio's datagram transport: on this machine class the stock transport reads into a
256 KiB buffer that glibc maps and unmaps for every packet, capping a core near 15–40k
packets/s. Here each socket is drained with ``recvfrom_into`` into one reused buffer, and
upstream datagrams are received *behind* a reserved headroom so the relay header is written in
front of them in place: no copy, no allocation per packet beyond what the socket calls make.
The benchmark in ``benchmarks/relay_bench.py`` measures this loop against a C forwarder.

A worker is started by the supervisor with its sockets and stats board as inherited file
descriptors and its configuration as JSON on stdin (secrets never appear in argv).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import socket
import sys
import time

from voicewire import logs
from voicewire.relay.allow_list import AllowList
from voicewire.relay.counters import Drop
from voicewire.relay.router import Router
from voicewire.relay.stats_board import StatsBoard
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

log = logging.getLogger("voicewire.relay.worker")

BATCH = 64  # datagrams drained per readiness event, so neither direction starves the other
PUBLISH_INTERVAL = 0.25  # seconds between counter snapshots to the supervisor
_HEADROOM = relay_header.MAX_SIZE
_MAX_DATAGRAM = 65535
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Worker:
    def __init__(self, public: socket.socket, internal: socket.socket, router: Router) -> None:
        self.public = public
        self.internal = internal
        self.router = router
        self.stopping = False
        self._up = bytearray(_HEADROOM + _MAX_DATAGRAM)
        self._down = bytearray(_MAX_DATAGRAM + relay_header.MAX_SIZE)
        public.setblocking(False)
        internal.setblocking(False)

    def pump_upstream(self) -> None:
        """Forward what the public socket holds (up to BATCH datagrams) to the transceivers."""
        buf = self._up
        view = memoryview(buf)
        payload = view[_HEADROOM:]
        recv = self.public.recvfrom_into
        send = self.internal.sendto
        route_upstream = self.router.route_upstream
        counters = self.router.counters
        packets = octets = failed = 0
        for _ in range(BATCH):
            try:
                size, client = recv(payload)
            except BlockingIOError:
                break
            except OSError:
                continue
            route = route_upstream(payload[:size], client)
            if route is None:
                continue
            header = route.header
            start = _HEADROOM - len(header)
            buf[start:_HEADROOM] = header
            try:
                send(view[start : _HEADROOM + size], route.transceiver)
            except OSError:
                failed += 1
                continue
            packets += 1
            octets += size
        counters.upstream_packets += packets
        counters.upstream_bytes += octets
        counters.drops[Drop.SEND_FAILED] += failed

    def pump_downstream(self) -> None:
        """Deliver what the internal socket holds (up to BATCH datagrams) to the clients."""
        view = memoryview(self._down)
        recv = self.internal.recvfrom_into
        send = self.public.sendto
        route_downstream = self.router.route_downstream
        counters = self.router.counters
        packets = octets = failed = 0
        for _ in range(BATCH):
            try:
                size, transceiver = recv(view)
            except BlockingIOError:
                break
            except OSError:
                continue
            delivery = route_downstream(view[:size], transceiver)
            if delivery is None:
                continue
            client, offset = delivery
            try:
                send(view[offset:size], client)
            except OSError:
                failed += 1
                continue
            packets += 1
            octets += size - offset
        counters.downstream_packets += packets
        counters.downstream_bytes += octets
        counters.drops[Drop.SEND_FAILED] += failed

    def serve(self, publish) -> None:
        """Run until ``stopping`` is set (by a signal), ageing flows and publishing counters."""
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        poller = select.epoll()
        public_fd, internal_fd = self.public.fileno(), self.internal.fileno()
        poller.register(public_fd, select.EPOLLIN)
        poller.register(internal_fd, select.EPOLLIN)
        poller.register(wake_read.fileno(), select.EPOLLIN)
        router = self.router
        now = time.monotonic()
        next_rotation = now + router.flows.rotation_period
        next_publish = now
        try:
            while not self.stopping:
                if now >= next_rotation:
                    router.tick()
                    next_rotation += router.flows.rotation_period
                if now >= next_publish:
                    router.counters.flows = len(router.flows)
                    publish()
                    next_publish = now + PUBLISH_INTERVAL
                timeout = min(next_rotation, next_publish) - now
                for fd, _ in poller.poll(max(timeout, 0.0)):
                    if fd == public_fd:
                        self.pump_upstream()
                    elif fd == internal_fd:
                        self.pump_downstream()
                    else:
                        _drain(wake_read)
                now = time.monotonic()
        finally:
            router.counters.flows = 0
            publish()
            signal.set_wakeup_fd(-1)
            poller.close()
            wake_read.close()
            wake_write.close()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when the supervisor dies, even by SIGKILL.

    An orphaned worker would keep the public port and split it with the next relay started.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        sys.exit(1)


def main() -> None:
    """Entry point of a worker process: configuration on stdin, sockets as inherited fds."""
    config = json.loads(sys.stdin.read())
    _die_with_parent(config["parent"])
    logs.configure(config["log_level"])
    slot = config["slot"]
    board = StatsBoard(config["slots"], fd=config["board_fd"])
    counters = board.read(slot)  # a replaced worker continues its slot's counts
    counters.flows = 0
    public = socket.socket(fileno=config["public_fd"])
    internal = socket.socket(fileno=config["internal_fd"])
    router = Router(
        RoutingKeys((kid, bytes.fromhex(key)) for kid, key in config["secrets"]),
        AllowList.parse(config["allow"]),
        config["idle_timeout"],
        public.family,
        internal.family,
        counters,
    )
    worker = Worker(public, internal, router)

    def stop(signum: int, frame: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("worker started", extra={"slot": slot, "pid": os.getpid()})
    worker.serve(lambda: board.publish(slot, router.counters))
    log.info("worker stopped", extra={"slot": slot})


if __name__ == "__main__":
    main()
