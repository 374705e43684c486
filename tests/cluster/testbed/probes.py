"""Measuring the bed's path with the stand-in relays of ``udp_echo``: who answers, RTT, loss.

Kept apart from the tests so phase-2 tests can check the path they run on (is the hop still
adding 40 ms?) with the same code that proved it.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import struct
import time
from dataclasses import dataclass

from tests.cluster.testbed import topology, udp_echo

VIP_ADDRESS = (topology.VIP, topology.RELAY_PORT)
_PROBE = struct.Struct("!HId")  # flow, sequence number, send time


def ask(
    sock: socket.socket,
    payload: bytes,
    dest: tuple[str, int] = VIP_ADDRESS,
    attempts: int = 6,
    wait: float = 0.4,
) -> tuple[str, tuple[str, int], bytes, tuple[str, int]]:
    """Send until an echo answers (the hop loses packets on purpose).

    Returns (echo name, client address the echo saw, echoed payload, address the reply came from).
    """
    sock.settimeout(wait)
    for _ in range(attempts):
        sock.sendto(payload, dest)
        try:
            while True:
                data, source = sock.recvfrom(65535)
                name, seen, echoed = udp_echo.parse_reply(data)
                if echoed == payload:
                    return name, seen, echoed, source
        except TimeoutError:
            continue
    raise TimeoutError(f"no echo answered {attempts} tries to {dest}")


def ask_all(
    socks: list[socket.socket],
    payload: bytes,
    dest: tuple[str, int] = VIP_ADDRESS,
    attempts: int = 6,
    wait: float = 0.4,
) -> list[tuple[str, tuple[str, int], tuple[str, int]]]:
    """:func:`ask` on many sockets at once (one RTT, not one per socket).

    Returns, per socket in order, (echo name, client address it saw, reply source address).
    """
    answers: dict[int, tuple[str, tuple[str, int], tuple[str, int]]] = {}
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        try:
            for _ in range(attempts):
                for index, sock in enumerate(socks):
                    if index not in answers:
                        sock.sendto(payload, dest)
                deadline = time.monotonic() + wait
                while len(answers) < len(socks) and time.monotonic() < deadline:
                    for key, _ in selector.select(deadline - time.monotonic()):
                        data, source = key.fileobj.recvfrom(65535)  # type: ignore[union-attr]
                        name, seen, echoed = udp_echo.parse_reply(data)
                        if echoed == payload:
                            answers[key.data] = (name, seen, source)
                if len(answers) == len(socks):
                    return [answers[index] for index in range(len(socks))]
        finally:
            for sock in socks:
                sock.setblocking(True)
    raise TimeoutError(f"{len(socks) - len(answers)} sockets got no echo in {attempts} tries")


def which_relay(sock: socket.socket, dest: tuple[str, int] = VIP_ADDRESS) -> str:
    """The stand-in relay that the load balancer sends this socket's flow to right now."""
    return ask(sock, b"who %f" % time.monotonic(), dest)[0]


@dataclass
class PathReport:
    """What a burst of probes saw: RTTs of the answered ones, and where the others were lost."""

    sent: int
    reached_echo: int
    answered: int
    rtts_ms: list[float]

    @property
    def loss_up(self) -> float:
        return 1.0 - self.reached_echo / self.sent

    @property
    def loss_down(self) -> float:
        return 1.0 - self.answered / self.reached_echo if self.reached_echo else 1.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.rtts_ms)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.rtts_ms)

    def summary(self) -> str:
        return (
            f"sent {self.sent}, reached echo {self.reached_echo}, answered {self.answered}; "
            f"loss up {self.loss_up:.2%} down {self.loss_down:.2%}; RTT ms "
            f"min {min(self.rtts_ms):.1f} p10 {self.percentile(10):.1f} p50 {self.p50:.1f} "
            f"p90 {self.percentile(90):.1f} max {max(self.rtts_ms):.1f}"
        )


def measure(
    socks: list[socket.socket],
    per_flow: int,
    interval: float = 0.020,
    dest: tuple[str, int] = VIP_ADDRESS,
) -> PathReport:
    """Send ``per_flow`` probes on each socket every ``interval`` (audio-like pacing, the flows
    staggered evenly), collect the echoes, then ask each echo how many of a flow's probes it got.
    """
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
    rtts: list[float] = []
    seen: set[tuple[int, int]] = set()
    start = time.monotonic() + 0.01
    schedule = sorted(
        (start + seq * interval + flow * interval / len(socks), flow, seq)
        for flow in range(len(socks))
        for seq in range(per_flow)
    )
    position = 0
    drain_until = schedule[-1][0] + 0.3

    def receive(timeout: float) -> None:
        for key, _ in selector.select(max(timeout, 0.0)):
            sock = key.fileobj
            while True:
                try:
                    data = sock.recv(65535)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                _, _, payload = udp_echo.parse_reply(data)
                if len(payload) != _PROBE.size:
                    continue
                flow, seq, sent_at = _PROBE.unpack(payload)
                if (flow, seq) not in seen:
                    seen.add((flow, seq))
                    rtts.append((time.monotonic() - sent_at) * 1000.0)

    while True:
        now = time.monotonic()
        while position < len(schedule) and schedule[position][0] <= now:
            _, flow, seq = schedule[position]
            socks[flow].sendto(_PROBE.pack(flow, seq, time.monotonic()), dest)
            position += 1
        if position >= len(schedule) and now >= drain_until:
            break
        next_send = schedule[position][0] if position < len(schedule) else drain_until
        receive(next_send - time.monotonic())
    selector.close()
    reached = 0
    for sock in socks:
        sock.setblocking(True)
        reached += _echo_count(sock, dest)
    return PathReport(len(schedule), reached, len(seen), rtts)


def _echo_count(sock: socket.socket, dest: tuple[str, int]) -> int:
    sock.settimeout(0.3)
    for _ in range(20):
        sock.sendto(udp_echo.STATS_QUERY, dest)
        try:
            while True:
                _, _, payload = udp_echo.parse_reply(sock.recv(65535))
                if payload.startswith(b"STATS "):
                    return int(payload.split()[1])
        except TimeoutError:
            continue
    raise TimeoutError("the echo never answered STATS?")
