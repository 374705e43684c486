"""The ``oai-events`` data channel end to end: aiortc's SCTP and DCEP against ours, via relay."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.e2e.aiortc_client import CallClient
from voicewire.agents.api import Call
from voicewire.serve import EmbeddedStack


class EventEcho:
    """Answers every client event it handles with an event that carries it back."""

    handles = frozenset({"response.create", "conversation.item.create"})

    async def run(self, call: Call) -> None:
        async for event in call.events():
            call.send_event({"type": "test.echo", "original": event})


@pytest.fixture
async def events_stack():
    async with EmbeddedStack(
        http=("127.0.0.1", 0), udp=("127.0.0.1", 0), agent_factory=EventEcho
    ) as running:
        yield running


async def open_events_channel(stack) -> tuple[CallClient, asyncio.Queue]:
    client = CallClient()
    channel = client.pc.createDataChannel("oai-events")
    inbox: asyncio.Queue = asyncio.Queue()
    opened = asyncio.Event()
    channel.on("open", opened.set)
    channel.on("message", inbox.put_nowait)
    client.channel = channel
    await client.call(stack.url)
    await asyncio.wait_for(opened.wait(), 10)
    return client, inbox


async def next_event(inbox: asyncio.Queue) -> dict:
    return json.loads(await asyncio.wait_for(inbox.get(), 5))


async def test_session_created_then_events_both_ways(events_stack):
    client, inbox = await open_events_channel(events_stack)
    try:
        created = await next_event(inbox)
        assert created["type"] == "session.created"
        assert created["event_id"].startswith("event_")
        assert created["session"]["id"] == client.location.rsplit("/", 1)[1]

        text = "é" * 32_000 + "x" * 1_000
        content = [{"type": "input_text", "text": text}]
        big = {"type": "conversation.item.create", "item": {"type": "message", "content": content}}
        client.channel.send(json.dumps(big))  # ~65 KiB of UTF-8: fragmented by SCTP
        echoed = await next_event(inbox)
        assert echoed["type"] == "test.echo" and echoed["original"] == big
    finally:
        await client.close()


class EarlySpeaker:
    """Sends an event the moment it starts: the call is connected, the channel not yet open."""

    def __init__(self) -> None:
        self.open_at_start: bool | None = None

    async def run(self, call: Call) -> None:
        self.open_at_start = call.events_open
        call.send_event({"type": "test.hello"})
        await call.wait_closed()


async def test_what_an_agent_says_before_the_channel_opens_follows_session_created():
    agent = EarlySpeaker()
    async with EmbeddedStack(
        http=("127.0.0.1", 0), udp=("127.0.0.1", 0), agent_factory=lambda: agent
    ) as stack:
        client, inbox = await open_events_channel(stack)
        try:
            assert (await next_event(inbox))["type"] == "session.created"
            assert (await next_event(inbox))["type"] == "test.hello"
            assert agent.open_at_start is False  # it really was said before the channel opened
        finally:
            await client.close()


@pytest.mark.parametrize("message", ["not json", "[1, 2]", '{"no": "type"}', b"\x00binary"])
async def test_a_malformed_event_gets_an_error_and_the_call_goes_on(events_stack, message):
    client, inbox = await open_events_channel(events_stack)
    try:
        assert (await next_event(inbox))["type"] == "session.created"
        client.channel.send(message)
        error = await next_event(inbox)
        assert error["type"] == "error" and error["error"]["message"]
        client.channel.send(json.dumps({"type": "response.create"}))
        assert (await next_event(inbox))["original"] == {"type": "response.create"}
    finally:
        await client.close()


async def test_hang_up_with_a_data_channel_frees_everything(events_stack):
    client, inbox = await open_events_channel(events_stack)
    try:
        await next_event(inbox)
        assert await client.hang_up() == 200
        assert events_stack.transceiver.indexes_empty()
    finally:
        await client.close()
