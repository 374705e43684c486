"""The agent's side of a call, against a recording outlet (the transceiver's side is covered
end to end in tests/e2e)."""

from __future__ import annotations

import asyncio

from voicewire.agents.api import FRAME_BYTES, AudioFrame, Call
from voicewire.rtc.audio_stream import AudioStats


class RecordingOutlet:
    def __init__(self) -> None:
        self.queued: list[bytes] = []
        self.cleared = 0

    def queue_audio(self, pcm: bytes) -> None:
        self.queued.append(pcm)

    def clear_audio(self) -> float:
        self.cleared += 1
        return 120.0

    def stats(self) -> AudioStats:
        return AudioStats(None, 0.0, 0, 0, 0, 0.0)


def frame(n: int) -> AudioFrame:
    return AudioFrame(bytes([n]) * FRAME_BYTES, False)


async def test_frames_arrive_in_order_and_iteration_ends_with_the_call():
    call = Call("c1", RecordingOutlet())
    for n in range(3):
        call.deliver(frame(n))
    call.end("hangup")
    seen = [f.pcm[0] async for f in call.audio()]
    assert seen == [0, 1, 2]
    assert await call.wait_closed() == "hangup"


async def test_a_slow_agent_loses_the_oldest_frames_not_the_newest():
    call = Call("c1", RecordingOutlet(), max_buffered_frames=5)
    for n in range(8):
        call.deliver(frame(n))
    call.end("hangup")
    assert [f.pcm[0] async for f in call.audio()] == [4, 5, 6, 7]  # room kept for the end
    assert call.dropped_frames == 4


async def test_say_and_interrupt_reach_the_transceiver_until_the_call_ends():
    outlet = RecordingOutlet()
    call = Call("c1", outlet)
    call.say(b"\x00\x01" * 10)
    call.say(b"")  # nothing to send
    assert call.interrupt() == 120.0
    call.end("hangup")
    call.say(b"\x00\x01")
    assert outlet.queued == [b"\x00\x01" * 10]
    assert outlet.cleared == 1


async def test_an_agent_waiting_for_audio_wakes_when_the_call_ends():
    call = Call("c1", RecordingOutlet())

    async def agent() -> int:
        return len([f async for f in call.audio()])

    task = asyncio.create_task(agent())
    await asyncio.sleep(0)
    call.end("consent_lost")
    assert await asyncio.wait_for(task, 1) == 0
    assert call.closed and call.close_reason == "consent_lost"
