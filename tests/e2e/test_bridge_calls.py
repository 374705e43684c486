"""Calls from aiortc through relay and transceiver to the ``realtime-bridge``, and on over a
real WebSocket to ``voicewire agent-server`` running the parrot: the whole path a call to a
model service takes, with real speech, judged by what the client hears and the events it gets.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.agents.test_realtime_bridge import free_port
from tests.e2e.aiortc_client import decode_opus
from tests.e2e.test_parrot_calls import envelope_correlation, talking_client
from tests.e2e.transceiver_checks import closed_count, sessions_ended
from tests.speech import speech_pcm
from voicewire.agents.agent_server import PATH, AgentServer
from voicewire.agents.parrot import ParrotAgent
from voicewire.agents.realtime_bridge import Backend
from voicewire.agents.registry import BRIDGE, agent_factory
from voicewire.gateway.keys import KeyStore
from voicewire.http_service import start_site
from voicewire.serve import EmbeddedStack

KEY = "sk-e2e"
UTTERANCE = "Bridges carry voices to the model and back again."
INTERRUPTION = "Hold on, I have another question."


@pytest.fixture
async def model_url():
    """``agent-server`` with the parrot, in this process, needing ``KEY``."""
    runner = AgentServer(ParrotAgent, KeyStore((KEY,)), "parrot").runner()
    await runner.setup()
    host, port = await start_site(runner, ("127.0.0.1", 0))
    yield f"ws://{host}:{port}{PATH}"
    await runner.cleanup()


def bridge_stack(url: str) -> EmbeddedStack:
    return EmbeddedStack(
        http=("127.0.0.1", 0),
        udp=("127.0.0.1", 0),
        agent_factory=agent_factory(BRIDGE, Backend(url, KEY)),
    )


async def test_a_turn_goes_to_the_backend_and_its_reply_comes_back_as_speech(model_url):
    async with bridge_stack(model_url) as stack:
        client, log = await talking_client(stack)
        try:
            speech = speech_pcm(UTTERANCE)
            client.track.play(speech)  # then silence, so the backend's turn detection ends it
            await log.wait_for("input_audio_buffer.speech_stopped", timeout=15)
            created = await log.wait_for("response.created", timeout=5)
            started = await log.wait_for("output_audio_buffer.started")
            started_at = log.time_of("output_audio_buffer.started")
            turn_gap = started_at - log.time_of("input_audio_buffer.speech_stopped")
            assert started["response_id"] == created["response"]["id"]  # the backend's id
            done = await log.wait_for("response.done")
            assert done["response"]["status"] == "completed"
            await log.wait_for("output_audio_buffer.stopped", timeout=15)

            kinds = [event["type"] for _, event in log.events]
            assert kinds.count("session.created") == 1  # voicewire's, not the backend's too
            assert kinds.count("input_audio_buffer.speech_started") == 1  # the backend's only
            started = await log.wait_for("input_audio_buffer.speech_started")
            committed = await log.wait_for("input_audio_buffer.committed")
            assert started["item_id"] == committed["item_id"]  # one id for the user's turn
            assert not [kind for kind in kinds if kind.endswith("audio.delta")]
            assert "response.output_item.added" in kinds

            reply = [p for at, _, p in client.received if at >= started_at - 0.5]
            heard = np.concatenate(decode_opus(reply))
            correlation = envelope_correlation(speech, heard)
            print(
                f"speech_stopped → reply playing {1000 * turn_gap:.0f} ms, "
                f"envelope correlation {correlation:.2f}"
            )
            assert correlation > 0.9
        finally:
            await client.close()


async def test_talking_over_the_reply_cuts_it_and_truncates_it_at_the_backend(model_url):
    async with bridge_stack(model_url) as stack:
        client, log = await talking_client(stack)
        try:
            client.track.play(speech_pcm(UTTERANCE))
            added = await log.wait_for("response.output_item.added", timeout=15)
            await log.wait_for("output_audio_buffer.started")
            playing_since = log.time_of("output_audio_buffer.started")
            await asyncio.sleep(0.8)

            asked = time.monotonic()
            client.track.play(speech_pcm(INTERRUPTION))
            await log.wait_for("output_audio_buffer.cleared", after=asked)
            cleared_at = log.time_of("output_audio_buffer.cleared", after=asked)
            truncated = await log.wait_for("conversation.item.truncated", after=asked)
            assert truncated["item_id"] == added["item"]["id"]  # the backend's item
            heard_ms = 1000 * (cleared_at - playing_since)
            print(f"heard {heard_ms:.0f} ms; the backend truncated at {truncated['audio_end_ms']}")
            assert abs(truncated["audio_end_ms"] - heard_ms) < 100

            await asyncio.sleep(1.0)  # the interruption is still being spoken: no reply yet
            late = [at for at, _, _ in client.received if cleared_at + 0.1 < at < cleared_at + 1]
            assert not late, f"{len(late)} packets of the cut reply after the cut"
        finally:
            await client.close()


async def test_a_backend_that_is_down_gets_the_client_an_error_and_ends_the_call():
    async with bridge_stack(f"ws://127.0.0.1:{free_port()}{PATH}") as stack:
        client, log = await talking_client(stack)
        try:
            error = (await log.wait_for("error"))["error"]
            assert (error["type"], error["code"]) == ("server_error", "backend_unavailable")
            await sessions_ended(stack, timeout=5)
            assert stack.transceiver.indexes_empty()
            assert closed_count(stack, "agent_ended") == 1
        finally:
            await client.close()
