"""``parrot``: says each of the caller's turns back to them, and stops when talked over.

It needs no model and no network, so the whole conversation machinery (turn detection, replies,
barge-in, the Realtime events around them) can be heard and tested offline. The Call marks the
turns; the parrot keeps the last minute of the caller's audio on the call's input timeline and,
when a turn is committed, cuts that turn out and says it. ``response.create`` says the last turn
again. Barge-in needs nothing here: the Call drops the reply the moment the caller talks.
"""

from __future__ import annotations

import asyncio
from collections import deque

from voicewire.agents import realtime_events as rt
from voicewire.agents.api import AudioFrame, Call
from voicewire.agents.turn_detection import DEFAULTS

KEPT_MS = 60_000


class ParrotAgent:
    session_defaults = rt.with_turn_detection(dict(DEFAULTS))
    handles = frozenset({"response.create"})

    async def run(self, call: Call) -> None:
        heard: deque[AudioFrame] = deque(maxlen=KEPT_MS // 20)
        listening = asyncio.create_task(_listen(call, heard))
        last_turn = b""
        try:
            async for event in call.events():
                if event["type"] == "input_audio_buffer.committed":
                    last_turn = _cut(heard, event["audio_start_ms"], event["audio_end_ms"])
                    settings = rt.turn_detection(call.session)
                    if settings is not None and settings.get("create_response", True):
                        _reply(call, last_turn)
                elif event["type"] == "response.create":
                    _reply(call, last_turn)
        finally:
            listening.cancel()


async def _listen(call: Call, heard: deque[AudioFrame]) -> None:
    async for frame in call.audio():
        heard.append(frame)


def _cut(heard: deque[AudioFrame], start_ms: int, end_ms: int) -> bytes:
    return b"".join(f.pcm for f in heard if start_ms <= f.start_ms < end_ms)


def _reply(call: Call, pcm: bytes) -> None:
    with call.response():
        call.say(pcm)
