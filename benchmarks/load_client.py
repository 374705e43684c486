"""A light WebRTC load client: many echo sessions from one asyncio process, for capacity_bench.

    .venv/bin/python benchmarks/load_client.py --url http://127.0.0.1:8080/ --sessions 50
    .venv/bin/python benchmarks/load_client.py --url URL --control     # JSON lines on stdin/stdout

Each session is what a browser does, minus everything a load generator does not need:

- one UDP socket; a minimal SDP offer (audio opus/48000/2 with rtcp-mux, BUNDLE, ice ufrag and
  pwd, one host candidate, the fingerprint of a `voicewire.rtc.certificate.Certificate`,
  `a=setup:actpass`), POSTed to ``{url}v1/realtime/calls``; the answer read line by line;
- the controlling full-ICE agent of RFC 8445: Binding requests with USERNAME
  ``<server ufrag>:<client ufrag>``, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY
  with the server's pwd and FINGERPRINT, retransmitted until answered, then every ~5 s as
  consent checks (RFC 7675); Binding requests from a full-ICE server (aiortc) are answered;
- `voicewire.rtc.dtls.DtlsEndpoint` in the role the answer implies (``a=setup:active`` there
  makes us the DTLS server), then `voicewire.rtc.srtp.SrtpSession`;
- one pre-encoded 20 ms Opus packet every 20 ms (a few seconds of synthetic speech, encoded
  once and looped), through `voicewire.rtc.rtp.RtpPacketizer`; all sessions are paced from one
  1 ms timer, spread evenly over 20 phases;
- the echoed RTP is unprotected and its sequence numbers counted: received, lost (gaps), and
  the inter-arrival times of consecutive packets (the server's send-interval jitter as seen on
  loopback). The server's RTCP reports about our stream give the loss on the way in, which an
  echo server hides (it conceals a lost packet and still echoes a frame). Nothing is decoded.

Control mode (used by capacity_bench.py): one JSON object per line on stdin, one reply per line
on stdout (logs go to stderr):

    {"cmd": "resize", "total": N, "timeout": 30}   grow (connect) or shrink (hang up) to N
    {"cmd": "measure", "seconds": 10, "lookback": 7}   a measurement window over live sessions
    {"cmd": "quit"}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import secrets
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urljoin

import aiohttp
from aioice import stun

from voicewire.rtc import rtcp
from voicewire.rtc.certificate import Certificate
from voicewire.rtc.dtls import DtlsClosed, DtlsConnected, DtlsEndpoint, DtlsFailed
from voicewire.rtc.errors import RtcError
from voicewire.rtc.opus import FRAME_SAMPLES, SAMPLE_RATE, OpusEncoder
from voicewire.rtc.rtp import RtpPacketizer
from voicewire.rtc.srtp import SrtpSession

FRAME = 0.020  # seconds per packet
PHASES = 20  # the pacer's 1 ms slots: session i sends in slot i mod 20
TICK = FRAME / PHASES
PAYLOAD_TYPE = 111
CHECK_RETRANSMIT = 0.05  # seconds between unanswered connectivity checks
CONSENT_INTERVAL = 5.0  # RFC 7675 §5.1: checks every 4-6 s (randomised below)
CONSENT_RETRANSMIT = 0.5  # seconds between tries of an unanswered consent check
_PRFLX_PRIORITY = (110 << 24) | (65535 << 8) | 255  # RFC 8445 §5.1.2.1, peer-reflexive, comp 1
_HOST_PRIORITY = (126 << 24) | (65535 << 8) | 255
_SEQ = struct.Struct("!H")
_IN_FLIGHT_SPAN = 0.2  # seconds over which the packets in flight are averaged


def log(message: str) -> None:
    print(f"load_client: {message}", file=sys.stderr, flush=True)


# --- the audio every session sends --------------------------------------------------------------


def speech_pcm(seconds: float = 4.0, seed: int = 7) -> bytes:
    """Synthetic voiced speech, PCM16 mono 48 kHz: a glottal pulse train with a wandering pitch
    through three formant resonators, in syllables of ~200 ms with short pauses and some noise
    (fricatives). It keeps Opus in its speech modes (SILK/hybrid), as a real voice does, so the
    server's decoder and encoder do the work they do in a call; silence would be far cheaper."""
    rng = random.Random(seed)
    rate = SAMPLE_RATE
    total = int(seconds * rate)
    out = bytearray()
    # A syllable: (samples, f0 start, f0 end, F1, F2, voiced?)
    syllables = []
    while sum(s[0] for s in syllables) < total:
        length = int(rate * rng.uniform(0.12, 0.30))
        if rng.random() < 0.15:
            syllables.append((int(rate * rng.uniform(0.05, 0.15)), 0, 0, 0, 0, "pause"))
        kind = "voiced" if rng.random() < 0.8 else "fricative"
        f0 = rng.uniform(95, 210)
        syllables.append(
            (
                length,
                f0,
                f0 * rng.uniform(0.8, 1.2),
                rng.uniform(300, 800),
                rng.uniform(900, 2300),
                kind,
            )
        )
    phase = 0.0
    resonators = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    noise_state = 0.0
    for length, f0a, f0b, f1, f2, kind in syllables:
        coefficients = []
        for centre, bandwidth in ((f1, 80.0), (f2, 120.0), (2800.0, 200.0)):
            r = math.exp(-math.pi * bandwidth / rate)
            coefficients.append((2 * r * math.cos(2 * math.pi * centre / rate), -r * r, 1 - r))
        for n in range(length):
            position = n / length
            envelope = math.sin(math.pi * position) ** 0.6 if kind != "pause" else 0.0
            if kind == "voiced":
                f0 = f0a + (f0b - f0a) * position
                phase += f0 / rate
                excitation = 1.0 if phase >= 1.0 else 0.0
                phase -= math.floor(phase)
                excitation += 0.03 * rng.uniform(-1, 1)
            else:
                excitation = 0.25 * rng.uniform(-1, 1)
            value = 0.0
            for index, (a1, a2, gain) in enumerate(coefficients):
                state = resonators[index]
                y = gain * excitation + a1 * state[0] + a2 * state[1]
                state[1], state[0] = state[0], y
                value += y
            if kind == "fricative":  # crude high-pass noise
                noise = rng.uniform(-1, 1)
                value = 0.3 * (noise - noise_state)
                noise_state = noise
            sample = int(9000 * envelope * value)
            out += struct.pack("<h", max(-32768, min(32767, sample)))
            if len(out) >= 2 * total:
                return bytes(out)
    return bytes(out)


