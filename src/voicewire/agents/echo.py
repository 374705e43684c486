"""``echo``: says every frame back the moment it arrives, to measure and hear the whole path.

Turn detection is off by default: an echo talks over the caller all the time, and barge-in
would cut it off.
"""

from __future__ import annotations

from voicewire.agents import realtime_events as rt
from voicewire.agents.api import Call


class EchoAgent:
    session_defaults = rt.with_turn_detection(None)

    async def run(self, call: Call) -> None:
        async for frame in call.audio():
            call.say(frame.pcm)
