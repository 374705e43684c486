"""The realtime bridge against a small Realtime WebSocket backend on a real socket, driven through
a Call with a recording outlet: what the bridge sends the backend, and what reaches the client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from tests.agents.test_call import FRAME, SPEECH, RecordingOutlet, frames_of
from tests.speech import speech_pcm
from voicewire.agents import realtime_events as rt
from voicewire.agents.api import Call
from voicewire.agents.realtime_bridge import PCM, Backend, RealtimeBridge
from voicewire.agents.resample import Resampler
from voicewire.agents.turn_detection import DEFAULTS

KEY = "sk-test"


class ModelServer:
    """A Realtime backend that follows the protocol: it answers session.update, buffers and
    commits appended audio, cancels and truncates, and replies with audio when told to."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.request: web.Request | None = None
        self.ws: web.WebSocketResponse | None = None
        self.closed = asyncio.Event()
        self.reply_id: str | None = None  # the response in progress
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            raise web.HTTPUnauthorized()
        self.request = request
        ws = self.ws = web.WebSocketResponse()
        await ws.prepare(request)
        await self.send({"type": "session.created", "session": {"id": "sess_backend"}})
        async for message in ws:
            event = json.loads(message.data)
            self.received.append(event)
            await self._answer(event)
        self.closed.set()
        return ws

    async def _answer(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.update":
            await self.send({"type": "session.updated", "session": event["session"]})
        elif kind == "input_audio_buffer.append":
            self.audio += base64.b64decode(event["audio"])
        elif kind == "input_audio_buffer.commit":
            await self.send({"type": "input_audio_buffer.committed", "item_id": "item_user"})
        elif kind == "response.cancel":
            if self.reply_id is None:
                await self.send(
                    rt.error(
                        "no response",
                        code="response_cancel_not_active",
                        event_id=event.get("event_id"),
                    )
                )
            else:
                await self.finish("cancelled")
        elif kind == "conversation.item.truncate":
            await self.send({**event, "type": "conversation.item.truncated"})

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        assert self.ws is not None
        if isinstance(event, bytes):
            await self.ws.send_bytes(event)
        else:
            await self.ws.send_str(event if isinstance(event, str) else json.dumps(event))

    async def reply(
        self, pcm: bytes, *, done: bool = True, delta: str = "response.output_audio.delta"
    ) -> tuple[str, str]:
        """A reply saying ``pcm`` (24 kHz), all at once as a model streams it; (response, item)."""
        self.reply_id = rt.new_id("resp")
        item_id = rt.new_id("item")
        ids = {"response_id": self.reply_id, "item_id": item_id, "output_index": 0}
        await self.send({"type": "response.created", "response": {"id": self.reply_id}})
        await self.send({"type": "response.output_item.added", **ids, "item": {"id": item_id}})
        for start in range(0, len(pcm), 4800):  # 100 ms deltas
            chunk = base64.b64encode(pcm[start : start + 4800]).decode()
            await self.send({"type": delta, **ids, "content_index": 0, "delta": chunk})
        await self.send(
            {"type": "response.output_audio_transcript.done", **ids, "transcript": "hi"}
        )
        if done:
            await self.finish("completed")
        return ids["response_id"], item_id

    async def finish(self, status: str) -> None:
        await self.send(
            {"type": "response.done", "response": {"id": self.reply_id, "status": status}}
        )
        self.reply_id = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] == kind]


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    server = ModelServer()
    app = web.Application()
    app.router.add_get("/v1/realtime", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"ws://127.0.0.1:{port}/v1/realtime"
    yield server
    await runner.cleanup()


async def until(predicate: Callable[[], Any], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


class Bridged:
    """A call whose agent is a bridge to ``model``, running."""

    def __init__(self, model: ModelServer, config: dict[str, Any], outlet: RecordingOutlet):
        self.model = model
        self.agent = RealtimeBridge(Backend(model.url, KEY))
        self.outlet = outlet
        self.call = Call.for_agent(self.agent, "c1", outlet, config)
        self.task = asyncio.create_task(self.agent.run(self.call))

    def client_events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.outlet.events if e["type"] == kind]

    async def wait_for_client(self, kind: str, count: int = 1) -> dict[str, Any]:
        await until(lambda: len(self.client_events(kind)) >= count)
        return self.client_events(kind)[count - 1]

    async def wait_for_backend(self, kind: str, count: int = 1) -> dict[str, Any]:
        await until(lambda: len(self.model.of_type(kind)) >= count)
        return self.model.of_type(kind)[count - 1]


@contextlib.asynccontextmanager
async def bridged(
    model: ModelServer, config: dict[str, Any] | None = None, outlet: RecordingOutlet | None = None
) -> AsyncIterator[Bridged]:
    running = Bridged(model, config or {}, outlet or RecordingOutlet())
    try:
        await running.wait_for_backend("session.update")
        await until(lambda: running.call._input is not None)  # the bridge listens to the caller
        yield running
    finally:
        running.call.end("hangup")
        await asyncio.wait_for(running.task, 2)


def tone(ms: int, rate: int = 24000, level: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * level).astype("<i2").tobytes()


async def test_the_backend_gets_the_key_the_model_and_the_call_session_first(model):
    async with bridged(model, {"instructions": "be brief", "model": "client-pick"}):
        first = model.received[0]
        assert model.request is not None and model.request.query["model"] == "gpt-realtime"
        assert first["type"] == "session.update" and first["event_id"].startswith("event_")
        session = first["session"]
        assert session["type"] == "realtime" and session["instructions"] == "be brief"
        assert session["audio"]["input"]["format"] == session["audio"]["output"]["format"] == PCM
        assert session["audio"]["input"]["turn_detection"] == DEFAULTS
        assert "model" not in session  # the operator's choice, not the client's


def test_the_model_in_the_url_wins_and_the_key_stays_out_of_repr():
    backend = Backend("wss://model.example/v1/realtime?model=mine", KEY, "default")
    assert backend.connect_url().query["model"] == "mine"
    assert KEY not in repr(backend)
    assert backend.headers() == {"Authorization": f"Bearer {KEY}"}


async def test_the_callers_voice_reaches_the_backend_as_24khz_pcm_in_40ms_appends(model):
    rng = np.random.default_rng(3)
    voice = (rng.normal(0, 3000, 48000)).astype("<i2")  # one second at 48 kHz
    async with bridged(model) as running:
        for f in frames_of(voice):
            running.call.deliver(f)
        await until(lambda: len(model.audio) >= 24000 * 2 - 1920)
        appends = model.of_type("input_audio_buffer.append")
    expected = Resampler(48000, 24000).convert(voice.tobytes())
    assert bytes(model.audio) == expected[: len(model.audio)]
    assert {len(base64.b64decode(a["audio"])) for a in appends} == {1920}  # 40 ms each


@pytest.mark.parametrize("delta", ["response.output_audio.delta", "response.audio.delta"])
async def test_a_reply_plays_in_its_response_and_its_events_reach_the_client_but_no_delta(
    model, delta
):
    speech = tone(500)
    async with bridged(model) as running:
        outlet = running.outlet
        response_id, _ = await model.reply(speech, delta=delta)
        await running.wait_for_client("response.done")
        assert bytes(outlet.queued) == Resampler(24000, 48000).convert(speech)
        assert {r.id for r in outlet.responses if r is not None} == {response_id}
        assert None not in outlet.responses
        assert outlet.types() == [
            "session.updated",  # the backend's answer to the bridge's session.update
            "response.created",
            "response.output_item.added",
            "output_audio_buffer.started",  # the Call's: the caller starts hearing it
            "response.output_audio_transcript.done",
            "response.done",
        ]
        outlet.advance(running.call, 25)
        stopped = outlet.events[-1]
        assert stopped == {"type": "output_audio_buffer.stopped", "response_id": response_id}


@pytest.mark.parametrize("cut_by", ["caller_speech", "client_clear"])
async def test_a_cut_cancels_the_backend_reply_and_truncates_its_item_at_what_was_heard(
    model, cut_by
):
    async with bridged(model) as running:
        outlet, call = running.outlet, running.call
        response_id, item_id = await model.reply(tone(2000), done=False)
        await until(lambda: len(outlet.queued) == 2000 * 96)
        outlet.advance(call, 30)  # the caller has heard 600 ms
        if cut_by == "client_clear":
            call.deliver_event({"type": "output_audio_buffer.clear"})
        else:
            for f in frames_of(speech_pcm(SPEECH)):
                call.deliver(f)
                if not outlet.queued:
                    break
            # Cut by the Call's own turn detection, which reports nothing: the turn events
            # the client gets are the backend's.
            assert "input_audio_buffer.speech_started" not in outlet.types()
        assert not outlet.queued
        truncate = await running.wait_for_backend("conversation.item.truncate")
        cancel = model.of_type("response.cancel")[0]
        assert model.received.index(cancel) < model.received.index(truncate)
        assert cancel["response_id"] == response_id
        assert (truncate["item_id"], truncate["content_index"]) == (item_id, 0)
        assert truncate["audio_end_ms"] == 600
        done = await running.wait_for_client("response.done")
        assert done["response"]["status"] == "cancelled"
        await running.wait_for_client("conversation.item.truncated")
        await model.send(  # a delta that was in flight when the cut came
            {"type": "response.output_audio.delta", "response_id": response_id, "delta": "AAAA"}
        )
        await model.send({"type": "conversation.item.added", "item": {"id": "x"}})
        await running.wait_for_client("conversation.item.added")
        assert not outlet.queued
        assert len(model.of_type("response.cancel")) == 1


async def test_a_cut_in_a_reply_queued_behind_another_truncates_the_later_item(model):
    async with bridged(model) as running:
        outlet, call = running.outlet, running.call
        await model.reply(tone(300))
        _, second_item = await model.reply(tone(300))
        await until(lambda: len(outlet.queued) == 600 * 96)
        outlet.advance(call, 20)  # 300 ms of the first, 100 of the second
        call.deliver_event({"type": "output_audio_buffer.clear"})
        truncate = await running.wait_for_backend("conversation.item.truncate")
        assert (truncate["item_id"], truncate["audio_end_ms"]) == (second_item, 100)
        assert model.of_type("response.cancel") == []  # both replies were done


async def test_a_reply_cut_before_its_audio_came_is_cancelled_when_the_audio_comes(model):
    async with bridged(model) as running:
        model.reply_id = "resp_1"
        await model.send({"type": "response.created", "response": {"id": "resp_1"}})
        await running.wait_for_client("response.created")
        running.call.deliver_event({"type": "output_audio_buffer.clear"})  # nothing plays yet
        delta = base64.b64encode(tone(100)).decode()
        await model.send(
            {"type": "response.output_audio.delta", "response_id": "resp_1", "delta": delta}
        )
        cancel = await running.wait_for_backend("response.cancel")
        assert cancel["response_id"] == "resp_1"
        assert not running.outlet.queued
        assert model.of_type("conversation.item.truncate") == []  # nothing was heard


async def test_client_response_cancel_goes_to_the_backend_once_and_stops_the_audio(model):
    async with bridged(model) as running:
        outlet, call = running.outlet, running.call
        response_id, item_id = await model.reply(tone(1000), done=False)
        await until(lambda: len(outlet.queued) == 1000 * 96)
        outlet.advance(call, 10)
        cancel = {"type": "response.cancel", "event_id": "evt_9", "response_id": response_id}
        call.deliver_event(cancel)
        truncate = await running.wait_for_backend("conversation.item.truncate")
        assert model.of_type("response.cancel") == [cancel]
        assert (truncate["item_id"], truncate["audio_end_ms"]) == (item_id, 200)
        assert not outlet.queued


async def test_client_events_go_to_the_backend_as_sent_except_those_the_call_answers(model):
    async with bridged(model) as running:
        call = running.call
        sent = [
            {"type": "response.create", "event_id": "evt_1", "response": {"instructions": "hi"}},
            {"type": "conversation.item.create", "item": {"type": "message", "role": "user"}},
            {"type": "conversation.item.retrieve", "item_id": "item_1"},
            {"type": "conversation.item.delete", "item_id": "item_1"},
            {"type": "input_audio_buffer.clear"},
        ]
        for event in sent:
            call.deliver_event(event)
        off = {"audio": {"input": {"turn_detection": None}}, "instructions": "terse"}
        call.deliver_event({"type": "session.update", "event_id": "evt_2", "session": off})
        call.deliver_event({"type": "input_audio_buffer.commit"})
        call.deliver_event({"type": "input_audio_buffer.append", "audio": ""})
        await running.wait_for_backend("input_audio_buffer.commit")
        assert model.received[1 : 1 + len(sent)] == sent
        update = model.of_type("session.update")[1]
        assert update["event_id"] == "evt_2" and update["session"]["instructions"] == "terse"
        assert update["session"]["audio"]["input"] == {"turn_detection": None, "format": PCM}
        assert model.of_type("input_audio_buffer.append") == []  # the caller said nothing
        (error,) = running.client_events("error")
        assert error["error"]["code"] == "unsupported_event"  # append: the media track is the input
        # The session changed here too: no local turn detection, and the backend's answer to
        # the client's commit is the one the client gets.
        assert rt.turn_detection(call.session) is None
        committed = await running.wait_for_client("input_audio_buffer.committed")
        assert committed["item_id"] == "item_user"
        for f in frames_of(speech_pcm(SPEECH)):
            call.deliver(f)
        assert running.client_events("input_audio_buffer.speech_started") == []
        updated = await running.wait_for_client("session.updated", 2)
        assert updated["session"]["instructions"] == "terse"


async def test_turn_events_are_the_backends_and_what_the_call_reports_itself_is_not(model):
    """The client hears of each turn once, with the backend's item id (the one the backend's
    ``conversation.item.*`` and transcription events use): the Call's own turn detection only
    cuts playback and tells the agent."""
    async with bridged(model) as running:
        call = running.call
        for f in frames_of(np.concatenate([speech_pcm(SPEECH), np.zeros(48_000, np.int16)])):
            call.deliver(f)  # a whole turn for the Call's turn detection, start to end
        await running.wait_for_backend("input_audio_buffer.append")
        for event in [
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "i"},
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "i"},
            {"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": "i"},
            {"type": "output_audio_buffer.started", "response_id": "r"},
            rt.error("stale", code="response_cancel_not_active", event_id="event_bridge_1"),
            rt.error("bad item", code="item_not_found", event_id="evt_client"),
            {"type": "conversation.item.added", "item": {"id": "i"}},
        ]:
            await model.send(event)
        await running.wait_for_client("conversation.item.added")
        assert running.outlet.types() == [
            "session.updated",
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "error",
            "conversation.item.added",
        ]
        turn = running.outlet.events[1:4]
        assert {event["item_id"] for event in turn} == {"i"}
        assert running.outlet.events[4]["error"]["event_id"] == "evt_client"