def speech_packets(seconds: float = 4.0) -> list[bytes]:
    """The Opus packets every session loops: `speech_pcm` encoded once, 20 ms each, as a browser
    would send them (32 kb/s, high complexity, in-band FEC)."""
    encoder = OpusEncoder(bitrate=32000, complexity=9, fec=True, expected_loss=5)
    pcm = speech_pcm(seconds)
    step = FRAME_SAMPLES * 2
    return [encoder.encode(pcm[i : i + step]) for i in range(0, len(pcm) - step + 1, step)]


# --- SDP ----------------------------------------------------------------------------------------


def make_offer(
    ufrag: str, pwd: str, fingerprint: str, port: int, ssrc: int, cname: str, session_id: int
) -> str:
    lines = [
        "v=0",
        f"o=- {session_id} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS *",
        f"m=audio {port} UDP/TLS/RTP/SAVPF {PAYLOAD_TYPE}",
        "c=IN IP4 127.0.0.1",
        f"a=candidate:1 1 udp {_HOST_PRIORITY} 127.0.0.1 {port} typ host",
        "a=end-of-candidates",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:{fingerprint}",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        f"a=rtpmap:{PAYLOAD_TYPE} opus/48000/2",
        f"a=fmtp:{PAYLOAD_TYPE} minptime=10;useinbandfec=1",
        f"a=ssrc:{ssrc} cname:{cname}",
    ]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Answer:
    ufrag: str
    pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    candidate: tuple[str, int]


class AnswerError(Exception):
    pass


