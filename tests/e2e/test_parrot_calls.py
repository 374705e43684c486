"""Conversations with ``parrot`` from aiortc through relay and transceiver: turns, the Realtime
events around them, the reply's audio, and barge-in measured at the client."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from tests.e2e.aiortc_client import FRAME, RATE, CallClient, decode_opus
from tests.speech import speech_pcm
from voicewire.agents.parrot import ParrotAgent
from voicewire.agents.turn_detection import LEVEL_FLOOR_DBFS
from voicewire.serve import EmbeddedStack

UTTERANCE = "Parrots repeat what they hear, one turn at a time."
INTERRUPTION = "Wait, stop, let me say something else."
BARGE_IN_BUDGET = 0.150  # speech onset at the client → last reply packet at the client


@pytest.fixture
async def parrot_stack():
    async with EmbeddedStack(
        http=("127.0.0.1", 0), udp=("127.0.0.1", 0), agent_factory=ParrotAgent
    ) as running:
        yield running


class EventLog:
    """Every event of the ``oai-events`` channel with its arrival time."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict]] = []
        self._changed = asyncio.Event()

    def add(self, message: str) -> None:
        self.events.append((time.monotonic(), json.loads(message)))
        self._changed.set()

    async def wait_for(self, kind: str, after: float = 0.0, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for at, event in self.events:
                if at >= after and event["type"] == kind:
                    return event
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind}; got {[e['type'] for _, e in self.events]}"
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def time_of(self, kind: str, after: float = 0.0) -> float:
        return next(at for at, e in self.events if at >= after and e["type"] == kind)


async def talking_client(stack) -> tuple[CallClient, EventLog]:
    client = CallClient()
    log = EventLog()
    channel = client.pc.createDataChannel("oai-events")
    channel.on("message", log.add)
    client.channel = channel
    await client.call(stack.url)
    await client.wait_state("connected")
    await log.wait_for("session.created")
    return client, log


def onset_s(pcm: np.ndarray) -> float:
    """Seconds from the start of a recording to its first audible 20 ms: above the level below
    which turn detection ignores everything, so the onset is never placed late."""
    windows = pcm[: len(pcm) // FRAME * FRAME].astype(float).reshape(-1, FRAME)
    floor = 32768 * 10 ** (LEVEL_FLOOR_DBFS / 20)
    loud = np.flatnonzero(np.sqrt((windows**2).mean(axis=1)) > floor)
    return int(loud[0]) * FRAME / RATE


def envelope_correlation(reference: np.ndarray, heard: np.ndarray) -> float:
    """Align ``heard`` to ``reference`` by waveform cross-correlation, then correlate their
    loudness in 20 ms windows: the reply must sound like the turn, syllable by syllable."""
    a, b = reference.astype(float), heard.astype(float)
    n = len(a) + len(b)
    lags = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: len(b)]
    lag = int(np.argmax(lags))
    aligned = b[lag : lag + len(a)]
    usable = min(len(a), len(aligned)) // FRAME * FRAME
    windows = [np.sqrt((x[:usable].reshape(-1, FRAME) ** 2).mean(axis=1)) for x in (a, aligned)]
    return float(np.corrcoef(*windows)[0, 1])


async def test_a_turn_is_marked_and_said_back(parrot_stack):
    client, log = await talking_client(parrot_stack)
    try:
        client.channel.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "instructions": "repeat",
                        "audio": {
                            "input": {
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}
                            }
                        },
                    },
                }
            )
        )
        updated = await log.wait_for("session.updated")
        turn = updated["session"]["audio"]["input"]["turn_detection"]
        assert turn["silence_duration_ms"] == 400 and updated["session"]["instructions"] == "repeat"

        speech = speech_pcm(UTTERANCE)
        client.track.play(speech)
        await log.wait_for("input_audio_buffer.speech_started")
        stopped = await log.wait_for("input_audio_buffer.speech_stopped", timeout=15)
        committed = await log.wait_for("input_audio_buffer.committed")
        assert committed["item_id"] == stopped["item_id"]
        created = await log.wait_for("response.created")
        await log.wait_for("output_audio_buffer.started")
        stopped_at = time.monotonic()
        await log.wait_for("output_audio_buffer.stopped", timeout=15)
        done = await log.wait_for("response.done")
        assert done["response"]["id"] == created["response"]["id"]
        assert done["response"]["status"] == "completed"

        reply = [p for at, _, p in client.received if at >= stopped_at - 0.5]
        heard = np.concatenate(decode_opus(reply))
        assert len(heard) > 0.8 * len(speech) * (1 - 0.3)  # most of the turn came back
        correlation = envelope_correlation(speech, heard)
        print(f"reply envelope correlation {correlation:.2f}")
        assert correlation > 0.9
    finally:
        await client.close()


async def test_talking_over_the_reply_stops_it_within_150_ms(parrot_stack):
    client, log = await talking_client(parrot_stack)
    try:
        client.track.play(speech_pcm(UTTERANCE))
        await log.wait_for("output_audio_buffer.started", timeout=15)
        await asyncio.sleep(0.8)  # the reply is playing

        interruption = speech_pcm(INTERRUPTION)
        asked = time.monotonic()
        client.track.play(interruption)
        cleared = await log.wait_for("output_audio_buffer.cleared", after=asked)
        await log.wait_for("input_audio_buffer.speech_started", after=asked)
        done = await log.wait_for("response.done", after=0)
        assert cleared["response_id"] == done["response"]["id"]
        await asyncio.sleep(0.5)  # anything still coming would arrive by now

        sent_at = client.track.signal_sent_at
        assert sent_at is not None and sent_at >= asked
        onset = sent_at + onset_s(interruption)
        reply_packets = [at for at, _, _ in client.received if asked - 1.0 <= at]
        last = max(at for at in reply_packets if at < onset + 1.0)
        latency = last - onset
        print(f"barge-in: last reply packet {1000 * latency:.0f} ms after the speech onset")
        assert latency <= BARGE_IN_BUDGET
        assert not [at for at in reply_packets if onset + BARGE_IN_BUDGET < at < onset + 1.0]
    finally:
        await client.close()
