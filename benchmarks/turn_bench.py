"""Turn and barge-in latency of the ``parrot`` agent, measured at an aiortc client (DESIGN §9).

    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/turn_bench.py             # ~4 min
    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/turn_bench.py --rounds 4  # smoke
    ... --json turns.json     (every sample, the utterances and the summary)

Two servers run as subprocesses on 127.0.0.1, started the way a user starts them:
``voicewire serve --agent parrot`` and ``voicewire serve --agent echo`` (gateway, relay worker,
transceiver, agent). With 2 or more CPUs they are pinned to CPU 1 and this process, the client, to
CPU 0, so the client's work does not queue behind the server's. The client is aiortc (an
independent ICE/DTLS/SRTP/RTP stack) with the ``oai-events`` data channel. It speaks from a
real-time-paced track that sends digital silence between utterances. Every time is the client's
monotonic clock:

- a frame's **send time** is when its RTP packet went to aiortc's transport (hooked after SRTP,
  at the socket), matched to the track's frame by the RTP timestamp;
- a packet's **arrival** is when aiortc hands it to its receiver, after SRTP and before aiortc's
  own jitter buffer (as tests/e2e/aiortc_client.py does), so the client's playout buffering does
  not count.

Utterances: six sentences said by espeak-ng with different voices and speeds (``-v``, ``-s``),
made 48 kHz mono PCM16 and normalised to -3 dBFS by sox, as tests/speech.py does. The **onset**
of an utterance is its first audible 20 ms frame and its **end** its last: RMS above the level
floor below which turn detection ignores everything (``LEVEL_FLOOR_DBFS``), as the e2e test's
``onset_s`` does. Sentences have no commas, so that 200 ms of silence never splits one; the
script checks that with the detector before it starts.

What is measured:

1. **Turn latency**: end of the caller's speech (send time of the last audible frame) → arrival
   of the first packet of parrot's reply. Also shown minus ``silence_duration_ms``, the
   deliberate end-of-turn wait. Rounds alternate between 500 ms (the default) and 200 ms.
2. **Barge-in latency**: onset of an interruption (send time of its first audible frame) → arrival
   of the last packet of the reply it talked over. The interruption starts at a seeded random
   point 0.3–1.5 s after the reply's first packet. Target (DESIGN §9): p99 ≤ 150 ms.

Each round is: say utterance A → parrot says A back (a turn) → at the random point, say B over
the reply (a barge-in) → parrot says B back (a second turn, after a barge-in) → the client clears
that reply with ``output_audio_buffer.clear`` and waits for quiet. A reply's packets are told
apart by RTP timestamps: the transceiver sends nothing while idle and skips the timestamp over
the silence, so a new reply is a jump.

Baselines from the same run:

- **path floor**: the echo agent, measured the same way: an utterance's first frame sent →
  arrival of the echoed packet that carries it (the first one after digital silence that
  decodes, with PyAV, to anything but silence; each excerpt starts at its first sample above the
  level floor, so the 2 × 6.5 ms delay of the two Opus codecs cannot push it a packet later).
  That is client → relay → transceiver (jitter buffer, decode) → agent → encode → relay →
  client, with no detection and no waiting. Half the samples are taken before the parrot rounds
  and half after.
- **detection floor**: ``TurnDetector`` alone, fed the same audio frame by frame: each round is
  replayed offline (silence, A, the round's actual gap, B, silence) through aiortc's Opus
  encoder and the transceiver's decoder into a fresh detector with the round's settings, as the
  server's detector heard it (a session.update starts a fresh one there too). Reported: at which
  frame after B's onset it reports speech started (3 voiced frames of the last 4, so 40 ms at
  best) and how many frames after each utterance's end it reports speech stopped; frames ×
  20 ms. The utterance list also shows the detector on the raw PCM, with no codec.

Barge-in is then split as total = path floor (p50) + detection + remainder, and a turn as total
= path floor + end-of-turn detection + remainder (each remainder per sample). As a cross-check,
the arrival of ``output_audio_buffer.cleared`` is shown after the send time of the frame that
completed the detection: that is the inbound path, the jitter buffer and the data channel back.

Nothing is averaged away silently: a turn with no reply, a reply that began while the caller was
still speaking, a barge-in without ``output_audio_buffer.cleared``, a reply still arriving 500 ms
after the onset, a reply that had ended before the interruption and a round with an unexpected
number of ``speech_started`` events are counted and printed; any of them makes the exit status 1.
A failed call, an echo that never came back, or a server that died or logged an error ends the
run with status 1 and no table. p99 is nearest-rank: with 30 samples, the slowest one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.opus import OpusEncoder as ClientOpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import is_rtcp
from machine import LOCK_PATH, check_lock, cpu_busy, percentile, tree_cpu
from processes import BenchError
from runner import run_bench, write_json
from serve_process import ServeProcess, serve_argv, stop_all

from voicewire.agents.turn_detection import (
    DEFAULTS,
    LEVEL_FLOOR_DBFS,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
)
from voicewire.rtc.opus import OpusDecoder

HERE = Path(__file__).resolve().parent
RATE = 48_000
FRAME = 960  # samples per 20 ms frame
FRAME_S = FRAME / RATE
FLOOR_RMS = 32768 * 10 ** (LEVEL_FLOOR_DBFS / 20)  # an audible frame is louder than this
CALLS_PATH = "/v1/realtime/calls"

UTTERANCES = [  # (text, espeak-ng voice, words per minute); no commas: one turn each
    ("Please read me the weather for tomorrow morning", "en-us", 175),
    ("Book a table for four people at eight tonight", "en-gb+f3", 165),
    ("How long does the train to the airport take", "en-gb-scotland+m3", 185),
    ("Turn the kitchen lights off and lock the front door", "en-029+f2", 170),
    ("What time does the pharmacy on Main Street close", "en-us+m5", 200),
    ("Remind me to call my sister after lunch tomorrow", "en-gb-x-rp+f4", 160),
]
SILENCES_MS = (500, 200)  # rounds alternate: 500 ms is the server_vad default
OFFSET_S = (0.3, 1.5)  # the interruption's onset, after the reply's first packet
MIN_SPEECH_S = 1.75  # a reply (speech + 300 ms prefix) must outlast the latest interruption
BARGE_IN_TARGET_MS = 150.0
STOPPED_WITHIN_S = 0.5  # a reply still arriving this long after the onset did not stop
REPLY_TIMEOUT_S = 3.0  # beyond silence_duration_ms: no reply by then is a missed turn
CLIENT_LATE_MS = 10.0  # a frame this far behind the client's 20 ms schedule: the client stalled
QUIET_S = 0.3  # no packet for this long: the reply is over
ECHO_FRAMES = 15  # echo floor: 300 ms of each utterance from its onset, then silence
SILENT_RMS = 0.5  # a decoded packet at or below this is digital silence
ECHO_GAP_S = 0.35
CONNECT_TIMEOUT = 10.0
HTTP_TIMEOUT = 5.0


def loopback_only() -> None:
    """The aiortc client gathers one host candidate, on 127.0.0.1."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