async def test_a_message_that_is_not_an_event_is_counted_and_the_call_goes_on(model):
    async with bridged(model) as running:
        for junk in ["not json", "[1]", '{"type": 5}', b"\x00", '{"type": "response.created"}']:
            await model.send(junk)
        await model.send({"type": "conversation.item.added", "item": {"id": "i"}})
        await running.wait_for_client("conversation.item.added")
        assert running.agent.malformed == 5
        assert not running.task.done()


class LateChannelOutlet(RecordingOutlet):
    """The client's events channel opens ``delay`` seconds after the call starts; what is sent
    before then waits for it (recorded all the same), as the transceiver's outlet does."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self._opens_at = time.monotonic() + delay

    @property
    def events_open(self) -> bool:
        return time.monotonic() >= self._opens_at


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("closed_port", "the model backend is unreachable"),
        ("wrong_key", "the model backend refused the connection (HTTP 401)"),
    ],
)
async def test_an_unreachable_backend_gets_the_client_a_server_error_and_ends_the_agent(
    model, where, message
):
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime" if where == "closed_port" else model.url
    agent = RealtimeBridge(Backend(url, "sk-wrong"))
    outlet = LateChannelOutlet(0.2)
    call = Call.for_agent(agent, "c1", outlet, {})
    await asyncio.wait_for(agent.run(call), 2)
    assert outlet.events_open, "the agent ended before the client could hear why"
    (error,) = outlet.events
    assert error["error"]["type"] == "server_error"
    assert error["error"]["code"] == "backend_unavailable"
    assert error["error"]["message"] == message


async def test_a_backend_that_closes_ends_the_agent_with_an_error(model):
    running = Bridged(model, {}, RecordingOutlet())
    await running.wait_for_backend("session.update")
    assert model.ws is not None
    await model.ws.close()
    await asyncio.wait_for(running.task, 2)
    error = running.client_events("error")[0]["error"]
    assert (error["type"], error["code"]) == ("server_error", "backend_closed")
    assert not running.call.closed  # the transport ends the call when the agent returns


async def test_the_end_of_the_call_closes_the_backend_socket(model):
    started = time.monotonic()
    async with bridged(model) as running:
        await model.reply(tone(1000), done=False)  # a reply in progress does not hold it up
        await until(lambda: running.outlet.queued)
    await asyncio.wait_for(model.closed.wait(), 1)
    assert time.monotonic() - started < 1.5
    assert running.client_events("error") == []
    assert len(running.outlet.queued) == FRAME * 2 * 50
