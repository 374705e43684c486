"""The Agent API: what a model-side program sees of a live call (DESIGN §7).

An agent is any object with ``async def run(self, call: Call) -> None``. The transceiver starts
it when the call connects and cancels it when the call ends. Inside, the agent iterates over the
caller's audio, queues its own audio with ``say`` (which returns at once: the transceiver paces
it out in real time), and cuts itself off with ``interrupt`` when the caller talks over it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from voicewire.rtc.audio_stream import AudioReceived as AudioFrame
from voicewire.rtc.audio_stream import AudioStats as CallStats
from voicewire.rtc.opus import FRAME_BYTES, SAMPLE_RATE

# Audio crosses the Agent API as PCM16 little-endian mono at SAMPLE_RATE (48 kHz) in 20 ms
# frames of FRAME_BYTES; ``say`` takes any length.

__all__ = ["Agent", "AudioFrame", "Call", "CallStats", "FRAME_BYTES", "SAMPLE_RATE"]


class CallOutlet(Protocol):
    """What the transceiver provides to a Call; agents never see it."""

    def queue_audio(self, pcm: bytes) -> None: ...
    def clear_audio(self) -> float: ...
    def stats(self) -> CallStats: ...
    def send_event(self, event: dict[str, Any]) -> bool: ...


class Call:
    """One live call, from the agent's side."""

    def __init__(self, call_id: str, outlet: CallOutlet, max_buffered_frames: int = 50) -> None:
        self.call_id = call_id
        self._outlet = outlet
        self._frames: asyncio.Queue[AudioFrame | None] = asyncio.Queue(max_buffered_frames)
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._closed = asyncio.Event()
        self.close_reason: str | None = None
        self.dropped_frames = 0
        """Input frames thrown away because the agent fell more than a second behind."""

    async def audio(self) -> AsyncIterator[AudioFrame]:
        """The caller's audio, frame by frame, until the call ends."""
        while True:
            frame = await self._frames.get()
            if frame is None:
                return
            yield frame

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The client's JSON events (the ``oai-events`` data channel), until the call ends."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    def send_event(self, event: dict[str, Any]) -> bool:
        """Send a JSON event to the client; False if it has no open ``oai-events`` channel.

        An ``event_id`` is added when the event has none.
        """
        return not self._closed.is_set() and self._outlet.send_event(event)

    def say(self, pcm: bytes) -> None:
        """Queue PCM16 mono 48 kHz audio of any length to play to the caller; returns at once."""
        if pcm and not self._closed.is_set():
            self._outlet.queue_audio(pcm)

    def interrupt(self) -> float:
        """Drop all queued audio now (barge-in); return the milliseconds of it that were played.

        "Played" counts from the moment the queue last went from empty to speaking, or from the
        previous interrupt, so an agent learns how much of its current utterance the caller heard.
        """
        return self._outlet.clear_audio()

    def stats(self) -> CallStats:
        return self._outlet.stats()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> str | None:
        await self._closed.wait()
        return self.close_reason

    # The transceiver's side.

    def deliver(self, frame: AudioFrame) -> None:
        """Hand the agent a frame; if it is a second behind, drop the oldest rather than lag."""
        if self._frames.full():
            self._frames.get_nowait()
            self.dropped_frames += 1
        self._frames.put_nowait(frame)

    def deliver_event(self, event: dict[str, Any]) -> None:
        self._events.put_nowait(event)

    def end(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        if self._frames.full():  # the end-of-call marker must fit
            self._frames.get_nowait()
            self.dropped_frames += 1
        self._frames.put_nowait(None)
        self._events.put_nowait(None)


class Agent(Protocol):
    async def run(self, call: Call) -> None: ...
