"""A WebRTC caller for the bed: aiortc calls from inside vw-client, driven by JSON lines.

Run inside the client host (the fault tests and the fleet benchmark start it through
:class:`tests.cluster.testbed.fleet.CallerProcess`)::

    ip netns exec vw-client .venv/bin/python -m tests.cluster.testbed.call_client \\
        --gateway http://10.77.0.1:8080

Each call is a real aiortc peer connection (ICE, DTLS, SRTP) whose offer is posted to the gateway
on the VIP. It sends a steady tone of its own frequency (``400 + 50 * id`` Hz, pre-encoded Opus,
paced every 20 ms), and records the arrival time and payload of every RTP packet that comes back
(captured after SRTP, before aiortc's jitter buffer, which is bypassed: nobody plays the audio, so
it is not decoded unless asked for). With the echo agent, what comes back is the call's own tone,
so "which audio came back" is a frequency the test can check.

One command per line on stdin, one reply per line on stdout (``{"ok": true, ...}`` or
``{"ok": false, "error": ...}``); times are ``time.monotonic()``, the same clock as the test's:

``{"op": "start", "count": N, "url": ..., "concurrency": 4}``
    place N calls; per call: id, HTTP status, answer ufrag, setup times, local port.
``{"op": "gaps", "since": t0, "until": t1, "calls": [ids], "excused": [[a, b], ...]}``
    per call: the longest interval without a received RTP packet in [t0, t1] (the window's
    edges count as packets, so a call that received nothing has a gap of the whole window),
    when it started, how many packets arrived, and the first arrival after t0. ``gap_ms`` counts
    only the time in which this caller's loop and the ``excused`` intervals (the impairment
    hop's stalls) were not frozen (``stalls.py``); ``raw_gap_ms`` is the interval as it was.
``{"op": "audio", "since": t0, "calls": [ids]}``
    per call: the dominant frequency of the audio received since t0 (decoded with PyAV).
``{"op": "status", "calls": [ids]}``
    per call: connection state, packets received, local and on-the-wire source port.
``{"op": "rebind", "call": id}``
    move the call to a new source port on the wire, as a NAT rebinding does (nftables in this
    namespace rewrites the port both ways; the old port is dead from then on).
``{"op": "hangup", "calls": [ids]}`` / ``{"op": "close", "calls": [ids]}``
    DELETE the call at the gateway and close it, or only close it.
``{"op": "quit"}``
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import fractions
import json
import logging
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.cluster.testbed.stalls import StallLog, merged, uncovered

log = logging.getLogger("call_client")

RATE = 48_000
FRAME = 960  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
BASE_HZ, STEP_HZ = 400, 50
NFT_TABLE = "vw_rebind"
TRUST_ENV = False  # never send bed traffic to a proxy named in the environment


def tone_hz(call_id: int) -> int:
    """The frequency call ``call_id`` sends: distinct per call, a whole number of Hz."""
    return BASE_HZ + STEP_HZ * (call_id % 40)


_TONES: dict[int, list[bytes]] = {}


def tone_packets(hz: int) -> list[bytes]:
    """One second of a ``hz`` tone as 50 Opus packets that loop seamlessly (whole periods)."""
    if hz not in _TONES:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = RATE
        codec.format = "s16"
        codec.layout = "mono"
        codec.bit_rate = 32_000
        codec.time_base = TIME_BASE
        n = np.arange(2 * RATE)
        pcm = (8000 * np.sin(2 * np.pi * hz * n / RATE)).astype(np.int16)
        packets: list[bytes] = []
        for i in range(100):
            frame = av.AudioFrame.from_ndarray(
                pcm[i * FRAME : (i + 1) * FRAME].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = RATE
            frame.pts = i * FRAME
            frame.time_base = TIME_BASE
            packets += [bytes(p) for p in codec.encode(frame)]
        _TONES[hz] = packets[50:100]  # the second second: the encoder has settled
    return _TONES[hz]


class ToneTrack(MediaStreamTrack):
    """Pre-encoded Opus packets every 20 ms in real time (aiortc packs them, no encoding)."""

    kind = "audio"

    def __init__(self, hz: int) -> None:
        super().__init__()
        self.packets = tone_packets(hz)
        self._start: float | None = None
        self._index = 0

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._index * FRAME / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        packet = av.Packet(self.packets[self._index % len(self.packets)])
        packet.pts = self._index * FRAME
        packet.time_base = TIME_BASE
        self._index += 1
        return packet


@dataclass
class Call:
    id: int
    url: str
    pc: RTCPeerConnection
    hz: int
    status: int = 0
    error: Any = None
    location: str = ""
    ufrag: str = ""
    t_offer: float = 0.0
    t_post: float = 0.0
    t_answer: float = 0.0
    states: list[tuple[float, str]] = field(default_factory=list)
    ice_states: list[tuple[float, str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    local_port: int | None = None
    wire_port: int | None = None
    closed: bool = False

    def state_time(self, state: str) -> float | None:
        return next((t for t, s in self.states if s == state), None)

    def summary(self) -> dict[str, Any]:
        connected = self.state_time("connected")
        ice_done = next((t for t, s in self.ice_states if s == "completed"), None)
        return {
            "id": self.id,
            "status": self.status,
            "error": self.error,
            "location": self.location,
            "ufrag": self.ufrag,
            "hz": self.hz,
            "state": self.pc.connectionState,
            "local_port": self.local_port,
            "wire_port": self.wire_port,
            "t_post": self.t_post,
            "offer_ms": _ms(self.t_post - self.t_offer) if self.t_offer else None,
            "answer_ms": _ms(self.t_answer - self.t_post) if self.t_answer else None,
            "ice_ms": _ms(ice_done - self.t_post) if ice_done else None,
            "setup_ms": _ms(connected - self.t_post) if connected else None,
            "packets": len(self.arrivals),
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


class Caller:
    def __init__(self, gateway: str) -> None:
        self.gateway = gateway.rstrip("/")
        self.calls: dict[int, Call] = {}
        self.next_id = 0
        self.http: aiohttp.ClientSession | None = None
        self.rebound: dict[int, int] = {}  # aiortc's port → port on the wire
        self.reserved: dict[int, socket.socket] = {}  # wire ports held so nothing else takes them
        self.stalls = StallLog()
        self._watch: asyncio.Task | None = None

    async def open(self) -> None:
        self.http = aiohttp.ClientSession(trust_env=TRUST_ENV)
        self._watch = asyncio.create_task(self._watch_loop())

    async def _watch_loop(self, tick: float = 0.01) -> None:
        """Log when this event loop ran late: packets that arrived meanwhile waited in the
        socket, and their arrival times (taken when processed) would show a gap."""
        while True:
            due = time.monotonic() + tick
            await asyncio.sleep(tick)
            self.stalls.late(due, time.monotonic())

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for call in self.calls.values():
            if not call.closed:
                call.closed = True
                await call.pc.close()
        if self.http is not None:
            await self.http.close()
        if self.rebound:
            self.rebound.clear()
            _nft(_ruleset({}))

    # ----- commands -----

    async def op_start(self, count: int, url: str | None = None, concurrency: int = 4) -> dict:
        gate = asyncio.Semaphore(max(1, concurrency))
        ids = [self._new_id() for _ in range(count)]

        async def one(call_id: int) -> dict:
            async with gate:
                return await self._place(call_id, (url or self.gateway).rstrip("/"))

        results = await asyncio.gather(*(one(i) for i in ids))
        return {"calls": results}

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    async def _place(self, call_id: int, url: str, timeout: float = 10.0) -> dict:
        assert self.http is not None
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        call = Call(call_id, url, pc, tone_hz(call_id))
        self.calls[call_id] = call

        @pc.on("connectionstatechange")
        def _state() -> None:
            call.states.append((time.monotonic(), pc.connectionState))
            if pc.connectionState in ("connected", "failed", "closed"):
                call.connected.set()

        @pc.on("iceconnectionstatechange")
        def _ice() -> None:
            call.ice_states.append((time.monotonic(), pc.iceConnectionState))

        pc.addTrack(ToneTrack(call.hz))
        call.t_offer = time.monotonic()
        await pc.setLocalDescription(await pc.createOffer())
        call.t_post = time.monotonic()
        try:
            async with self.http.post(
                url + "/v1/realtime/calls",
                data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                call.status = response.status
                body = await response.text()
                call.location = response.headers.get("Location", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            call.error = repr(exc)
            await self._close(call)
            return call.summary()
        call.t_answer = time.monotonic()
        if call.status != 201:
            try:
                call.error = json.loads(body)
            except ValueError:
                call.error = body
            await self._close(call)
            return call.summary()
        call.ufrag = _ufrag(body)
        self._capture(call)
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        try:
            await asyncio.wait_for(call.connected.wait(), timeout)
        except TimeoutError:
            call.error = f"not connected after {timeout} s ({pc.connectionState})"
        if pc.connectionState == "connected":
            call.local_port = call.wire_port = _local_port(pc)
        return call.summary()

    def _capture(self, call: Call) -> None:
        """Record every RTP packet the server sends, and hand none to aiortc's jitter buffer
        and decoder (nobody plays it; decoding 20 calls would cost the client a core)."""
        receiver = call.pc.getTransceivers()[0].receiver
        arrivals, payloads = call.arrivals, call.payloads

        async def capture(packet: Any, arrival_time_ms: int) -> None:
            arrivals.append(time.monotonic())
            payloads.append(packet.payload)

        receiver._handle_rtp_packet = capture

    def _select(self, ids: list[int] | None) -> list[Call]:
        if ids is None:
            return [c for c in self.calls.values() if not c.closed and c.status == 201]
        return [self.calls[i] for i in ids]

    async def op_gaps(
        self,
        since: float,
        until: float | None = None,
        calls: list[int] | None = None,
        excused: list[list[float]] | None = None,
    ) -> dict:
        end = time.monotonic() if until is None else until
        frozen = merged([*self.stalls.between(since, end), *(excused or [])])
        out = []
        for call in self._select(calls):
            arrivals = call.arrivals
            lo = bisect.bisect_right(arrivals, since)
            hi = bisect.bisect_right(arrivals, end)
            points = [since, *arrivals[lo:hi], end]
            pairs = list(zip(points, points[1:], strict=False))
            widths = [uncovered(a, b, frozen) for a, b in pairs]
            longest = max(range(len(widths)), key=widths.__getitem__)
            start, stop = pairs[longest]
            out.append(
                {
                    "id": call.id,
                    "gap_ms": _ms(widths[longest]),
                    "raw_gap_ms": _ms(max(b - a for a, b in pairs)),
                    "gap_start": start,
                    "gap_end": stop,
                    "packets": hi - lo,
                    "first_after": arrivals[lo] if lo < len(arrivals) else None,
                    "state": call.pc.connectionState,
                }
            )
        return {"calls": out, "stalls": frozen}

    async def op_audio(self, since: float, calls: list[int] | None = None) -> dict:
        out = []
        for call in self._select(calls):
            lo = bisect.bisect_right(call.arrivals, since)
            payloads = call.payloads[lo:][-30:]
            out.append(
                {
                    "id": call.id,
                    "hz": call.hz,
                    "heard_hz": dominant_hz(payloads[5:]) if len(payloads) > 10 else None,
                    "packets": len(call.arrivals) - lo,
                }
            )
        return {"calls": out}

    async def op_status(self, calls: list[int] | None = None) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "calls": [c.summary() for c in self._select(calls)],
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        }

    async def op_rebind(self, call: int) -> dict:
        target = self.calls[call]
        if target.local_port is None:
            raise ValueError(f"call {call} never connected: it has no port to move")
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind(("0.0.0.0", 0))
        new_port = holder.getsockname()[1]
        old_port = target.wire_port
        self.rebound[target.local_port] = new_port
        _nft(_ruleset(self.rebound))
        stale = self.reserved.pop(target.local_port, None)
        if stale is not None:
            stale.close()
        self.reserved[target.local_port] = holder
        target.wire_port = new_port
        return {"id": call, "local_port": target.local_port, "old": old_port, "new": new_port}

    async def op_hangup(self, calls: list[int] | None = None) -> dict:
        assert self.http is not None
        chosen = self._select(calls)

        async def one(call: Call) -> dict:
            status: int | str = 0
            try:
                async with self.http.delete(
                    call.url + call.location, timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = repr(exc)
            await self._close(call)
            return {"id": call.id, "status": status}

        return {"calls": list(await asyncio.gather(*(one(c) for c in chosen)))}

    async def op_close(self, calls: list[int] | None = None) -> dict:
        chosen = self._select(calls)
        for call in chosen:
            await self._close(call)
        return {"calls": [c.id for c in chosen]}

    async def _close(self, call: Call) -> None:
        if not call.closed:
            call.closed = True
            await call.pc.close()


def _ufrag(answer: str) -> str:
    for line in answer.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:") :].strip()
    return ""


def _local_port(pc: RTCPeerConnection) -> int | None:
    """The UDP port aiortc sends this call's media from (its nominated pair's socket)."""
    sender = pc.getTransceivers()[0].sender
    connection = sender.transport.transport._connection  # aioice.Connection
    for pair in connection._nominated.values():
        return pair.protocol.transport.get_extra_info("sockname")[1]
    return None


def dominant_hz(payloads: list[bytes]) -> float | None:
    """The strongest frequency in the decoded audio (PyAV's libopus, not voicewire's)."""
    if not payloads:
        return None
    from tests.e2e.aiortc_client import decode_opus

    pcm = np.concatenate(decode_opus(payloads))
    if not np.any(pcm):
        return 0.0
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return round(float(np.argmax(spectrum)) * RATE / len(pcm), 1)


def _ruleset(rebound: dict[int, int]) -> str:
    """nftables: each rebound call's packets leave from its new port, replies to the new port
    reach aiortc's socket, and replies to the old port are dropped (the old mapping is gone)."""
    out, inbound = [], []
    for local, wire in sorted(rebound.items()):
        out.append(f"udp sport {local} notrack udp sport set {wire} accept")
        inbound.append(f"udp dport {local} drop")
    for local, wire in sorted(rebound.items()):
        inbound.append(f"udp dport {wire} notrack udp dport set {local} accept")
    lines = [
        f"table ip {NFT_TABLE} {{}}",
        f"delete table ip {NFT_TABLE}",
        f"table ip {NFT_TABLE} {{",
        "  chain out {",
        "    type filter hook output priority raw; policy accept;",
        *(f"    {rule}" for rule in out),
        "  }",
        "  chain in {",
        "    type filter hook prerouting priority raw; policy accept;",
        *(f"    {rule}" for rule in inbound),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _nft(script: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nft failed: {done.stderr.strip()}")


async def serve(caller: Caller) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _reply({"ok": True, "ready": True})
    while True:
        line = await reader.readline()
        if not line:
            return
        try:
            command = json.loads(line)
            op = command.pop("op")
            if op == "quit":
                _reply({"ok": True})
                return
            handler = getattr(caller, f"op_{op}", None)
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            result = await handler(**command)
            _reply({"ok": True, **result})
        except Exception as exc:  # noqa: BLE001 (reported to the test, which decides)
            log.exception("command failed")
            _reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    caller = Caller(args.gateway)
    await caller.open()
    for call_id in range(40):  # encode every tone before the first call, not during one
        tone_packets(tone_hz(call_id))
    try:
        await serve(caller)
    finally:
        await caller.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", default="http://10.77.0.1:8080")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
