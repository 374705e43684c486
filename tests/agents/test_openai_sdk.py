"""The official ``openai`` SDK, unchanged, holds a conversation with ``voicewire agent-server``.

The server runs as a real process (``python -m voicewire agent-server --listen 127.0.0.1:0``,
its port read from the JSON ``serving`` log line) with an API key required, and the SDK is
pointed at it the way it is pointed at any OpenAI-compatible service: ``base_url`` ending in
``/v1``, from which ``client.realtime.connect(model=...)`` makes
``ws://HOST:PORT/v1/realtime?model=...`` and sends ``Authorization: Bearer <api_key>`` (no
subprotocol). Everything is read through the SDK's own typed events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeServerEvent,
    ResponseAudioDeltaEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)

from tests.agents.test_agent_server import RATE, aligned_correlation, speech_24k, with_silence

API_KEY = "sdk-test-key"
START_TIMEOUT = 15.0

Event = TypeVar("Event")


@pytest.fixture
async def agent_server() -> AsyncIterator[str]:
    """``voicewire agent-server`` as a process; yields its ``http://HOST:PORT/v1`` base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEWIRE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "voicewire", "agent-server", "--listen", "127.0.0.1:0", "--agent", "parrot"),
        env={**env, "VOICEWIRE_API_KEYS": API_KEY},
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "agent-server exited before serving:\n" + "".join(log)
                log.append(line)
                record = _json(line)
                if record.get("msg") == "serving":
                    host, port = record["listen"]
                    break
        draining = asyncio.create_task(_drain(process.stderr, log))  # a full pipe would block it
        yield f"http://{host}:{port}/v1"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0, "".join(log)
        await draining
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _json(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


async def _drain(stream: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stream.readline():
        log.append(line.decode())


async def until(
    connection: AsyncRealtimeConnection, kind: type[Event], seen: list[RealtimeServerEvent]
) -> Event:
    """The next event of class ``kind``; every event on the way is kept in ``seen``."""
    async with asyncio.timeout(5):
        while True:
            event = await connection.recv()
            seen.append(event)
            if isinstance(event, kind):
                return event


async def test_the_openai_sdk_holds_a_conversation_with_the_agent_server(agent_server: str):
    client = AsyncOpenAI(base_url=agent_server, api_key=API_KEY)
    speech = speech_24k()
    audio = with_silence(speech, 0.8)
    seen: list[RealtimeServerEvent] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        created = await until(connection, SessionCreatedEvent, seen)
        assert created.session.model == "gpt-realtime"
        await connection.session.update(
            session={
                "type": "realtime",
                "instructions": "say it back",
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}
                },
            }
        )
        updated = await until(connection, SessionUpdatedEvent, seen)
        assert updated.session.instructions == "say it back"
        assert updated.session.audio.input.turn_detection.silence_duration_ms == 300
        step = RATE * 2 // 10  # 100 ms per append
        for offset in range(0, len(audio), step):
            chunk = base64.b64encode(audio[offset : offset + step]).decode()
            await connection.input_audio_buffer.append(audio=chunk)
        started = await until(connection, InputAudioBufferSpeechStartedEvent, seen)
        stopped = await until(connection, InputAudioBufferSpeechStoppedEvent, seen)
        committed = await until(connection, InputAudioBufferCommittedEvent, seen)
        response = await until(connection, ResponseCreatedEvent, seen)
        done = await until(connection, ResponseDoneEvent, seen)

    assert seen[0] is created
    assert started.item_id == stopped.item_id == committed.item_id
    assert done.response.id == response.response.id
    assert done.response.status == "completed"
    deltas = [e for e in seen if isinstance(e, ResponseAudioDeltaEvent)]
    assert {d.response_id for d in deltas} == {done.response.id}
    heard = np.frombuffer(b"".join(base64.b64decode(d.delta) for d in deltas), "<i2")
    assert heard.size * 1000 // RATE == stopped.audio_end_ms - started.audio_start_ms
    assert aligned_correlation(speech, heard, started.audio_start_ms) > 0.8


async def test_the_sdk_with_a_wrong_key_is_refused_at_the_upgrade(agent_server: str):
    client = AsyncOpenAI(base_url=agent_server, api_key="not-the-key")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with client.realtime.connect(model="gpt-realtime"):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["type"] == "authentication_error"
