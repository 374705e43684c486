"""The impairment hop: a userspace delay/jitter/loss line between two TUN devices in vw-impair.

Why userspace and why TUN: this kernel has no ``netem`` qdisc, and a userspace UDP proxy would
rewrite the client's address (the relay and the load balancer's hash would see the proxy, and the
client would have to be told a different server address than the VIP its SDP answer names).
Instead, policy routing in vw-impair sends every UDP packet arriving from the client into
``tun-up`` and every UDP packet arriving from the load balancer into ``tun-down``. This program
reads whole IP packets from each TUN device, holds each one for its delay on a heap, drops a
random share, and writes the survivors back into the same device, from which the kernel forwards
them on as if they had just arrived. Addresses and ports are untouched end to end.

Delay is per direction (``delay_ms`` each way, so a 40 ms RTT is 20 + 20), jitter is uniform in
``±jitter_ms``, loss is an independent Bernoulli draw per packet. Unless ``reorder`` is set, a
packet never leaves before an earlier packet of the same flow (5-tuple), as on a real path where
jitter comes from queues, not from overtaking; packets of different flows may pass each other.

Run inside the namespace (the bed does this)::

    python -m tests.cluster.testbed.impair --config impair.json --stats impair-stats.json

SIGHUP re-reads the config (a test can change the path mid-call), SIGTERM ends the program. The
stats file is rewritten about once a second (by a thread, so a slow disk never holds packets) and
at exit; it lists the intervals in which the hop released packets late (``stalls.py``), so a gap
that the hop itself caused is not blamed on the system under test.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import os
import random
import selectors
import signal
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from tests.cluster.testbed.stalls import StallLog

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
_READ_BURST = 64  # packets read per wake-up per device before looking at the heap again
_FLOW_PRUNE_AT = 4096


@dataclass
class Direction:
    """How one direction of the path misbehaves."""

    delay_ms: float = 20.0
    jitter_ms: float = 5.0
    loss: float = 0.01
    reorder: bool = False

    def validate(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must be >= 0")
        if self.jitter_ms > self.delay_ms:
            raise ValueError("jitter_ms larger than delay_ms would need negative delays")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss is a probability in 0..1")


@dataclass
class Impairment:
    """Both directions: ``up`` is client → VIP, ``down`` is VIP → client."""

    up: Direction = field(default_factory=Direction)
    down: Direction = field(default_factory=Direction)
    seed: int | None = None

    @classmethod
    def symmetric(
        cls,
        rtt_ms: float = 40.0,
        jitter_ms: float = 5.0,
        loss: float = 0.01,
        reorder: bool = False,
        seed: int | None = None,
    ) -> Impairment:
        """The same misbehaviour both ways, the delay split evenly so the RTT is ``rtt_ms``."""
        each = Direction(rtt_ms / 2, jitter_ms, loss, reorder)
        return cls(up=each, down=Direction(**asdict(each)), seed=seed)

    @classmethod
    def clean(cls) -> Impairment:
        """No delay, jitter or loss: a plain router hop."""
        return cls.symmetric(rtt_ms=0.0, jitter_ms=0.0, loss=0.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Impairment:
        raw = json.loads(text)
        impairment = cls(
            up=Direction(**raw.get("up", {})),
            down=Direction(**raw.get("down", {})),
            seed=raw.get("seed"),
        )
        impairment.up.validate()
        impairment.down.validate()
        return impairment


def open_tun(name: str) -> int:
    """Attach to the existing TUN device ``name``; whole IP packets, no extra header."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def flow_key(packet: bytes) -> bytes:
    """The 5-tuple bytes of an IPv4/IPv6 UDP or TCP packet (enough to keep a flow in order)."""
    if not packet:
        return b""
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        return packet[9:10] + packet[12:20] + packet[ihl : ihl + 4]
    if version == 6 and len(packet) >= 40:
        return packet[6:7] + packet[8:40] + packet[40:44]
    return b""


