"""``voicewire agent-server`` in this process, driven over a real WebSocket as a Realtime client
would drive it: real speech in, the parrot's reply out, and every event on the way checked.

The reply is judged by what it sounds like: the RMS envelope of the audio that came back, in
20 ms windows, must follow the envelope of the speech that was sent from where the turn began
(correlation > 0.8), and the reply must be exactly as long as the turn the server reported.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from tests.speech import speech_pcm
from voicewire.agents.agent_server import MAX_MESSAGE, AgentServer
from voicewire.agents.api import Agent, Call
from voicewire.agents.echo import EchoAgent
from voicewire.agents.parrot import ParrotAgent
from voicewire.agents.realtime_socket import DELTA_MS, OUTPUT_LEAD_MS, Outbox
from voicewire.agents.resample import Resampler
from voicewire.gateway.keys import KeyStore
from voicewire.http_service import start_site

RATE = 24_000  # the WebSocket's audio rate
SPEECH = "Hello, this is a parrot test, one two three."
WINDOW = RATE // 50  # 20 ms


def speech_24k() -> np.ndarray:
    """The test sentence as int16 samples at 24 kHz (made at 48 kHz, like every fixture)."""
    return np.frombuffer(Resampler(48_000, RATE).convert(speech_pcm(SPEECH).tobytes()), "<i2")


def with_silence(speech: np.ndarray, seconds: float) -> bytes:
    return np.concatenate([speech, np.zeros(int(RATE * seconds), "<i2")]).tobytes()


def envelope(samples: np.ndarray) -> np.ndarray:
    """RMS level in 20 ms windows."""
    usable = samples[: samples.size // WINDOW * WINDOW].astype(np.float64).reshape(-1, WINDOW)
    return np.sqrt((usable**2).mean(axis=1))


def aligned_correlation(sent: np.ndarray, heard: np.ndarray, start_ms: int) -> float:
    """How well ``heard``'s envelope follows ``sent``'s from ``start_ms`` on: the best
    correlation within 100 ms of that alignment (resampling and framing shift it a little)."""
    a, b = envelope(sent), envelope(heard)
    best = -1.0
    for lag in range(max(0, start_ms // 20 - 5), start_ms // 20 + 6):
        x = a[lag : lag + b.size]
        y = b[: x.size]
        if x.size > 25 and x.std() > 0 and y.std() > 0:
            best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best


class RealtimeClient:
    """A Realtime WebSocket client that keeps every event it receives, with its arrival time."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.arrived: list[float] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(event))

    async def append(self, pcm: bytes, chunk_ms: int = 40, paced: bool = False) -> None:
        """Send ``pcm`` (24 kHz) in ``chunk_ms`` appends, in real time if ``paced``."""
        step = RATE * 2 * chunk_ms // 1000
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            audio = base64.b64encode(pcm[offset : offset + step]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})
            if paced:
                await asyncio.sleep(
                    max(0.0, start + (index + 1) * chunk_ms / 1000 - time.monotonic())
                )

    async def next(self, *types: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event of one of ``types``; every event before it is kept too."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.receive()
                assert message.type is aiohttp.WSMsgType.TEXT, f"the socket ended: {message}"
                event = json.loads(message.data)
                self.events.append(event)
                self.arrived.append(time.monotonic())
                if event["type"] in types:
                    return event

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever arrives in the next ``seconds``."""
        before = len(self.events)
        with contextlib.suppress(TimeoutError):
            await self.next("never sent", timeout=seconds)
        return self.events[before:]

    def types(self) -> list[str]:
        """Event types in order, the audio deltas left out."""
        return [e["type"] for e in self.events if e["type"] != "response.output_audio.delta"]

    def deltas(self, response_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == "response.output_audio.delta"
            and (response_id is None or e["response_id"] == response_id)
        ]

    def reply_events(self, response_id: str) -> list[str]:
        """The types of one reply's events in order, its run of deltas as one."""
        kinds: list[str] = []
        for event in self.events:
            named = event.get("response_id", event.get("response", {}).get("id"))
            if named == response_id and kinds[-1:] != [event["type"]]:
                kinds.append(event["type"])
        return kinds

    def heard(self, response_id: str) -> np.ndarray:
        pcm = b"".join(base64.b64decode(d["delta"]) for d in self.deltas(response_id))
        return np.frombuffer(pcm, "<i2")

    def when(self, kind: str) -> float:
        return next(t for e, t in zip(self.events, self.arrived, strict=True) if e["type"] == kind)


@dataclass
class Running:
    server: AgentServer
    runner: web.AppRunner
    url: str


@contextlib.asynccontextmanager
async def serving(
    agent_factory: Callable[[], Agent] = ParrotAgent, api_keys: tuple[str, ...] = ()
) -> AsyncIterator[Running]:
    server = AgentServer(agent_factory, KeyStore(api_keys), "test")
    runner = server.runner()
    await runner.setup()
    host, port = await start_site(runner, ("127.0.0.1", 0))
    try:
        yield Running(server, runner, f"http://{host}:{port}")
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def connected(
    agent_factory: Callable[[], Agent] = ParrotAgent, query: str = ""
) -> AsyncIterator[tuple[Running, RealtimeClient]]:
    async with serving(agent_factory) as running, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{running.url}/v1/realtime{query}") as ws:
            client = RealtimeClient(ws)
            await client.next("session.created")
            yield running, client


async def test_the_parrot_says_a_spoken_turn_back_as_streamed_audio_deltas():
    speech = speech_24k()
    async with connected(query="?model=parrot-1") as (_, client):
        session = client.events[0]["session"]
        assert session["model"] == "parrot-1" and session["id"].startswith("sess_")
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        sending = asyncio.create_task(client.append(with_silence(speech, 1.0), paced=True))
        started = await client.next("input_audio_buffer.speech_started")
        stopped = await client.next("input_audio_buffer.speech_stopped")
        committed = await client.next("input_audio_buffer.committed")
        created = await client.next("response.created")
        added = await client.next("response.output_item.added")
        done = await client.next("response.done")
        await sending

    assert client.types() == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    speech_ms = speech.size * 1000 // RATE
    assert 0 <= started["audio_start_ms"] < 300
    assert speech_ms - 600 < stopped["audio_end_ms"] <= speech_ms  # espeak ends on a breath
    assert committed["item_id"] == started["item_id"] == stopped["item_id"]
    response_id = created["response"]["id"]
    assert done["response"]["id"] == response_id
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["id"] == added["item"]["id"]
    deltas = client.deltas()
    assert {(d["response_id"], d["item_id"]) for d in deltas} == {
        (response_id, added["item"]["id"])
    }
    assert all(len(base64.b64decode(d["delta"])) <= DELTA_MS * RATE * 2 // 1000 for d in deltas)

    heard = client.heard(response_id)
    turn_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
    assert heard.size * 1000 // RATE == turn_ms  # the turn, all of it and nothing more
    assert aligned_correlation(speech, heard, started["audio_start_ms"]) > 0.8
    # Streamed: all but the first OUTPUT_LEAD_MS of the reply left in real time.
    streaming = client.when("response.done") - client.when("response.content_part.added")
    assert streaming > (turn_ms - OUTPUT_LEAD_MS) / 1000 - 0.1


@pytest.mark.parametrize(
    ("interruption", "reason"),
    [("response.cancel", "client_cancelled"), ("speech", "turn_detected")],
)
async def test_a_streaming_reply_stops_part_way_when_cancelled_or_talked_over(interruption, reason):
    speech = speech_24k()
    async with connected() as (_, client):
        await client.append(with_silence(speech, 0.8))  # faster than real time: turns still work
        started = await client.next("input_audio_buffer.speech_started")
        stopped = await client.next("input_audio_buffer.speech_stopped")
        first = await client.next("response.output_audio.delta")
        if interruption == "speech":
            await client.append(speech[: RATE // 2].tobytes())
        else:
            await client.send({"type": "response.cancel"})
        done = await client.next("response.done")
        late = await client.quiet(0.3)

    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": reason}
    assert done["response"]["output"][0]["status"] == "incomplete"
    types = client.types()
    assert types[types.index("response.done") - 3 :] == [
        "response.output_audio.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
        *[e["type"] for e in late],
    ]
    talked_over = interruption == "speech"
    assert [e["type"] for e in late] == ["input_audio_buffer.speech_started"] * talked_over
    turn_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
    heard_ms = client.heard(first["response_id"]).size * 1000 // RATE
    # The lead left at once, then a delta every DELTA_MS until the interruption (≤ 0.5 s late).
    assert OUTPUT_LEAD_MS - DELTA_MS <= heard_ms <= OUTPUT_LEAD_MS + 5 * DELTA_MS < turn_ms - 300


async def test_audio_said_outside_a_reply_streams_as_deltas_that_name_no_response():
    speech = speech_24k()[:RATE]  # 1 s: within the lead, so it all leaves at once
    async with connected(EchoAgent) as (_, client):
        await client.append(speech.tobytes())
        while len(client.deltas()) * DELTA_MS < 1000:  # a delta carries at most DELTA_MS
            await client.next("response.output_audio.delta")
        await client.quiet(0.1)

    assert client.types() == ["session.created"]  # no turns, no replies: just the echo
    deltas = client.deltas()
    assert {(d["response_id"], d["item_id"]) for d in deltas} == {(None, None)}
    heard = np.frombuffer(b"".join(base64.b64decode(d["delta"]) for d in deltas), "<i2")
    assert heard.size == speech.size
    assert aligned_correlation(speech, heard, 0) > 0.8


async def test_with_turn_detection_off_commit_and_response_create_make_the_parrot_answer():
    speech = speech_24k()[: RATE * 3 // 2]
    async with connected() as (_, client):
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "repeat after me",
                    "audio": {"input": {"turn_detection": None}},
                },
            }
        )
        updated = (await client.next("session.updated"))["session"]
        assert updated["instructions"] == "repeat after me"
        assert updated["audio"]["input"]["turn_detection"] is None
        audio = with_silence(speech, 0.2)
        await client.append(audio)
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.next("input_audio_buffer.committed")
        # Twice: the second reply begins before any of the first has left.
        await client.send({"type": "response.create"})
        await client.send({"type": "response.create"})
        done = [await client.next("response.done") for _ in range(2)]

    assert "input_audio_buffer.speech_started" not in client.types()
    assert committed["previous_item_id"] is None
    for reply in done:
        response_id = reply["response"]["id"]
        assert reply["response"]["status"] == "completed"
        assert client.reply_events(response_id) == [
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_audio.delta",
            "response.output_audio.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        ]
        heard = client.heard(response_id)
        assert heard.size * 1000 // RATE == len(audio) * 1000 // (2 * RATE) // 20 * 20
        assert aligned_correlation(speech, heard, 0) > 0.8


async def test_malformed_messages_get_error_events_and_the_session_goes_on():
    async with connected() as (running, client):
        ws = client.ws
        await ws.send_bytes(b"\x00\x01")
        await ws.send_str("{not json")
        await client.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
        await client.send({"type": "input_audio_buffer.append", "audio": "AAAA", "extra": 1})
        await client.send({"type": "no.such.event"})
        await client.send({"type": "input_audio_buffer.commit", "event_id": "commit-1"})
        errors = [(await client.next("error"))["error"] for _ in range(6)]
        await client.send(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
            }
        )
        await client.next("session.updated")
        await client.send({"type": "input_audio_buffer.append", "audio": "AAAA"})
        errors.append((await client.next("error"))["error"])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.url}/metrics") as reply:
                metrics = await reply.text()

    assert "binary" in errors[0]["message"]
    assert "not JSON" in errors[1]["message"]
    assert errors[2]["param"] == "audio"
    assert (errors[3]["param"], errors[3]["code"]) == ("extra", "unknown_parameter")
    assert (errors[4]["param"], errors[4]["code"]) == ("type", "unknown_event")
    assert errors[5]["event_id"] == "commit-1"  # turn detection is on: no commits by hand
    assert errors[6]["param"] == "session.audio.input.format.type"
    assert 'voicewire_agent_server_events_in_total{type="invalid"} 3.0' in metrics
    assert 'voicewire_agent_server_events_in_total{type="session.update"} 1.0' in metrics
    assert 'voicewire_agent_server_errors_total{code="unknown_event"} 1.0' in metrics
    assert 'voicewire_agent_server_events_out_total{type="error"} 7.0' in metrics
    assert "voicewire_agent_server_sessions 1.0" in metrics


async def test_a_message_over_the_size_limit_ends_the_session():
    async with connected() as (running, client):
        with contextlib.suppress(ConnectionError):  # the server may hang up before it is all sent
            await client.ws.send_str(" " * (MAX_MESSAGE + 1))
        message = await asyncio.wait_for(client.ws.receive(), 5)
        async with asyncio.timeout(2):
            while running.server.sockets:
                await asyncio.sleep(0.01)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    closed = running.server.metrics.registry.get_sample_value(
        "voicewire_agent_server_sessions_closed_total", {"reason": "protocol_error"}
    )
    assert closed == 1


async def test_api_keys_guard_the_upgrade():
    async with serving(api_keys=("key-1",)) as running, aiohttp.ClientSession() as http:
        url = f"{running.url}/v1/realtime"
        async with http.get(url) as reply:
            assert reply.status == 401
            assert (await reply.json())["error"]["type"] == "authentication_error"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Authorization": "Bearer key-2"})
        assert refused.value.status == 401
        async with http.get(url, headers={"Authorization": "Bearer key-1"}) as reply:
            assert reply.status == 400  # the right key, but not a WebSocket upgrade
        async with http.ws_connect(url, headers={"Authorization": "Bearer key-1"}) as ws:
            assert json.loads(await ws.receive_str())["type"] == "session.created"
        for path in ("/healthz", "/readyz"):
            async with http.get(running.url + path) as reply:
                assert reply.status == 200


async def test_a_browser_key_rides_in_a_subprotocol_and_realtime_is_answered():
    """A browser's WebSocket cannot send headers: OpenAI's convention offers the key as a
    subprotocol beside ``realtime``, and the server must answer one the client offered."""
    async with serving(api_keys=("key-1",)) as running, aiohttp.ClientSession() as http:
        url = f"{running.url}/v1/realtime"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, protocols=("realtime", "openai-insecure-api-key.key-2"))
        assert refused.value.status == 401
        offered = ("realtime", "openai-insecure-api-key.key-1", "openai-beta.realtime-v1")
        async with http.ws_connect(url, protocols=offered) as ws:
            assert ws.protocol == "realtime"
            assert json.loads(await ws.receive_str())["type"] == "session.created"