# Utterances and the detector alone.


@dataclass
class Utterance:
    name: str
    text: str
    voice: str
    speed: int
    pcm: np.ndarray  # int16, a whole number of frames
    onset: int  # frame index of the first audible frame
    last: int  # frame index of the last audible frame
    start_frames: int = 0  # the detector reports speech started this many frames after onset
    end_frames: dict[int, int] = field(default_factory=dict)  # silence ms → frames after last

    @property
    def count(self) -> int:
        return len(self.pcm) // FRAME

    @property
    def speech_s(self) -> float:
        return (self.last + 1 - self.onset) * FRAME_S

    def describe(self) -> dict:
        return {
            "name": self.name,
            "text": self.text,
            "voice": self.voice,
            "speed": self.speed,
            "speech_ms": round(1000 * self.speech_s),
            "raw_start_detection_ms": self.start_frames * 20,
            "raw_end_detection_ms": {str(k): v * 20 for k, v in self.end_frames.items()},
        }


def audible_frames(pcm: np.ndarray) -> np.ndarray:
    """Indices of the 20 ms frames whose RMS is above the turn detector's level floor."""
    windows = pcm[: len(pcm) // FRAME * FRAME].astype(float).reshape(-1, FRAME)
    return np.flatnonzero(np.sqrt((windows**2).mean(axis=1)) > FLOOR_RMS)


def synthesize(text: str, voice: str, speed: int) -> np.ndarray:
    """``text`` said by espeak-ng, as 48 kHz mono int16 normalised to -3 dBFS (tests/speech.py,
    plus a voice and a speed)."""
    missing = [p for p in ("espeak-ng", "sox") if shutil.which(p) is None]
    if missing:
        raise BenchError(f"this benchmark needs {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as folder:
        spoken, raw = Path(folder) / "spoken.wav", Path(folder) / "speech.raw"
        for argv in (
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(spoken), text],
            ["sox", str(spoken), "-r", "48000", "-c", "1", "-b", "16", "-e", "signed-integer"]
            + ["-t", "raw", str(raw), "norm", "-3"],
        ):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"{argv[0]} failed: {done.stderr.strip()}")
        return np.frombuffer(raw.read_bytes(), dtype="<i2").copy()