class Line:
    """One direction: a TUN device, its rules, and the packets it is holding back."""

    def __init__(self, name: str, fd: int, rules: Direction) -> None:
        self.name = name
        self.fd = fd
        self.rules = rules
        self.passed = 0
        self.dropped = 0
        self.write_errors = 0
        self.last_release: dict[bytes, float] = {}

    def release_time(self, packet: bytes, now: float, rng: random.Random) -> float | None:
        """When to send ``packet`` on, or None to drop it."""
        rules = self.rules
        if rules.loss and rng.random() < rules.loss:
            self.dropped += 1
            return None
        delay = rules.delay_ms
        if rules.jitter_ms:
            delay += rng.uniform(-rules.jitter_ms, rules.jitter_ms)
        release = now + delay / 1000.0
        if not rules.reorder:
            key = flow_key(packet)
            release = max(release, self.last_release.get(key, 0.0))
            self.last_release[key] = release
            if len(self.last_release) > _FLOW_PRUNE_AT:
                self.last_release = {k: t for k, t in self.last_release.items() if t > now}
        return release

    def stats(self) -> dict[str, int]:
        return {"passed": self.passed, "dropped": self.dropped, "write_errors": self.write_errors}


class Impairer:
    """The event loop: read what is ready, release what is due, sleep until the next deadline."""

    def __init__(self, up: Line, down: Line, impairment: Impairment, stats_path: str | None):
        self.lines = (up, down)
        self.stats_path = stats_path
        self.rng = random.Random(impairment.seed)
        self.heap: list[tuple[float, int, Line, bytes]] = []
        self.seq = 0
        self.running = True
        self.stalls = StallLog()
        # select(2) takes microseconds; epoll and poll round timeouts up to whole milliseconds,
        # which made every packet up to 1 ms late (+1.7 ms on a 40 ms RTT).
        self.selector = selectors.SelectSelector()
        for line in self.lines:
            self.selector.register(line.fd, selectors.EVENT_READ, line)
        # Signals write a byte here, so SIGTERM/SIGHUP wake the select at once.
        self.wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        signal.set_wakeup_fd(wakeup_w)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, None)

    def configure(self, impairment: Impairment) -> None:
        """New rules apply to packets read from now on; held packets keep their release time."""
        self.lines[0].rules = impairment.up
        self.lines[1].rules = impairment.down
        if impairment.seed is not None:
            self.rng.seed(impairment.seed)

    def run(self) -> None:
        writer = threading.Thread(target=self._write_stats_every_second, daemon=True)
        writer.start()
        while self.running:
            now = time.monotonic()
            self._release(now)
            timeout = min(self.heap[0][0] - now, 1.0) if self.heap else 1.0
            for key, _ in self.selector.select(max(timeout, 0.0)):
                if key.data is None:
                    _drain(self.wakeup_r)
                else:
                    self._read(key.data)
        self.write_stats()

    def _write_stats_every_second(self) -> None:
        while self.running:
            self.write_stats()
            time.sleep(1.0)

    def _read(self, line: Line) -> None:
        for _ in range(_READ_BURST):
            try:
                packet = os.read(line.fd, MAX_PACKET)
            except BlockingIOError:
                return
            now = time.monotonic()
            release = line.release_time(packet, now, self.rng)
            if release is None:
                continue
            if release <= now and not self.heap:
                self._send(line, packet)
            else:
                self.seq += 1
                heapq.heappush(self.heap, (release, self.seq, line, packet))

    def _release(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            due, _, line, packet = heapq.heappop(heap)
            self.stalls.late(due, now)
            self._send(line, packet)

    @staticmethod
    def _send(line: Line, packet: bytes) -> None:
        try:
            os.write(line.fd, packet)
            line.passed += 1
        except OSError:
            line.write_errors += 1

    def write_stats(self) -> None:
        if self.stats_path is None:
            return
        data = {line.name: line.stats() for line in self.lines}
        data["held"] = len(self.heap)
        data["pid"] = os.getpid()
        data["stalls"] = list(self.stalls.intervals)
        tmp = f"{self.stats_path}.{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.stats_path)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="impair", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON Impairment; re-read on SIGHUP")
    parser.add_argument("--stats", help="where to write counters (JSON)")
    parser.add_argument("--up", default="tun-up", help="TUN device for client → VIP")
    parser.add_argument("--down", default="tun-down", help="TUN device for VIP → client")
    args = parser.parse_args(argv)

    def load() -> Impairment:
        with open(args.config, encoding="utf-8") as handle:
            return Impairment.from_json(handle.read())

    impairment = load()
    up = Line("up", open_tun(args.up), impairment.up)
    down = Line("down", open_tun(args.down), impairment.down)
    impairer = Impairer(up, down, impairment, args.stats)

    def reload(*_: object) -> None:
        try:
            impairer.configure(load())
        except (OSError, ValueError, TypeError) as exc:
            print(f"impair: keeping the old config: {exc}", file=sys.stderr, flush=True)

    def stop(*_: object) -> None:
        impairer.running = False

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    impairer.write_stats()  # the bed waits for this file: it means both devices are attached
    impairer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
