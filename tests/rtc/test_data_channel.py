"""Data channels: DCEP bytes, two of our endpoints in simulated time, and aiortc as the
independent peer in real time.

The aiortc peer is its own `RTCSctpTransport` (SCTP, DCEP and channels, an implementation that
shares no code with ours) over a stand-in for its DTLS transport that hands each SCTP packet to
our sans-IO side, as aiortc's own tests do with a dummy DTLS pair. Our side is driven from the
test's event loop on its real clock, the way the transceiver's IO layer drives a session.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct
from collections.abc import Callable

import pytest
from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.rtc.test_sctp import Network, association, chunk, drain, packet
from voicewire.rtc.data_channel import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    ChannelState,
    DataChannels,
    DcepAck,
    DcepOpen,
    parse_dcep,
)
from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.sctp import (
    PPID_DCEP,
    SctpAssociation,
    SctpClosed,
    SctpCloseReason,
    SctpConnected,
    SctpState,
)

# -- DCEP bytes (RFC 8832 §5) ------------------------------------------------------------------


def test_open_round_trips_and_matches_rfc_8832_layout() -> None:
    message = DcepOpen(0x80, 256, 0, "oai-events", "json")
    data = message.encode()
    assert data == b"\x03\x80\x01\x00\x00\x00\x00\x00\x00\x0a\x00\x04oai-eventsjson"
    assert parse_dcep(data) == message
    assert not message.ordered
    assert parse_dcep(b"\x02") == DcepAck()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x02\x00", id="ack-too-long"),
        pytest.param(b"\x04", id="unknown-type"),
        pytest.param(b"\x03\x00\x00\x00", id="open-truncated"),
        pytest.param(DcepOpen(0, 0, 0, "a", "b").encode()[:-1], id="open-short-protocol"),
        pytest.param(DcepOpen(0, 0, 0, "a", "b").encode() + b"x", id="open-trailing"),
        pytest.param(b"\x03\x03" + DcepOpen(0, 0, 0, "", "").encode()[2:], id="channel-type"),
        pytest.param(struct.pack("!BBHIHH", 3, 0, 0, 0, 1, 0) + b"\xff", id="label-not-utf8"),
    ],
)
def test_malformed_dcep_raises_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_dcep(data)


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_random_dcep_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    try:
        message = parse_dcep(data)
    except ParseError:
        return
    assert message.encode() == data


# -- two of ours, simulated time ---------------------------------------------------------------


def channel_pair(**network_options) -> Network:
    """A DTLS client (a) and server (b) with their data channels, connected."""
    network = Network(
        DataChannels(association(1), "client"),
        DataChannels(association(2), "server"),
        **network_options,
    )
    network.connect()
    return network


def received(network: Network, name: str) -> list[ChannelMessage]:
    return network.of(name, ChannelMessage)


MESSAGES: list[str | bytes] = [
    "",
    b"",
    "x",
    b"\x00",
    "é" * 512,
    random.Random(1).randbytes(1024),
    json.dumps({"type": "session.update", "pad": "x" * 65500}),
    random.Random(2).randbytes(200 * 1024),
]


@pytest.mark.parametrize("seed", range(2))
def test_channel_opens_and_messages_of_every_size_arrive_intact(seed: int) -> None:
    network = channel_pair(seed=seed, loss=0.05, duplicate=0.02, reorder=0.1)
    channel_id = network.a.open_channel("oai-events")
    for message in MESSAGES:
        network.a.send(channel_id, message)  # before the ACK: allowed, and ordered
    network.run_until(lambda: network.of("b", ChannelOpened))
    assert network.of("b", ChannelOpened) == [ChannelOpened(channel_id, "oai-events", "")]
    network.run_until(lambda: network.of("a", ChannelOpened))
    for message in MESSAGES:
        network.b.send(channel_id, message)
    network.run_until(
        lambda: len(received(network, "a")) == len(received(network, "b")) == len(MESSAGES)
    )
    for name in ("a", "b"):
        got = [m.data for m in received(network, name)]
        assert got == MESSAGES
        assert [type(m) for m in got] == [type(m) for m in MESSAGES]


def test_stream_ids_follow_the_dtls_role_and_are_reused_after_close() -> None:
    network = channel_pair()
    client_ids = [network.a.open_channel(f"c{i}") for i in range(3)]
    server_ids = [network.b.open_channel(f"s{i}") for i in range(3)]
    assert client_ids == [0, 2, 4] and server_ids == [1, 3, 5]  # RFC 8832 §6
    network.run_until(lambda: len(network.of("a", ChannelOpened)) == 6)
    network.run_until(lambda: len(network.of("b", ChannelOpened)) == 6)
    network.a.close(2)
    network.run_until(lambda: network.of("a", ChannelClosed) and network.of("b", ChannelClosed))
    assert network.a.open_channel("again") == 2


@pytest.mark.parametrize("closer", ["a", "b"])
def test_close_from_either_side_closes_both_and_empties_the_registry(closer: str) -> None:
    network = channel_pair(seed=4, loss=0.1)
    channel_id = network.a.open_channel("oai-events", "json")
    network.run_until(lambda: network.of("a", ChannelOpened) and network.of("b", ChannelOpened))
    network.endpoint(closer).send(channel_id, "last words")
    network.endpoint(closer).close(channel_id)
    network.endpoint(closer).close(channel_id)  # idempotent
    with pytest.raises(LocalError):
        network.endpoint(closer).send(channel_id, "too late")
    network.run_until(lambda: network.of("a", ChannelClosed) and network.of("b", ChannelClosed))
    other = "b" if closer == "a" else "a"
    assert [m.data for m in received(network, other)] == ["last words"]
    assert (
        network.of("a", ChannelClosed)
        == network.of("b", ChannelClosed)
        == [ChannelClosed(channel_id)]
    )
    assert network.a.channels == network.b.channels == {}


def test_association_end_closes_every_channel() -> None:
    network = channel_pair()
    ids = [network.a.open_channel("one"), network.b.open_channel("two")]
    network.run_until(lambda: len(network.of("b", ChannelOpened)) == 2)
    network.a.abort("drain")
    network.run_until(lambda: network.of("b", SctpClosed))
    for name in ("a", "b"):
        closed = [e.channel_id for e in network.of(name, ChannelClosed)]
        assert sorted(closed) == sorted(ids)
        assert network.endpoint(name).channels == {}
        assert isinstance(network.events[name][-1], SctpClosed)


def test_shutdown_delivers_then_closes() -> None:
    network = channel_pair(seed=1, loss=0.1)
    channel_id = network.a.open_channel("oai-events")
    network.a.send(channel_id, "goodbye")
    network.run_until(lambda: network.of("a", ChannelOpened))
    network.a.shutdown()
    network.run_until(lambda: network.of("a", SctpClosed) and network.of("b", SctpClosed))
    assert [m.data for m in received(network, "b")] == ["goodbye"]
    assert network.of("b", SctpClosed)[0].reason is SctpCloseReason.SHUTDOWN


def test_malformed_dcep_and_stray_messages_are_counted_not_fatal() -> None:
    network = channel_pair()
    sctp = network.a.association
    sctp.send(8, PPID_DCEP, b"\x03garbage")  # malformed OPEN
    sctp.send(10, PPID_DCEP, b"\x02")  # ACK for nothing
    sctp.send(12, 51, b"no channel here")  # data on no channel
    network.run_for(1.0)
    assert network.b.dcep_errors == 2 and network.b.dropped_messages == 1
    assert network.b.channels == {}
    channel_id = network.a.open_channel("still works")
    network.a.send(channel_id, "yes")
    network.run_until(lambda: received(network, "b"))
    assert received(network, "b")[0].data == "yes"


def test_invalid_utf8_text_is_dropped() -> None:
    network = channel_pair()
    channel_id = network.a.open_channel("text")
    network.run_until(lambda: network.of("b", ChannelOpened))
    network.a.association.send(channel_id, 51, b"\xff\xfe")
    network.a.send(channel_id, "fine")
    network.run_until(lambda: received(network, "b"))
    assert [m.data for m in received(network, "b")] == ["fine"]
    assert network.b.dropped_messages == 1


def test_open_channel_needs_an_established_association() -> None:
    channels = DataChannels(association(1), "client")
    with pytest.raises(LocalError):
        channels.open_channel("early")
    with pytest.raises(LocalError):
        DataChannels(association(1), "both")  # type: ignore[arg-type]


@settings(max_examples=150)
@given(st.binary(min_size=1, max_size=60))
def test_random_dcep_payloads_never_break_the_channels(data: bytes) -> None:
    peer = DataChannelCrafter()
    peer.send(chunk(0, 3, struct.pack("!IHHI", 1000, 1, 0, PPID_DCEP) + data))
    peer.send(
        chunk(
            0, 3, struct.pack("!IHHI", 1001, 3, 0, PPID_DCEP) + DcepOpen(0, 0, 0, "x", "").encode()
        )
    )
    peer.send(chunk(0, 3, struct.pack("!IHHI", 1002, 3, 1, 51) + b"after"))
    events = drain(peer.channels)
    assert ChannelMessage(3, "after") in events
    assert peer.channels.association.state is SctpState.ESTABLISHED


class DataChannelCrafter:
    """A fake DTLS-client peer speaking hand-made packets to our DataChannels (DTLS server)."""

    def __init__(self) -> None:
        self.channels = DataChannels(association(2), "server")
        init = struct.pack("!IIHHI", 0x01020304, 65536, 16, 16, 1000)
        init += struct.pack("!HH", 0x8008, 6) + bytes([130, 192]) + b"\0\0"
        self.channels.receive_packet(packet(0, chunk(1, 0, init)), 0.0)
        (init_ack,) = self.channels.packets_to_send(0.0)
        self.tag = struct.unpack_from("!I", init_ack, 16)[0]
        cookie = init_ack[init_ack.index(b"\x00\x07\x00") + 4 :][:66]
        self.send(chunk(10, 0, cookie))
        drain(self.channels)

    def send(self, *chunks: bytes) -> None:
        self.channels.receive_packet(packet(self.tag, b"".join(chunks)), 0.0)


# -- aiortc as the independent peer, real time -------------------------------------------------


class AiortcDtlsStandIn:
    """The part of aiortc's RTCDtlsTransport that its RTCSctpTransport uses, with the records
    going to our side in memory instead of through OpenSSL and a socket."""

    def __init__(self, role: str, deliver: Callable[[bytes], None]) -> None:
        self._role = role  # aiortc's SCTP picks its stream-id parity from this (RFC 8832 §6)
        self.state = "connected"
        self._deliver = deliver
        self._data_receiver = None

    def _register_data_receiver(self, receiver) -> None:
        self._data_receiver = receiver

    def _unregister_data_receiver(self, receiver) -> None:
        self._data_receiver = None

    async def _send_data(self, data: bytes) -> None:
        self._deliver(data)


class OurSide:
    """Our sans-IO DataChannels, driven from the event loop: receive, fire timers, drain."""

    def __init__(self, dtls_role: str) -> None:
        sctp = SctpAssociation(
            random_bytes=os.urandom, max_packet_size=1163, remote_max_message_size=262144
        )
        self.channels = DataChannels(sctp, dtls_role)  # type: ignore[arg-type]
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.events: list = []
        self.peer: RTCSctpTransport | None = None
        self.parse_errors = 0
        self.sent_chunk_types: list[int] = []  # the first chunk of each packet we sent

    def poke(self) -> None:
        """Wake the loop after a change made from the test (send, close, …)."""
        self.inbox.put_nowait(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._flush(loop.time())
            deadline = self.channels.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                data = await asyncio.wait_for(self.inbox.get(), timeout)
            except TimeoutError:
                data = None
            now = loop.time()
            if data is not None:
                try:
                    self.channels.receive_packet(data, now)
                except ParseError:
                    self.parse_errors += 1
            self.channels.handle_timer(now)

    async def _flush(self, now: float) -> None:
        assert self.peer is not None
        for packet_ in self.channels.packets_to_send(now):
            assert len(packet_) <= 1163
            self.sent_chunk_types.append(packet_[12])
            await self.peer._handle_data(packet_)
        self.events.extend(drain(self.channels))

    def of(self, kind: type) -> list:
        return [event for event in self.events if isinstance(event, kind)]


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.002)


class Pair:
    def __init__(self, ours: OurSide, theirs: RTCSctpTransport, task: asyncio.Task) -> None:
        self.ours, self.theirs, self.task = ours, theirs, task
        self.their_channels: list[RTCDataChannel] = []
        self.their_messages: list[str | bytes] = []
        theirs.on("datachannel", self.track)

    def track(self, channel: RTCDataChannel) -> None:
        self.their_channels.append(channel)
        channel.on("message", self.their_messages.append)

    async def close(self) -> None:
        self.task.cancel()
        await self.theirs.stop()


async def aiortc_pair(our_role: str, *, we_connect: bool = False) -> Pair:
    ours = OurSide(our_role)
    their_role = "client" if our_role == "server" else "server"
    theirs = RTCSctpTransport(AiortcDtlsStandIn(their_role, ours.inbox.put_nowait))  # type: ignore[arg-type]
    ours.peer = theirs
    pair = Pair(ours, theirs, asyncio.create_task(ours.run()))
    if we_connect:
        ours.channels.connect(asyncio.get_running_loop().time())
    await theirs.start(RTCSctpCapabilities(maxMessageSize=262144), 5000)
    await until(lambda: theirs.state == "connected" and ours.of(SctpConnected))
    return pair


def json_event(size: int) -> str:
    """A Realtime-API-like JSON event of exactly `size` UTF-8 bytes, with non-ASCII text."""
    event = {"type": "conversation.item.create", "text": "héllo wörld ", "pad": ""}
    base = len(json.dumps(event, ensure_ascii=False).encode())
    event["pad"] = "x" * (size - base)
    text = json.dumps(event, ensure_ascii=False)
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize("our_role", ["server", "client"])
async def test_aiortc_opens_oai_events_and_messages_flow_both_ways(our_role: str) -> None:
    pair = await aiortc_pair(our_role)
    ours = pair.ours
    try:
        channel = RTCDataChannel(pair.theirs, RTCDataChannelParameters(label="oai-events"))
        await until(lambda: ours.of(ChannelOpened) and channel.readyState == "open")  # our ACK
        big = json_event(65536)
        channel.send(big)
        (opened,) = ours.of(ChannelOpened)
        assert opened.label == "oai-events"
        assert opened.channel_id % 2 == (0 if our_role == "server" else 1)  # their parity
        await until(lambda: ours.of(ChannelMessage))
        assert ours.of(ChannelMessage) == [ChannelMessage(opened.channel_id, big)]

        replies: list[str | bytes] = [
            '{"type":"session.created"}',
            b"\x01\x02",
            "",
            b"",
            random.Random(3).randbytes(150_000),
        ]
        messages: list[str | bytes] = []
        channel.on("message", messages.append)
        for reply in replies:
            ours.channels.send(opened.channel_id, reply)
        ours.poke()
        await until(lambda: len(messages) == len(replies))
        assert messages == replies
        assert [type(m) for m in messages] == [type(r) for r in replies]

        channel.close()  # aiortc resets its stream; we reset ours in turn (RFC 8831 §6.7)
        await until(lambda: ours.of(ChannelClosed) and channel.readyState == "closed")
        assert ours.channels.channels == {}
        assert ours.parse_errors == 0
    finally:
        await pair.close()


async def test_we_open_and_close_a_channel_to_aiortc() -> None:
    pair = await aiortc_pair("client")
    ours = pair.ours
    try:
        channel_id = ours.channels.open_channel("oai-events", "json")
        ours.channels.send(channel_id, "hello")
        ours.poke()
        await until(lambda: pair.their_channels and pair.their_messages)
        (theirs,) = pair.their_channels
        assert (theirs.label, theirs.protocol, theirs.id) == ("oai-events", "json", channel_id)
        assert pair.their_messages == ["hello"]
        await until(lambda: ours.of(ChannelOpened))  # aiortc's ACK
        theirs.send("hi back")
        await until(lambda: ours.of(ChannelMessage))
        assert ours.of(ChannelMessage) == [ChannelMessage(channel_id, "hi back")]

        ours.channels.close(channel_id)
        ours.poke()
        await until(lambda: ours.of(ChannelClosed) and theirs.readyState == "closed")
        assert ours.channels.channels == {}
    finally:
        await pair.close()


async def test_both_sides_send_init_with_aiortc() -> None:
    pair = await aiortc_pair("server", we_connect=True)
    try:
        channel = RTCDataChannel(pair.theirs, RTCDataChannelParameters(label="oai-events"))
        await until(lambda: channel.readyState == "open")
        channel.send("after a collision")
        await until(lambda: pair.ours.of(ChannelMessage))
        assert pair.ours.of(ChannelMessage)[0].data == "after a collision"
        assert len(pair.ours.of(SctpConnected)) == 1
        # Both INITs crossed: we sent an INIT and also answered aiortc's with an INIT-ACK.
        assert pair.ours.sent_chunk_types[:2] == [1, 2]
    finally:
        await pair.close()


async def test_our_shutdown_closes_aiortc_cleanly() -> None:
    pair = await aiortc_pair("server")
    try:
        pair.ours.channels.shutdown()
        pair.ours.poke()
        await until(lambda: pair.ours.of(SctpClosed) and pair.theirs.state == "closed")
        assert pair.ours.of(SctpClosed) == [SctpClosed(SctpCloseReason.SHUTDOWN)]
    finally:
        await pair.close()


async def test_aiortc_stop_aborts_and_closes_our_channels() -> None:
    pair = await aiortc_pair("server")
    try:
        RTCDataChannel(pair.theirs, RTCDataChannelParameters(label="oai-events"))
        await until(lambda: pair.ours.of(ChannelOpened))
        await pair.theirs.stop()  # aiortc ends with ABORT
        await until(lambda: pair.ours.of(SctpClosed))
        assert pair.ours.of(SctpClosed)[0].reason is SctpCloseReason.PEER_ABORTED
        assert len(pair.ours.of(ChannelClosed)) == 1
        assert pair.ours.channels.channels == {}
        assert pair.ours.channels.get_timer() is None
    finally:
        pair.task.cancel()


def test_channel_state_is_exposed_read_only() -> None:
    network = channel_pair()
    channel_id = network.a.open_channel("x")
    assert network.a.channels[channel_id].state is ChannelState.OPENING
    network.a.channels.clear()
    assert channel_id in network.a.channels


def test_peer_reusing_a_stream_before_our_reset_completes() -> None:
    """RFC 8831 §6.7 lets the peer reuse an id once it saw both resets, which can be before
    our own reset's answer reaches us: the old channel ends, the new one waits for it."""
    lost: list[bytes] = []

    def drop(sender: str, data: bytes) -> bool:
        # The client's answer to the server's reset request (RE-CONFIG, Re-configuration
        # Response parameter 16) is lost once.
        if sender == "a" and data[12] == 130 and data[16:18] == b"\x00\x10" and not lost:
            lost.append(data)
            return True
        return False

    network = channel_pair(drop=drop)
    old = network.a.open_channel("old")
    network.run_until(lambda: network.of("b", ChannelOpened) and network.of("a", ChannelOpened))
    network.a.close(old)
    network.run_until(lambda: network.of("a", ChannelClosed))
    assert lost and network.b.channels[old].state is ChannelState.CLOSING
    new = network.a.open_channel("new")
    assert new == old
    network.run_until(lambda: len(network.of("b", ChannelOpened)) == 2)
    assert network.of("b", ChannelClosed) == [ChannelClosed(old)]  # the old one ended first
    network.b.send(new, "early")  # held with the ACK until our reset is answered
    network.run_until(lambda: len(network.of("a", ChannelOpened)) == 2 and received(network, "a"))
    assert [m.data for m in received(network, "a")] == ["early"]
    assert network.a.dcep_errors == network.b.dcep_errors == 0
