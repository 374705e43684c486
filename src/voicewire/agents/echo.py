"""``echo``: says every frame back the moment it arrives, to measure and hear the whole path."""

from __future__ import annotations

from voicewire.agents.api import Call


class EchoAgent:
    async def run(self, call: Call) -> None:
        async for frame in call.audio():
            call.say(frame.pcm)
