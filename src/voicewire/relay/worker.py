"""One relay worker: a single-threaded epoll loop over a public and an internal UDP socket.

Why not asyncio's datagram transport: on this machine class the stock transport reads into a
256 KiB buffer that glibc maps and unmaps for every packet, capping a core near 15–40k
packets/s. Why not ``recvfrom_into``/``sendto`` either: a system call per datagram each way,
and an address string built for each, cost the relay about half of a C forwarder's rate. So
each readiness event is one ``recvmmsg`` of up to BATCH datagrams and one ``sendmmsg`` of the
ones forwarded (``mmsg``), into preallocated slots. Upstream datagrams land *behind* a headroom
so the relay header is written in front of them in place, and every route is looked up by the
sender's raw socket address (``router``): no copy, no address string, no per-datagram system
call. The benchmark in ``benchmarks/relay_bench.py`` measures this loop against a C forwarder.

A worker is started by the supervisor with its sockets and stats board as inherited file
descriptors and its configuration as JSON on stdin (secrets never appear in argv). With
``--redis`` it also runs a flow lookup thread, whose eventfd joins the epoll set
(``flow_recovery``); without it, nothing of Redis is imported.
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
from voicewire.relay.mmsg import MSG_TRUNC, Batch
from voicewire.relay.router import Router, from_sockaddr
from voicewire.relay.stats_board import StatsBoard
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

log = logging.getLogger("voicewire.relay.worker")

BATCH = 64  # datagrams per recvmmsg, so neither direction starves the other
PUBLISH_INTERVAL = 0.25  # seconds between counter snapshots to the supervisor
# The longest client datagram forwarded; a longer one arrives cut (MSG_TRUNC) and is dropped as
# malformed. WebRTC keeps datagrams within the path MTU without IP fragmentation (libwebrtc and
# this transceiver send DTLS and SCTP in at most 1200 bytes; a 1500-byte Ethernet frame carries at
# most 1472 bytes of UDP), so 2048 leaves a third to spare while a batch stays 130 KiB per
# direction. 64 KiB slots would reserve 4 MiB per direction for datagrams WebRTC never sends.
MAX_DATAGRAM = 2048
_HEADROOM = relay_header.MAX_SIZE
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Worker:
    def __init__(self, public: socket.socket, internal: socket.socket, router: Router) -> None:
        self.public = public
        self.internal = internal
        self.router = router
        self.stopping = False
        self._up = Batch(BATCH, MAX_DATAGRAM, _HEADROOM, public.family, internal.family)
        self._down = Batch(BATCH, _HEADROOM + MAX_DATAGRAM, 0, internal.family, public.family)
        self._sizes = [0] * BATCH  # payload bytes of each datagram queued for sending
        public.setblocking(False)
        internal.setblocking(False)

    def pump_upstream(self) -> None:
        """Forward what the public socket holds (up to BATCH datagrams) to the transceivers.

        A media datagram from a client whose flow is in the flow table's newest generation is
        routed inline: that is the lookup ``FlowTable.get`` makes first and the first-byte test
        ``Router.route_upstream`` makes (RFC 7983), without two calls and a slice per datagram.
        Everything else goes through the router. ``flows.newest`` is read once per call: the
        table only rotates in ``serve``, between calls.
        """
        batch = self._up
        try:
            received = batch.receive(self.public.fileno())
        except OSError:
            return
        view, queue, sizes = batch.view, batch.queue, self._sizes
        route_upstream = self.router.route_upstream
        recent = self.router.flows.newest
        queued = truncated = 0
        for offset, (flags, size), (client,) in batch.received(received):
            if flags & MSG_TRUNC:
                truncated += 1
                continue
            route = recent.get(client)
            if route is None or not size or view[offset] <= 3:
                route = route_upstream(view[offset : offset + size], client)
                if route is None:
                    continue
            header = route.header
            start = offset - len(header)
            view[start:offset] = header
            queue(queued, start, size + len(header), route.transceiver)
            sizes[queued] = size
            queued += 1
        packets, octets = self._tally(queued, batch.send(self.internal.fileno(), queued), truncated)
        counters = self.router.counters
        counters.upstream_packets += packets
        counters.upstream_bytes += octets

    def pump_downstream(self) -> None:
        """Deliver what the internal socket holds (up to BATCH datagrams) to the clients."""
        batch = self._down
        try:
            received = batch.receive(self.internal.fileno())
        except OSError:
            return
        view, queue, sizes = batch.view, batch.queue, self._sizes
        route_downstream = self.router.route_downstream
        queued = truncated = 0
        for offset, (flags, size), (transceiver,) in batch.received(received):
            if flags & MSG_TRUNC:
                truncated += 1
                continue
            delivery = route_downstream(view[offset : offset + size], transceiver)
            if delivery is None:
                continue
            client, header_size = delivery
            queue(queued, offset + header_size, size - header_size, client)
            sizes[queued] = size - header_size
            queued += 1
        packets, octets = self._tally(queued, batch.send(self.public.fileno(), queued), truncated)
        counters = self.router.counters
        counters.downstream_packets += packets
        counters.downstream_bytes += octets

    def forward_recovered(self) -> None:
        """Forward what clients sent while their flows were looked up, now that the answers
        installed them. Rare (after a restart), so a plain sendto each."""
        assert self.router.recovery is not None
        counters = self.router.counters
        for route, held in self.router.recovery.answered():
            transceiver = from_sockaddr(route.transceiver)
            for datagram in held:
                try:
                    self.internal.sendto(route.header + datagram, transceiver)
                except OSError:
                    counters.drops[Drop.SEND_FAILED] += 1
                else:
                    counters.upstream_packets += 1
                    counters.upstream_bytes += len(datagram)

    def _tally(self, queued: int, refused: list[int], truncated: int) -> tuple[int, int]:
        """Count one pump's drops; return the packets and payload bytes the kernel took."""
        octets = sum(self._sizes[:queued])
        if refused or truncated:
            drops = self.router.counters.drops
            drops[Drop.SEND_FAILED] += len(refused)
            drops[Drop.MALFORMED] += truncated
            octets -= sum(self._sizes[k] for k in refused)
        return queued - len(refused), octets

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
        answers_fd = -1 if router.recovery is None else router.recovery.fd
        if router.recovery is not None:
            poller.register(answers_fd, select.EPOLLIN)
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
                    elif fd == answers_fd:
                        self.forward_recovered()
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
    lookups = None
    if config["redis"] is not None:  # only then: its thread imports redis-py
        from voicewire.relay.flow_recovery import FlowRecovery, RedisLookups

        lookups = RedisLookups(config["redis"], config["cluster_id"])
        router.recovery = FlowRecovery(router, lookups)
    worker = Worker(public, internal, router)

    def stop(signum: int, frame: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("worker started", extra={"slot": slot, "pid": os.getpid()})
    worker.serve(lambda: board.publish(slot, router.counters))
    if lookups is not None:
        lookups.close()
    log.info("worker stopped", extra={"slot": slot})


if __name__ == "__main__":
    main()