async def test_draining_takes_no_new_sessions_and_ends_when_the_open_ones_have():
    async with serving() as running, aiohttp.ClientSession() as http:
        url = f"{running.url}/v1/realtime"
        async with http.ws_connect(url) as ws:
            client = RealtimeClient(ws)
            await client.next("session.created")
            draining = asyncio.create_task(running.server.drain(30.0, asyncio.Event()))
            await asyncio.sleep(0.05)
            async with http.get(running.url + "/readyz") as reply:
                assert reply.status == 503
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
            assert refused.value.status == 503
            await client.send({"type": "session.update", "session": {"instructions": "still"}})
            assert (await client.next("session.updated"))["session"]["instructions"] == "still"
            assert not draining.done()
        await asyncio.wait_for(draining, 2)  # the last session closed: no need to wait 30 s


async def test_stopping_the_server_closes_every_session_as_going_away():
    async with serving() as running, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{running.url}/v1/realtime") as ws:
            assert json.loads(await ws.receive_str())["type"] == "session.created"
            stopping = asyncio.create_task(running.runner.cleanup())
            message = await asyncio.wait_for(ws.receive(), 5)
            await asyncio.wait_for(stopping, 5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert (message.data, message.extra) == (1001, "shutdown")


class BriefAgent:
    """Says one last thing and returns, or fails."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def run(self, call: Call) -> None:
        call.send_event({"type": "rate_limits.updated", "rate_limits": []})
        if self.fail:
            raise RuntimeError("the agent broke")


@pytest.mark.parametrize(
    ("fail", "code", "reason"), [(False, 1000, "agent_ended"), (True, 1011, "agent_failed")]
)
async def test_when_the_agent_returns_its_last_words_go_out_then_the_socket_closes(
    fail, code, reason
):
    async with connected(lambda: BriefAgent(fail)) as (_, client):
        await client.next("rate_limits.updated")
        message = await asyncio.wait_for(client.ws.receive(), 5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert (message.data, message.extra) == (code, reason)


async def test_a_client_that_stops_reading_is_cut_off_not_buffered_for():
    class StuckSocket:
        async def send_str(self, text: str) -> None:
            await asyncio.Event().wait()  # the client's TCP window never opens

    outbox = Outbox(StuckSocket(), limit=1000)  # type: ignore[arg-type]
    writer = outbox.start()
    accepted = [outbox.put("x" * 100) for _ in range(10)]
    await asyncio.sleep(0)  # the writer takes one message and waits on the client
    accepted += [outbox.put("x" * 100) for _ in range(5)]
    await asyncio.wait({writer}, timeout=1)
    assert accepted == [True] * 11 + [False] * 4
    assert outbox.overflowed and writer.cancelled()
    assert outbox.size <= 1000