def detect(pcm: np.ndarray, silence_ms: int) -> list[tuple[str, int]]:
    """TurnDetector alone over silence, ``pcm``, then silence: (event, frame index in pcm)."""
    detector = TurnDetector({"silence_duration_ms": silence_ms})
    lead = 10
    frames = np.concatenate(
        [np.zeros(lead * FRAME, np.int16), pcm, np.zeros((silence_ms // 20 + 20) * FRAME, np.int16)]
    )
    events = []
    for i in range(len(frames) // FRAME):
        event = detector.feed(frames[i * FRAME : (i + 1) * FRAME].tobytes(), i * 20)
        if isinstance(event, SpeechStarted):
            events.append(("started", i - lead))
        elif isinstance(event, SpeechStopped):
            events.append(("stopped", i - lead))
    return events


def pcm_frame(pcm: bytes, index: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
    frame.planes[0].update(pcm)
    frame.pts = index * FRAME
    frame.sample_rate = RATE
    frame.time_base = fractions.Fraction(1, RATE)
    return frame


def detect_as_heard(
    a: Utterance, b: Utterance, gap_frames: int, silence_ms: int
) -> list[tuple[str, int]]:
    """One round as the server's detector hears it, replayed offline: silence, A, the round's
    actual gap, B, silence, through the client's Opus encoder (aiortc's) and the transceiver's
    decoder, into a fresh TurnDetector (each round's session.update makes the server start one
    afresh too). Returns (event, frame index) with A starting at frame 0."""
    lead = 10
    pieces = [np.zeros(lead * FRAME, np.int16), a.pcm, np.zeros(gap_frames * FRAME, np.int16)]
    pieces += [b.pcm, np.zeros((silence_ms // 20 + 20) * FRAME, np.int16)]
    audio = np.concatenate(pieces)
    encoder, decoder = ClientOpusEncoder(), OpusDecoder()
    detector = TurnDetector({"silence_duration_ms": silence_ms})
    events = []
    for i in range(len(audio) // FRAME):
        payloads, _ = encoder.encode(pcm_frame(audio[i * FRAME : (i + 1) * FRAME].tobytes(), i))
        for payload in payloads:
            event = detector.feed(decoder.decode(payload), i * 20)
            if event is not None:
                events.append(("started" if isinstance(event, SpeechStarted) else "stopped", i))
    return [(kind, i - lead) for kind, i in events]


def simulate(record: dict, by_name: dict[str, Utterance]) -> None:
    """Add the detector-alone frame counts to a round's record (None if it did not see the
    two turns the server should have seen)."""
    a, b = by_name[record["a"]], by_name[record["b"]]
    record.update(a_end_frames=None, b_start_frames=None, b_end_frames=None)
    if "gap_frames" not in record:
        return
    events = detect_as_heard(a, b, record["gap_frames"], record["silence_ms"])
    if [kind for kind, _ in events] != ["started", "stopped", "started", "stopped"]:
        return
    b_first = a.count + record["gap_frames"]
    record["a_end_frames"] = events[1][1] - a.last
    record["b_start_frames"] = events[2][1] - (b_first + b.onset)
    record["b_end_frames"] = events[3][1] - (b_first + b.last)


def make_utterances() -> list[Utterance]:
    made = []
    for number, (text, voice, speed) in enumerate(UTTERANCES):
        pcm = synthesize(text, voice, speed)
        loud = audible_frames(pcm)
        if not len(loud):
            raise BenchError(f"espeak-ng said nothing audible for {text!r}")
        # Keep one frame either side of the audible part: the rest is below the floor.
        first, last = max(0, int(loud[0]) - 1), int(loud[-1]) + 1
        pcm = pcm[first * FRAME : (last + 1) * FRAME]
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % FRAME, np.int16)])
        loud = audible_frames(pcm)
        u = Utterance(f"u{number + 1}", text, voice, speed, pcm, int(loud[0]), int(loud[-1]))
        if u.speech_s < MIN_SPEECH_S:
            raise BenchError(f"{u.name} is {u.speech_s:.2f} s; a reply must outlast 1.5 s")
        for silence in SILENCES_MS:
            events = detect(u.pcm, silence)
            kinds = [kind for kind, _ in events]
            if kinds != ["started", "stopped"]:
                raise BenchError(f"{u.name} is not one turn at {silence} ms silence: {events}")
            u.start_frames = events[0][1] - u.onset
            u.end_frames[silence] = events[1][1] - u.last
        made.append(u)
    return made


# The client.


@dataclass
class Playback:
    frames: np.ndarray  # int16, a whole number of frames
    indices: list[int] = field(default_factory=list)  # the track frame each one went out as
    handed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def count(self) -> int:
        return len(self.frames) // FRAME


class Mouth(MediaStreamTrack):
    """A microphone: 20 ms frames paced in real time, digital silence unless something plays."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._index = 0
        self._queue: deque[Playback] = deque()
        self._silence = np.zeros(FRAME, np.int16).tobytes()

    def play(self, pcm: np.ndarray) -> Playback:
        playback = Playback(pcm.astype(np.int16))
        self._queue.append(playback)
        return playback

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._index * FRAME_S - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._silence
        if self._queue:
            playing = self._queue[0]
            done = len(playing.indices)
            chunk = playing.frames[done * FRAME : (done + 1) * FRAME].tobytes()
            playing.indices.append(self._index)
            if len(playing.indices) == playing.count:
                self._queue.popleft()
                playing.handed.set()
        self._index += 1
        return pcm_frame(chunk, self._index - 1)


@dataclass(slots=True)
class Packet:
    at: float
    timestamp: int
    payload: bytes


class Client:
    """aiortc with the ``oai-events`` channel; every packet and event kept with its time."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mouth = Mouth()
        self.pc.addTrack(self.mouth)
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", self._on_message)
        self.events: list[tuple[float, dict]] = []
        self.received: list[Packet] = []
        self.wire: dict[int, float] = {}  # track frame index → when its RTP packet was sent
        self._timestamp0: int | None = None
        self._changed = asyncio.Event()
        self.location: str | None = None

    def _on_message(self, message: str | bytes) -> None:
        self.events.append((time.monotonic(), json.loads(message)))
        self._changed.set()

    def _hook(self) -> None:
        """Record sent RTP (at the socket, after SRTP) and received RTP (before the jitter
        buffer). Audio is the first m-line, so its DTLS transport is the bundle's."""
        transport = self.pc.getTransceivers()[0].sender.transport
        send = transport._send_rtp

        async def sent(data: bytes) -> None:
            await send(data)
            if not is_rtcp(data):
                timestamp = int.from_bytes(data[4:8], "big")
                if self._timestamp0 is None:
                    self._timestamp0 = timestamp
                offset = (timestamp - self._timestamp0) % 2**32
                self.wire[offset // FRAME] = time.monotonic()

        transport._send_rtp = sent
        receiver = self.pc.getTransceivers()[0].receiver
        handle = receiver._handle_rtp_packet

        async def received(packet, arrival_time_ms):
            self.received.append(Packet(time.monotonic(), packet.timestamp, packet.payload))
            self._changed.set()
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = received

    async def call(self, base_url: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._hook()
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(
                urljoin(base_url, CALLS_PATH),
                data=self.pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as response:
                answer = await response.text()
                if response.status != 201:
                    raise BenchError(f"POST answered {response.status}: {answer[:300]}")
                self.location = urljoin(str(response.url), response.headers["Location"])
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while self.pc.connectionState != "connected":
            if self.pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                raise BenchError(f"call to {base_url}: connection {self.pc.connectionState}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        try:
            if self.location is not None:
                timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    async with http.delete(self.location) as response:
                        if response.status != 200:
                            raise BenchError(f"DELETE answered {response.status}")
        finally:
            await self.pc.close()

    async def until(self, check, timeout: float):
        """``check()`` once it is not None, re-run as packets and events arrive; None on
        timeout."""
        deadline = time.monotonic() + timeout
        while (result := check()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return result

    def event(self, kind: str, after: float, **match) -> tuple[float, dict] | None:
        for at, event in self.events:
            if at >= after and event["type"] == kind:
                if all(event.get(k) == v for k, v in match.items()):
                    return at, event
        return None

    async def wait_event(self, kind: str, after: float, timeout: float, **match):
        found = await self.until(lambda: self.event(kind, after, **match), timeout)
        if found is None:
            raise BenchError(f"no {kind} in {timeout} s; got {[e['type'] for _, e in self.events]}")
        return found

    async def say(self, pcm: np.ndarray) -> Playback:
        """Play ``pcm`` and return once its last frame is on the wire."""
        playback = self.mouth.play(pcm)
        try:
            await asyncio.wait_for(playback.handed.wait(), playback.count * FRAME_S + 5)
        except TimeoutError:
            raise BenchError("the client's track stopped sending") from None
        await self.sent_at(playback.indices[-1])
        return playback

    async def sent_at(self, index: int) -> float:
        sent = await self.until(lambda: self.wire.get(index), 2.0)
        if sent is None:
            raise BenchError(f"frame {index} never went out (the RTP hook is broken?)")
        return sent

    async def wait_quiet(self, quiet: float = QUIET_S, timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received and time.monotonic() - self.received[-1].at < quiet:
            if time.monotonic() > deadline:
                raise BenchError(f"the server kept sending for {timeout} s")
            await asyncio.sleep(quiet - (time.monotonic() - self.received[-1].at) + 0.001)

    def send(self, event: dict) -> float:
        sent = time.monotonic()
        self.channel.send(json.dumps(event))
        return sent


def decoded_levels(packets: list[Packet]) -> list[float]:
    """RMS of each packet decoded with PyAV's libopus (not voicewire's), in arrival order."""
    codec = av.CodecContext.create("opus", "r")
    codec.sample_rate = RATE
    levels = []
    for packet in packets:
        pcm = [f.to_ndarray() for f in codec.decode(av.Packet(packet.payload))]
        samples = np.concatenate([p.reshape(-1, p.shape[-1])[0] for p in pcm]).astype(float)
        if pcm and pcm[0].dtype.kind == "f":
            samples *= 32767
        levels.append(float(np.sqrt((samples**2).mean())) if len(samples) else 0.0)
    return levels


# Measurements.


async def echo_floor(url: str, utterances: list[Utterance], count: int, first: int) -> list[dict]:
    """Onset sent → the echoed packet that carries it, ``count`` times, utterances in turn.

    Each utterance is played, after digital silence, from its first sample above the level
    floor, so its first frame has sound from its start and the first echoed packet that decodes
    to anything but silence is the one carrying that frame (the two Opus codecs delay the sound
    by 2 × 6.5 ms, less than a frame; a quiet first frame could otherwise show up a packet
    late)."""
    client = Client()
    try:
        await client.call(url)
        if await client.until(lambda: client.received or None, 5.0) is None:
            raise BenchError("the echo server sent nothing back")
        await asyncio.sleep(0.5)
        onsets = []
        for i in range(count):
            u = utterances[(first + i) % len(utterances)]
            # From the first sample above the floor: the first frame has sound from its start.
            start = u.onset * FRAME
            start += int(np.argmax(np.abs(u.pcm[start:].astype(int)) > FLOOR_RMS))
            playback = await client.say(u.pcm[start : start + ECHO_FRAMES * FRAME])
            onsets.append((u, await client.sent_at(playback.indices[0])))
            await asyncio.sleep(ECHO_GAP_S)
    finally:
        await client.close()
    packets = list(client.received)
    levels = decoded_levels(packets)
    samples = []
    for u, onset in onsets:
        start = first_after(packets, 0, onset)
        if not start or levels[start - 1] > SILENT_RMS:
            raise BenchError(f"the echo was not silent when {u.name}'s onset went out")
        carried = next((j for j in range(start, len(packets)) if levels[j] > SILENT_RMS), None)
        if carried is None or packets[carried].at > onset + 1.0:
            raise BenchError(f"the echo of {u.name}'s onset never came back")
        samples.append({"utterance": u.name, "path_ms": 1000 * (packets[carried].at - onset)})
    return samples


def stretch_end(packets: list[Packet], first: int, after: float) -> int:
    """Index of the last packet of the reply that starts at ``first``: the packets go on while
    RTP timestamps are consecutive; a jump later than ``after`` starts another reply."""
    k = first
    while k + 1 < len(packets):
        following = packets[k + 1]
        if (following.timestamp - packets[k].timestamp) % 2**32 != FRAME and following.at > after:
            break
        k += 1
    return k


def first_after(packets: list[Packet], start: int, after: float) -> int | None:
    return next((j for j in range(start, len(packets)) if packets[j].at > after), None)


async def set_silence(client: Client, silence_ms: int) -> None:
    turn = {"type": "server_vad", "silence_duration_ms": silence_ms}
    asked = client.send(
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": turn}}}}
    )
    _, updated = await client.wait_event("session.updated", asked, 5.0)
    got = updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"]
    if got != silence_ms:
        raise BenchError(f"session.update asked for {silence_ms} ms silence, got {got}")


async def one_round(client: Client, a: Utterance, b: Utterance, silence_ms: int, offset: float):
    """A said, its reply, B said over it, B's reply cleared by the client."""
    record: dict = {"silence_ms": silence_ms, "a": a.name, "b": b.name}
    await client.wait_quiet()
    began = time.monotonic()
    received = client.received
    start = len(received)
    spoken = await client.say(a.pcm)
    a_last_index = spoken.indices[-1]
    a_end = await client.sent_at(spoken.indices[a.last])
    a_begin = await client.sent_at(spoken.indices[0])
    record["a_early_packets"] = sum(1 for p in received[start:] if a_begin <= p.at <= a_end)
    wait = silence_ms / 1000 + REPLY_TIMEOUT_S
    first = await client.until(lambda: first_after(received, start, a_end), wait)
    if first is None:
        record["a_turn_ms"] = None
        await client.wait_quiet()
        record["speech_started"] = len(
            [e for at, e in client.events if at >= began and e["type"].endswith("speech_started")]
        )
        return record
    reply_at = received[first].at
    record["a_turn_ms"] = 1000 * (reply_at - a_end)
    started = await client.until(lambda: client.event("output_audio_buffer.started", a_end), 2.0)
    reply_id = started[1]["response_id"] if started else None

    # B over the reply: its onset frame should leave `offset` after the reply's first packet.
    target = reply_at + offset
    await asyncio.sleep(max(0.0, target - (b.onset + 1) * FRAME_S - time.monotonic()))
    asked = time.monotonic()
    spoken = await client.say(b.pcm)
    record["gap_frames"] = spoken.indices[0] - a_last_index - 1
    b_onset = await client.sent_at(spoken.indices[b.onset])
    record["b_sent_ms"] = [  # B's frames from its onset on, when they went out
        1000 * (client.wire[i] - b_onset) for i in spoken.indices[b.onset :] if i in client.wire
    ][:12]
    b_end = await client.sent_at(spoken.indices[b.last])
    record["offset_ms"] = 1000 * (b_onset - reply_at)
    last = stretch_end(received, first, b_end)
    record["barge_in_ms"] = 1000 * (received[last].at - b_onset)
    record["reply_over_before_onset"] = received[last].at < b_onset
    record["reply_packets"] = last - first + 1
    cleared = await client.until(
        lambda: client.event("output_audio_buffer.cleared", asked, response_id=reply_id), 1.0
    )
    record["cleared_ms"] = None if cleared is None else 1000 * (cleared[0] - b_onset)
    natural = client.event("output_audio_buffer.stopped", a_end, response_id=reply_id)
    record["stopped_naturally"] = natural is not None and (
        cleared is None or natural[0] < cleared[0]
    )

    # B's own reply, then the client cuts it short.
    record["b_early_packets"] = sum(1 for p in received[last + 1 :] if p.at <= b_end)
    second = await client.until(lambda: first_after(received, last + 1, b_end), wait)
    record["b_turn_ms"] = None if second is None else 1000 * (received[second].at - b_end)
    if second is not None:
        asked = client.send({"type": "output_audio_buffer.clear"})
        await client.until(lambda: client.event("output_audio_buffer.cleared", asked), 2.0)
    await client.wait_quiet()
    record["speech_started"] = len(
        [e for at, e in client.events if at >= began and e["type"].endswith("speech_started")]
    )
    return record


async def parrot_rounds(
    url: str, utterances: list[Utterance], rounds: int, rng: random.Random
) -> list[dict]:
    client = Client()
    records = []
    try:
        await client.call(url)
        _, created = await client.wait_event("session.created", 0.0, 5.0)
        turn = created["session"]["audio"]["input"]["turn_detection"]
        current = turn["silence_duration_ms"]
        if current != DEFAULTS["silence_duration_ms"]:
            raise BenchError(f"parrot's default silence is {current} ms, expected 500")
        n = len(utterances)
        for number in range(rounds):
            silence = SILENCES_MS[number % len(SILENCES_MS)]
            if silence != current:
                await set_silence(client, silence)
                current = silence
            # Each A is said once at each silence; B is any other utterance.
            a = utterances[(number // len(SILENCES_MS)) % n]
            b = utterances[(utterances.index(a) + 1 + rng.randrange(n - 1)) % n]
            offset = rng.uniform(*OFFSET_S)
            record = await one_round(client, a, b, silence, offset)
            record["round"] = number
            records.append(record)
            if (number + 1) % 10 == 0:
                print(f"{number + 1}/{rounds} rounds", file=sys.stderr, flush=True)
    finally:
        await client.close()
    return records


async def measure(urls: dict[str, str], utterances, rounds: int, echoes: int, seed: int) -> dict:
    rng = random.Random(seed)
    before = await echo_floor(urls["echo"], utterances, echoes // 2, 0)
    records = await parrot_rounds(urls["parrot"], utterances, rounds, rng)
    after = await echo_floor(urls["echo"], utterances, echoes - echoes // 2, echoes // 2)
    for sample in before:
        sample["block"] = "before"
    for sample in after:
        sample["block"] = "after"
    return {"echo": before + after, "rounds": records}


# CPU used by other processes while we ran (the machine may be shared).


def _machine_busy() -> float:
    return sum(v for k, v in cpu_busy().items() if not k.endswith("_steal"))


class CpuWatch:
    def __init__(self) -> None:
        self.busy0 = _machine_busy()
        self.ours0 = tree_cpu(os.getpid())
        self.wall0 = time.monotonic()

    def foreign_share(self) -> float:
        """Cores' worth of CPU others used (0 = nobody else ran; 1 = one core all the time)."""
        busy = _machine_busy()
        ours = tree_cpu(os.getpid())
        used = sum(v - self.ours0.get(pid, 0.0) for pid, v in ours.items())
        return max(0.0, (busy - self.busy0) - used) / (time.monotonic() - self.wall0)


# Report.


def summarize(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p99": round(percentile(values, 0.99), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def report(data: dict, utterances: list[Utterance]) -> dict:
    by_name = {u.name: u for u in utterances}
    rounds = data["rounds"]
    for record in rounds:
        simulate(record, by_name)
    path = [s["path_ms"] for s in data["echo"]]
    floor = statistics.median(path)

    barge = [
        r
        for r in rounds
        if r.get("barge_in_ms") is not None
        and not r["reply_over_before_onset"]
        and r["barge_in_ms"] <= 1000 * STOPPED_WITHIN_S
    ]
    total = [r["barge_in_ms"] for r in barge]
    replayed = [r for r in barge if r["b_start_frames"] is not None]
    detection = [20 * r["b_start_frames"] for r in replayed]
    # When the frame that completed the detection went out, and the cleared event came back.
    clear_path = [
        r["cleared_ms"] - r["b_sent_ms"][r["b_start_frames"]]
        for r in replayed
        if r["cleared_ms"] is not None and r["b_start_frames"] < len(r["b_sent_ms"])
    ]
    # B's frames up to the detecting one should leave every 20 ms: the client's own stalls.
    stalled = [
        r
        for r in replayed
        if any(
            sent - 20 * k > CLIENT_LATE_MS
            for k, sent in enumerate(r["b_sent_ms"][: r["b_start_frames"] + 1])
        )
    ]
    rows: list[tuple[str, str, list[float]]] = [  # (JSON key, label, samples)
        ("path_floor", "path floor: echo, onset sent → echoed packet carrying it", path),
        ("barge_in", "barge-in: onset sent → last reply packet arrives", total),
        ("barge_in_detection", "  detection: TurnDetector alone, frames × 20 ms", detection),
        (
            "barge_in_after_detecting_frame",
            "  last reply packet after the detecting frame was sent",
            [
                r["barge_in_ms"] - r["b_sent_ms"][r["b_start_frames"]]
                for r in replayed
                if r["b_start_frames"] < len(r["b_sent_ms"])
            ],
        ),
        (
            "barge_in_remainder",
            "  remainder: total − path floor p50 − detection",
            [r["barge_in_ms"] - floor - 20 * r["b_start_frames"] for r in replayed],
        ),
        (
            "cleared_event",
            "  output_audio_buffer.cleared arrives (data channel)",
            [r["cleared_ms"] for r in barge if r["cleared_ms"] is not None],
        ),
        ("cleared_after_detection", "    after the detecting frame was sent", clear_path),
        (
            "interruption_offset",
            "  interruption onset after the reply's first packet",
            [r["offset_ms"] for r in barge],
        ),
    ]
    turns: dict[int, list[tuple[float, int | None]]] = {s: [] for s in SILENCES_MS}
    for r in rounds:
        for side in ("a", "b"):
            if r.get(f"{side}_turn_ms") is not None and not r.get(f"{side}_early_packets"):
                turns[r["silence_ms"]].append((r[f"{side}_turn_ms"], r.get(f"{side}_end_frames")))
    for silence, found in turns.items():
        values = [t for t, _ in found]
        ends = [(t, 20 * e) for t, e in found if e is not None]
        rows += [
            (
                f"turn_{silence}",
                f"turn, silence {silence} ms: end of speech sent → first reply packet",
                values,
            ),
            (
                f"turn_{silence}_minus_silence",
                f"  minus silence_duration_ms ({silence})",
                [t - silence for t in values],
            ),
            (
                f"turn_{silence}_detection",
                "  end-of-turn detection: TurnDetector alone",
                [e for _, e in ends],
            ),
            (
                f"turn_{silence}_remainder",
                "  remainder: total − path floor p50 − end detection",
                [t - floor - e for t, e in ends],
            ),
        ]

    table = [(key, label, summarize(values)) for key, label, values in rows]
    print()
    print(
        "Turn and barge-in latency, aiortc client → relay → transceiver → parrot, loopback "
        f"(ms; {len(rounds)} rounds)"
    )
    print(f"{'':62}{'n':>4}{'p50':>8}{'p99':>8}{'min':>8}{'max':>8}")
    for _, label, stats in table:
        if stats is None:
            print(f"{label:62}{0:>4}{'–':>8}{'–':>8}{'–':>8}{'–':>8}")
        else:
            print(
                f"{label:62}{stats['n']:>4}"
                + "".join(f"{stats[k]:8.1f}" for k in ("p50", "p99", "min", "max"))
            )
    stats = {key: found for key, _, found in table}
    print("\nwhere the time goes (medians, ms):" if total else "")
    for name, key, part in [("barge-in", "barge_in", "barge_in_detection")] + [
        (f"turn at {s} ms", f"turn_{s}", f"turn_{s}_detection") for s in SILENCES_MS
    ]:
        rest = stats[key.replace("_detection", "") + "_remainder"]
        if stats[key] and stats[part] and rest:
            print(
                f"  {name:16} {stats[key]['p50']:6.1f} = path floor {floor:5.1f} + detection "
                f"{stats[part]['p50']:5.1f} + remainder {rest['p50']:6.1f}"
            )
    unreplayed = sum(1 for r in rounds if "gap_frames" in r and r["b_start_frames"] is None)
    if unreplayed:
        print(
            f"  ({unreplayed} rounds left out of the detection columns: the detector alone did "
            "not hear the same two turns)"
        )

    failures = {
        "turns without a reply": sum(
            (r.get("a_turn_ms") is None) + (r.get("b_turn_ms", 0) is None) for r in rounds
        ),
        "replies that began while the caller was speaking": sum(
            bool(r.get("a_early_packets")) + bool(r.get("b_early_packets")) for r in rounds
        ),
        "barge-ins without output_audio_buffer.cleared": sum(
            1 for r in rounds if "barge_in_ms" in r and r["cleared_ms"] is None
        ),
        f"replies still arriving {1000 * STOPPED_WITHIN_S:.0f} ms after the onset": sum(
            1 for r in rounds if r.get("barge_in_ms", 0) > 1000 * STOPPED_WITHIN_S
        ),
        "replies that ran to their end (output_audio_buffer.stopped, not cleared)": sum(
            1 for r in rounds if r.get("stopped_naturally")
        ),
        "replies over before the interruption began": sum(
            1 for r in rounds if r.get("reply_over_before_onset")
        ),
        "rounds with an unexpected number of speech_started (A, B)": sum(
            1 for r in rounds if r["speech_started"] != (2 if "barge_in_ms" in r else 1)
        ),
    }
    print()
    turns_total = sum(2 if "barge_in_ms" in r else 1 for r in rounds)
    interruptions = sum(1 for r in rounds if "barge_in_ms" in r)
    print(f"checks ({turns_total} turns, {interruptions} interruptions):")
    for label, count in failures.items():
        print(f"  {label}: {count}{'  <-- FAILED' if count else ''}")
    print(
        f"  (not a failure: {len(stalled)} barge-ins where the client itself sent a frame of the"
        f" interruption more than {CLIENT_LATE_MS:.0f} ms late before the detecting one)"
    )
    p99 = stats["barge_in"]["p99"] if stats["barge_in"] else math.inf
    unmeasured = interruptions - len(total)  # did not stop, or had nothing left to stop
    met = p99 <= BARGE_IN_TARGET_MS and not unmeasured
    print(
        f"\nDESIGN §9 target, barge-in p99 ≤ {BARGE_IN_TARGET_MS:.0f} ms: {p99:.1f} ms over "
        f"{len(total)} of {interruptions} interruptions, {'met' if met else 'MISSED'}"
    )
    return {
        "summary": stats,
        "failures": failures,
        "client_stalls": len(stalled),
        "path_floor_p50_ms": floor,
        "target": {"barge_in_p99_ms": p99, "met": met},
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


Measured = tuple[list[Utterance], dict, float, float]  # utterances, data, foreign cores, seconds


def run(args: argparse.Namespace, pin: bool, servers: dict[str, ServeProcess]) -> Measured:
    """Start the servers (into ``servers``: main stops them) and measure."""
    utterances = make_utterances()
    for agent in ("parrot", "echo"):
        servers[agent] = ServeProcess(
            agent,
            serve_argv("--agent", agent),
            args.log_dir / f"{agent}.log",
            cpu=1 if pin else None,
        )
    urls = {agent: server.wait_serving() for agent, server in servers.items()}
    if pin:
        os.sched_setaffinity(0, {0})
    cpu = CpuWatch()
    started = time.monotonic()
    data = asyncio.run(measure(urls, utterances, args.rounds, args.echo, args.seed))
    foreign = cpu.foreign_share()
    elapsed = time.monotonic() - started
    time.sleep(0.2)  # the last log lines
    for server in servers.values():
        server.check()
    return utterances, data, foreign, elapsed


def show(args: argparse.Namespace, pin: bool, locked: bool, measured: Measured) -> int:
    """Print the report, write --json; 1 when a check failed."""
    utterances, data, foreign, elapsed = measured
    print(
        f"voicewire turn benchmark: {os.cpu_count()} CPUs ({cpu_model()}), "
        f"kernel {platform.release()}, Python {platform.python_version()}"
    )
    print(
        "client (aiortc) on CPU 0, `voicewire serve` (parrot, echo) on CPU 1"
        if pin
        else "no CPU pinning"
    )
    print(
        "utterances (TurnDetector alone on the raw PCM, no codec: start after the onset, "
        "stop after the end):"
    )
    for u in utterances:
        ends = ", ".join(f"{s} ms: {u.end_frames[s] * 20}" for s in SILENCES_MS)
        print(
            f"  {u.name} {u.voice:18} {u.speed:3d} wpm {u.speech_s:4.2f} s  "
            f"start {u.start_frames * 20:3d} ms  stop {ends}  {u.text!r}"
        )
    result = report(data, utterances)
    print(
        f"\n{elapsed:.0f} s; seed {args.seed}; lock {LOCK_PATH} {'held' if locked else 'NOT held'}"
        f"; other processes used {foreign:.2f} cores meanwhile (server logs in {args.log_dir})"
    )
    if foreign > 0.25:
        print("  the machine was busy with something else: expect noisier numbers")
    if args.json:
        result.update(
            rounds=args.rounds,
            seed=args.seed,
            lock_held=locked,
            pinned=pin,
            foreign_cores=round(foreign, 3),
            elapsed_s=round(elapsed, 1),
            machine={"cpus": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release()},
            utterances=[u.describe() for u in utterances],
            samples=data,
        )
        write_json(args.json, result)
        print(f"samples in {args.json}")
    failed = any(result["failures"].values())
    if failed:
        print("turn_bench: FAILED: see the checks above", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds: 2 turns, 1 barge-in each")
    parser.add_argument("--echo", type=int, default=30, help="path-floor samples (echo agent)")
    parser.add_argument("--seed", type=int, default=4, help="seed of the interruption points")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every sample here")
    parser.add_argument(
        "--log-dir", type=Path, default=HERE / ".build" / "turn_bench", help="server logs"
    )
    args = parser.parse_args()
    if args.rounds < 2 or args.echo < 2:
        parser.error("--rounds and --echo must be at least 2")
    logging.basicConfig(level=logging.WARNING)
    loopback_only()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    locked = check_lock()
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    servers: dict[str, ServeProcess] = {}
    return run_bench(
        "turn_bench",
        lambda: run(args, pin, servers),
        lambda measured: show(args, pin, locked, measured),
        cleanup=lambda: stop_all(servers.values()),
    )


if __name__ == "__main__":
    sys.exit(main())