def parse_answer(text: str) -> Answer:
    """The few attributes the client needs, by plain line matching (no SDP library)."""
    ufrag = pwd = setup = None
    fingerprints: list[tuple[str, str]] = []
    candidates: list[tuple[str, int]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("a=ice-ufrag:"):
            ufrag = ufrag or line[12:]
        elif line.startswith("a=ice-pwd:"):
            pwd = pwd or line[10:]
        elif line.startswith("a=fingerprint:"):
            name, _, value = line[14:].partition(" ")
            fingerprints.append((name, value.strip()))
        elif line.startswith("a=setup:"):
            setup = setup or line[8:]
        elif line.startswith("a=candidate:"):
            parts = line[12:].split()
            # foundation component transport priority address port "typ" type
            if len(parts) >= 8 and parts[1] == "1" and parts[2].lower() == "udp":
                if ":" not in parts[4]:
                    candidates.append((parts[4], int(parts[5])))
    if not (ufrag and pwd and fingerprints and setup and candidates):
        raise AnswerError(
            f"answer lacks ufrag, pwd, fingerprint, setup or an IPv4 candidate:\n{text}"
        )
    loopback = [c for c in candidates if c[0] == "127.0.0.1"]
    return Answer(ufrag, pwd, fingerprints, setup, (loopback or candidates)[0])


# --- one session --------------------------------------------------------------------------------


class SessionFailed(Exception):
    pass


@dataclass
class Window:
    """Counters of one session at the start of a measurement window."""

    sent: int
    received: int
    gap_lost: int
    began: float  # perf_counter time
    baseline_after: float  # the earliest RTCP report that may serve as the baseline


class ClientSession(asyncio.DatagramProtocol):
    def __init__(self, client: LoadClient, index: int) -> None:
        self.client = client
        self.index = index
        self.loop = client.loop
        self.ufrag = secrets.token_hex(4)
        self.pwd = secrets.token_hex(12)
        self.ssrc = secrets.randbits(32)
        self.tie_breaker = secrets.randbits(64)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.transport: asyncio.DatagramTransport | None = None
        self.answer: Answer | None = None
        self.location: str | None = None
        self.dtls: DtlsEndpoint | None = None
        self.srtp: SrtpSession | None = None
        self.ice_ok = False
        self.connected = asyncio.Event()
        self.failure: str | None = None
        self.closed = False
        self._check_ids: set[bytes] = set()
        self._check_handle: asyncio.TimerHandle | None = None
        self._dtls_handle: asyncio.TimerHandle | None = None
        self.packetizer = RtpPacketizer(
            self.ssrc,
            PAYLOAD_TYPE,
            initial_sequence=secrets.randbits(16),
            initial_timestamp=secrets.randbits(32),
        )
        self.packet_index = secrets.randbelow(len(client.packets))
        # Counters (since the session connected).
        self.sent = 0
        self.received = 0
        self.highest = -1  # extended highest sequence number of the echo
        self.gap_lost = 0
        self.last_arrival = 0.0
        self.srtp_errors = 0
        self.rtcp_reports: list[tuple[float, int, int]] = []  # (time, lost, extended highest)
        self.started = 0.0
        self.answered = 0.0
        self.setup_seconds: float | None = None
        self.connect_seconds: float | None = None
        self.window: Window | None = None

    # Setup.

    async def open(self, http: aiohttp.ClientSession, url: str) -> None:
        self.started = time.perf_counter()
        offer = make_offer(
            self.ufrag,
            self.pwd,
            self.client.certificate.sdp_fingerprint,
            self.port,
            self.ssrc,
            secrets.token_hex(8),
            secrets.randbits(62),
        )
        async with http.post(
            urljoin(url, "v1/realtime/calls"),
            data=offer,
            headers={"Content-Type": "application/sdp"},
        ) as response:
            body = await response.text()
            if response.status != 201:
                raise SessionFailed(f"POST answered {response.status}: {body[:300]}")
            location = response.headers.get("Location")
        self.location = urljoin(url, location) if location else None
        self.answered = time.perf_counter()
        answer = self.answer = parse_answer(body)
        # a=setup:active means the server sends the ClientHello: we are the DTLS server.
        role = "server" if answer.setup == "active" else "client"
        self.dtls = DtlsEndpoint(role, self.client.certificate, answer.fingerprints)
        if role == "server":
            self.dtls.start(self.loop.time())  # listening before any ClientHello can arrive
        self.sock.connect(answer.candidate)
        await self.loop.create_datagram_endpoint(lambda: self, sock=self.sock)
        self._drain_dtls()
        self._send_check()

    def _send_check(self) -> None:
        """A connectivity check, then again until answered, then every ~5 s (consent)."""
        if self.closed or self.transport is None:
            return
        answer = self.answer
        assert answer is not None
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        message.attributes["USERNAME"] = f"{answer.ufrag}:{self.ufrag}"  # RFC 8445 §7.2.2
        message.attributes["PRIORITY"] = _PRFLX_PRIORITY  # RFC 8445 §7.1.1
        message.attributes["ICE-CONTROLLING"] = self.tie_breaker  # RFC 8445 §7.1.3
        message.attributes["USE-CANDIDATE"] = None  # aggressive, as Chromium: every check
        message.add_message_integrity(answer.pwd.encode())  # adds FINGERPRINT too
        self._check_ids.add(message.transaction_id)
        self.transport.sendto(bytes(message))
        # Until answered: again soon (a consent check lost to a full socket buffer must not
        # cost the session, as a browser's would not); the answer schedules the next one.
        delay = CONSENT_RETRANSMIT if self.ice_ok else CHECK_RETRANSMIT
        self._check_handle = self.loop.call_later(delay, self._send_check)

    def _on_stun(self, data: bytes, addr: tuple) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        answer = self.answer
        assert answer is not None
        if message.message_class == stun.Class.REQUEST:
            # A full-ICE server (aiortc) checks us too: answer like any ICE agent.
            if message.attributes.get("USERNAME") != f"{self.ufrag}:{answer.ufrag}":
                return
            if not message.check_message_integrity(self.pwd.encode()):
                return
            response = stun.Message(
                stun.Method.BINDING, stun.Class.RESPONSE, message.transaction_id
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
            response.add_message_integrity(self.pwd.encode())
            assert self.transport is not None
            self.transport.sendto(bytes(response))
            return
        if message.transaction_id not in self._check_ids:
            return
        self._check_ids.discard(message.transaction_id)
        if message.message_class != stun.Class.RESPONSE:
            self.fail(f"check answered with an error: {message.attributes.get('ERROR-CODE')}")
            return
        if not message.check_message_integrity(answer.pwd.encode()):
            self.fail("check response fails MESSAGE-INTEGRITY")
            return
        self._check_ids.clear()  # older retransmissions no longer matter
        if self._check_handle is not None:
            self._check_handle.cancel()
        self._check_handle = self.loop.call_later(
            CONSENT_INTERVAL * random.uniform(0.8, 1.2), self._send_check
        )
        if not self.ice_ok:
            self.ice_ok = True
            assert self.dtls is not None
            if self.dtls.role == "client":
                self.dtls.start(self.loop.time())
                self._drain_dtls()
            self._maybe_connected()

    def _on_dtls(self, data: bytes) -> None:
        if self.dtls is None:
            return
        try:
            self.dtls.handle_datagram(data, self.loop.time())
        except RtcError:
            return
        self._drain_dtls()

    def _on_dtls_timer(self) -> None:
        self._dtls_handle = None
        if self.dtls is not None and not self.closed:
            self.dtls.handle_timer(self.loop.time())
            self._drain_dtls()

    def _drain_dtls(self) -> None:
        dtls = self.dtls
        assert dtls is not None and self.transport is not None
        for datagram in dtls.datagrams_to_send():
            self.transport.sendto(datagram)
        while (event := dtls.next_event()) is not None:
            if isinstance(event, DtlsConnected):
                self.srtp = SrtpSession(event)
                self._maybe_connected()
            elif isinstance(event, DtlsFailed):
                self.fail(f"DTLS failed: {event.reason.value} {event.detail}")
            elif isinstance(event, DtlsClosed):
                self.fail("the server closed DTLS")
        if self._dtls_handle is not None:
            self._dtls_handle.cancel()
            self._dtls_handle = None
        deadline = dtls.get_timer()
        if deadline is not None and not self.closed:
            self._dtls_handle = self.loop.call_at(deadline, self._on_dtls_timer)

    def _maybe_connected(self) -> None:
        if self.ice_ok and self.srtp is not None and not self.connected.is_set():
            now = time.perf_counter()
            self.setup_seconds = now - self.started
            self.connect_seconds = now - self.answered
            self.connected.set()

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.connected.set()  # wake whoever waits; they check `failure`
        self.client.on_failed(self)

    # Media.

    def send_frame(self) -> None:
        packets = self.client.packets
        payload = packets[self.packet_index]
        self.packet_index = (self.packet_index + 1) % len(packets)
        packet = self.packetizer.packet(payload, FRAME_SAMPLES)
        assert self.srtp is not None and self.transport is not None
        self.transport.sendto(self.srtp.protect_rtp(packet))
        self.sent += 1

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not data or self.closed:
            return
        first = data[0]
        if 127 < first < 192:
            srtp = self.srtp
            if srtp is None:
                return
            if 191 < data[1] < 224:  # RFC 5761 §4: RTCP
                self._on_rtcp(data)
                return
            now = time.perf_counter()
            try:
                packet = srtp.unprotect_rtp(data)
            except RtcError:
                self.srtp_errors += 1
                return
            sequence = _SEQ.unpack_from(packet, 2)[0]
            highest = self.highest
            if highest < 0:
                self.highest = sequence
                self.received += 1
                self.last_arrival = now
                return
            delta = (sequence - highest) & 0xFFFF
            self.received += 1
            if delta == 0 or delta >= 0x8000:
                return  # duplicate or reordered: counted as received, no interval
            self.highest = highest + delta
            if delta == 1:
                if self.client.measuring:
                    self.client.intervals.append(now - self.last_arrival)
            else:
                self.gap_lost += delta - 1
            self.last_arrival = now
        elif first < 4:
            self._on_stun(data, addr)
        elif 19 < first < 64:
            self._on_dtls(data)

    def _on_rtcp(self, data: bytes) -> None:
        assert self.srtp is not None
        try:
            packets = rtcp.parse_rtcp(self.srtp.unprotect_rtcp(data))
        except RtcError:
            self.srtp_errors += 1
            return
        for packet in packets:
            for block in getattr(packet, "reports", ()):
                if block.ssrc == self.ssrc:
                    lost = block.cumulative_lost
                    if lost & 0x800000:  # 24-bit signed (RFC 3550 §6.4.1)
                        lost -= 1 << 24
                    self.rtcp_reports.append((time.perf_counter(), lost, block.highest_sequence))
                    if len(self.rtcp_reports) > 64:
                        del self.rtcp_reports[:32]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        if not self.connected.is_set():
            self.fail(f"socket error: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    # Windows.

    def start_window(self, lookback: float) -> None:
        began = time.perf_counter()
        self.window = Window(self.sent, self.received, self.gap_lost, began, began - lookback)

    def window_counts(self) -> dict[str, int]:
        window = self.window
        assert window is not None
        counts = {
            "sent": self.sent - window.sent,
            "received": self.received - window.received,
            "gap_lost": self.gap_lost - window.gap_lost,
            "rtcp_expected": 0,
            "rtcp_lost": 0,
        }
        # Loss on the way in, from the server's reports on our stream (RFC 3550 §6.4.1): from
        # the last report in the lookback before the window (else the first in it) to the last
        # one in it.
        reports = self.rtcp_reports
        before = [r for r in reports if window.baseline_after <= r[0] <= window.began]
        after = [r for r in reports if r[0] > window.began]
        start = before[-1] if before else (after[0] if after else None)
        end = after[-1] if after else None
        if start is not None and end is not None and end is not start:
            counts["rtcp_expected"] = max(0, end[2] - start[2])
            counts["rtcp_lost"] = end[1] - start[1]
        return counts

    # Teardown.

    def close(self) -> None:
        if self.closed:
            return
        if self.dtls is not None and self.transport is not None:
            with contextlib.suppress(Exception):
                self.dtls.close()
                for datagram in self.dtls.datagrams_to_send():
                    self.transport.sendto(datagram)
        self.closed = True
        for handle in (self._check_handle, self._dtls_handle):
            if handle is not None:
                handle.cancel()
        if self.transport is not None:
            self.transport.close()
        else:
            self.sock.close()


# --- many sessions ------------------------------------------------------------------------------


@dataclass
class LoadClient:
    url: str
    loop: asyncio.AbstractEventLoop
    packets: list[bytes]
    certificate: Certificate = field(
        default_factory=lambda: Certificate.generate(datetime.now(UTC))
    )
    sessions: list[ClientSession] = field(default_factory=list)
    phases: list[list[ClientSession]] = field(default_factory=lambda: [[] for _ in range(PHASES)])
    failed: list[str] = field(default_factory=list)
    measuring: bool = False
    intervals: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    http: aiohttp.ClientSession | None = None
    _counter: int = 0
    _tick: int = 0
    _base: float = 0.0
    _base_clock: float = 0.0  # perf_counter() at _base, for the lateness of each tick
    _pacer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16), timeout=aiohttp.ClientTimeout(total=30)
        )
        self._base = self.loop.time()
        self._base_clock = time.perf_counter()
        self._pacer = self.loop.call_at(self._base + TICK, self._on_tick)

    async def stop(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
        await self.resize(0)
        if self.http is not None:
            await self.http.close()

    def on_failed(self, session: ClientSession) -> None:
        if session in self.sessions:
            self.failed.append(f"session {session.index}: {session.failure}")
            self._drop(session)
            session.close()

    def _drop(self, session: ClientSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        for phase in self.phases:
            if session in phase:
                phase.remove(session)

    async def resize(self, total: int, timeout: float = 30.0, concurrency: int = 8) -> dict:
        """Connect or hang up sessions until `total` are live; setup times and failures."""
        began = time.perf_counter()
        failures_before = len(self.failed)
        setups: list[float] = []
        connects: list[float] = []
        if total < len(self.sessions):
            doomed = self.sessions[total:]
            for session in doomed:
                self._drop(session)
            await asyncio.gather(*(self._hang_up(s) for s in doomed))
        else:
            semaphore = asyncio.Semaphore(concurrency)
            deadline = self.loop.time() + timeout

            async def one() -> None:
                async with semaphore:
                    session = ClientSession(self, self._counter)
                    self._counter += 1
                    self.sessions.append(session)
                    try:
                        await asyncio.wait_for(
                            self._connect(session), max(0.1, deadline - self.loop.time())
                        )
                    except TimeoutError:
                        session.fail("timed out connecting")
                    except (SessionFailed, AnswerError, aiohttp.ClientError, OSError) as exc:
                        session.fail(f"{type(exc).__name__}: {exc}")
                    if session.setup_seconds is not None and session.failure is None:
                        setups.append(session.setup_seconds)
                        connects.append(session.connect_seconds or 0.0)

            await asyncio.gather(*(one() for _ in range(total - len(self.sessions))))
        setups.sort()
        connects.sort()
        return {
            "sessions": len(self.sessions),
            "connected": len(setups),
            "failed": len(self.failed) - failures_before,
            "failures": self.failed[failures_before:][:5],
            "setup_p50_ms": _ms(_quantile(setups, 0.5)),
            "setup_max_ms": _ms(setups[-1] if setups else None),
            "ice_dtls_p50_ms": _ms(_quantile(connects, 0.5)),
            "seconds": round(time.perf_counter() - began, 2),
        }

    async def _connect(self, session: ClientSession) -> None:
        assert self.http is not None
        await session.open(self.http, self.url)
        await session.connected.wait()
        if session.failure is not None:
            raise SessionFailed(session.failure)
        # Join the emptiest phase: the load stays spread evenly over the 20 ms.
        min(self.phases, key=len).append(session)

    async def _hang_up(self, session: ClientSession) -> None:
        if session.location and self.http is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, asyncio.TimeoutError):
                async with self.http.delete(session.location) as response:
                    await response.read()
        session.close()

    def _on_tick(self) -> None:
        """The one pacing timer: send for every slot that is due (catching up if late)."""
        now = self.loop.time()
        while True:
            due = self._base + (self._tick + 1) * TICK
            if due > now + 0.0002:
                break
            if self.measuring:
                self.lateness.append(
                    time.perf_counter() - self._base_clock - (self._tick + 1) * TICK
                )
            self._tick += 1
            for session in self.phases[self._tick % PHASES]:
                if not session.closed:
                    session.send_frame()
        self._pacer = self.loop.call_at(self._base + (self._tick + 1) * TICK, self._on_tick)

    async def measure(self, seconds: float, lookback: float = 0.0) -> dict:
        """One window over the live sessions; RTCP reports from up to `lookback` seconds before
        it may serve as its baseline (they come every 2.5-7.5 s)."""
        live = [s for s in self.sessions if s.connected.is_set() and s.failure is None]
        failures_before = len(self.failed)
        for session in live:
            session.start_window(lookback)
        self.intervals = []
        self.lateness = []
        cpu0 = _process_cpu()
        began = time.perf_counter()
        self.measuring = True
        # Packets in flight (sent, echo not yet back), averaged over the first and the last
        # 0.2 s of the window: their difference is what the server did not echo, without the
        # +-1 packet per session an instant would read, depending on where in its 20 ms it is.
        in_flight_start = await self._mean_in_flight(live)
        await asyncio.sleep(max(0.0, seconds - 2 * _IN_FLIGHT_SPAN))
        in_flight_end = await self._mean_in_flight(live)
        self.measuring = False
        elapsed = time.perf_counter() - began
        cpu = (_process_cpu() - cpu0) / elapsed
        totals: dict[str, int] = {}
        for session in live:
            for key, value in session.window_counts().items():
                totals[key] = totals.get(key, 0) + value
        deviations = sorted(abs(i - FRAME) for i in self.intervals)
        late = sorted(i - FRAME for i in self.intervals)
        lateness = sorted(self.lateness)
        return {
            "sessions": len(live),
            "seconds": round(elapsed, 3),
            **totals,
            "echo_deficit": round(in_flight_end - in_flight_start, 2),
            "srtp_errors": sum(s.srtp_errors for s in live),
            "failed_during": len(self.failed) - failures_before,
            "failures": self.failed[failures_before:][:5],
            "intervals": len(deviations),
            "jitter_p50_ms": _ms(_quantile(deviations, 0.5)),
            "jitter_p99_ms": _ms(_quantile(deviations, 0.99)),
            "jitter_p999_ms": _ms(_quantile(deviations, 0.999)),
            "jitter_max_ms": _ms(deviations[-1] if deviations else None),
            "late_p99_ms": _ms(_quantile(late, 0.99)),
            "early_p1_ms": _ms(_quantile(late, 0.01)),
            "short_share": round(sum(1 for i in late if i < -0.010) / max(1, len(late)), 5),
            "long_share": round(sum(1 for i in late if i > 0.010) / max(1, len(late)), 5),
            "client_send_late_p99_ms": _ms(_quantile(lateness, 0.99)),
            "client_cpu": round(cpu, 3),
        }

    async def _mean_in_flight(self, live: list[ClientSession]) -> float:
        samples = []
        end = time.perf_counter() + _IN_FLIGHT_SPAN
        while True:
            samples.append(sum(s.sent - s.received for s in live))
            if time.perf_counter() >= end:
                return sum(samples) / len(samples)
            await asyncio.sleep(0.007)  # not a divisor of 20 ms: the samples cover every phase


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 3)


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- entry points -------------------------------------------------------------------------------


async def control(url: str) -> None:
    """JSON lines in on stdin, one JSON reply per command on stdout."""
    loop = asyncio.get_running_loop()
    client = LoadClient(url, loop, speech_packets())
    await client.start()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True, "packets": len(client.packets)}), flush=True)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            name = command.get("cmd")
            if name == "resize":
                reply = await client.resize(
                    int(command["total"]), float(command.get("timeout", 30))
                )
            elif name == "measure":
                reply = await client.measure(
                    float(command["seconds"]), float(command.get("lookback", 0.0))
                )
            elif name == "quit":
                break
            else:
                reply = {"error": f"unknown command {name!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        await client.stop()


async def standalone(url: str, sessions: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    client = LoadClient(url, loop, speech_packets())
    await client.start()
    try:
        print(json.dumps(await client.resize(sessions)), flush=True)
        await asyncio.sleep(1.0)
        print(json.dumps(await client.measure(seconds)), flush=True)
    finally:
        await client.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server's base URL, ending in /")
    parser.add_argument("--control", action="store_true", help="JSON-lines control on stdin")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    _raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    url = args.url if args.url.endswith("/") else args.url + "/"
    try:
        if args.control:
            asyncio.run(control(url))
        else:
            asyncio.run(standalone(url, args.sessions, args.seconds))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
