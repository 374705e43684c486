"""An independent WebRTC client for end-to-end tests: aiortc's ICE, DTLS, SRTP and RTP stack.

It sends a test signal from a real-time-paced track and records every RTP packet the server
sends back at the moment aiortc hands it to its receiver (after SRTP, before aiortc's own jitter
buffer, so the receive-side buffering of the test client does not count as path delay).
"""

from __future__ import annotations

import asyncio
import fractions
import re
import time
from collections.abc import Callable

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

RATE = 48_000
FRAME = 960


class SignalTrack(MediaStreamTrack):
    """Silence until ``play`` is called, then the given PCM once, then silence again."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self.signal_sent_at: float | None = None
        self._signal_armed = False

    def play(self, pcm: np.ndarray) -> None:
        self._pending = pcm.astype(np.int16)
        self._signal_armed = True

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = np.zeros(FRAME, dtype=np.int16)
        if len(self._pending):
            taken = self._pending[:FRAME]
            chunk[: len(taken)] = taken
            self._pending = self._pending[FRAME:]
            if self._signal_armed:
                self.signal_sent_at = time.monotonic()
                self._signal_armed = False
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk.tobytes())
        frame.pts = self._pts
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class CallClient:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.track = SignalTrack()
        self.pc.addTrack(self.track)
        self.location: str | None = None
        self.received: list[tuple[float, int, bytes]] = []
        """(arrival time, RTP timestamp, Opus payload) of every packet the server sent."""
        self._base_url = ""

    async def call(
        self,
        base_url: str,
        edit_offer: Callable[[str], str] = lambda sdp: sdp,
        edit_answer: Callable[[str], str] = lambda sdp: sdp,
    ) -> str:
        """Offer, post, apply the answer; returns the answer as the server sent it."""
        self._base_url = base_url.rstrip("/")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                self._base_url + "/v1/realtime/calls",
                data=edit_offer(self.pc.localDescription.sdp),
                headers={"Content-Type": "application/sdp"},
            )
            answer = await response.text()
            assert response.status == 201, answer
            self.location = response.headers["Location"]
        self._capture_rtp()
        await self.pc.setRemoteDescription(RTCSessionDescription(edit_answer(answer), "answer"))
        return answer

    def _capture_rtp(self) -> None:
        receiver = self.pc.getTransceivers()[0].receiver
        original = receiver._handle_rtp_packet

        async def capture(packet, arrival_time_ms):
            self.received.append((time.monotonic(), packet.timestamp, packet.payload))
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = capture

    async def wait_state(self, state: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != state:
            assert time.monotonic() < deadline, f"still {self.pc.connectionState}, not {state}"
            assert self.pc.connectionState not in ("failed", "closed") or state in (
                "failed",
                "closed",
            ), f"connection {self.pc.connectionState}"
            await asyncio.sleep(0.02)

    async def hang_up(self) -> int:
        async with aiohttp.ClientSession() as http:
            response = await http.delete(self._base_url + self.location)
            return response.status

    async def close(self) -> None:
        await self.pc.close()


def relay_candidate(answer: str) -> tuple[str, int]:
    match = re.search(r"^a=candidate:\S+ 1 UDP \d+ (\S+) (\d+) typ host", answer, re.M | re.I)
    assert match, answer
    return match.group(1), int(match.group(2))


def point_candidate_at(address: tuple[str, int]) -> Callable[[str], str]:
    """An answer edit that makes the client send to ``address`` instead of the relay."""

    def edit(answer: str) -> str:
        return re.sub(
            r"^(a=candidate:\S+ 1 UDP \d+) \S+ \d+ typ host",
            rf"\1 {address[0]} {address[1]} typ host",
            answer,
            flags=re.M | re.I,
        )

    return edit


def decode_opus(payloads: list[bytes]) -> list[np.ndarray]:
    """Decode with PyAV's libopus (not voicewire's binding): mono int16 per packet."""
    codec = av.CodecContext.create("opus", "r")
    codec.sample_rate = RATE
    frames = []
    for payload in payloads:
        samples = [f.to_ndarray() for f in codec.decode(av.Packet(payload))]
        pcm = np.concatenate([s.reshape(-1, s.shape[-1])[0] for s in samples])
        if pcm.dtype.kind == "f":
            pcm = pcm * 32767
        frames.append(pcm.astype(np.float64))
    return frames
