"""The transceiver's one UDP socket and the sessions behind it.

Every datagram arrives from a relay worker wrapped in the relay header (DESIGN §3), which names
the client. Demultiplexing is two-stage (STYLE §3): STUN is routed by the server ufrag in its
USERNAME (so a check from a new address finds its session), everything else by the client
address, which is indexed only once ICE has authenticated a check from it. Replies go back
through the relay address each client was last heard through.

After any change to a session, ``_pump`` drains it: datagrams out, events applied (indexes,
agent, call end), its next deadline into the one timer heap. Every path that ends a session goes
through ``_on_closed``, which removes every index entry the session ever had, and, with flow
records on (``cluster/flows.py``), the records of the client addresses it owned.

A relay header names any client its sender likes, so datagrams are taken only from the relay
networks (``allow_relays``): anyone else who reaches this socket could otherwise speak for a
client, and steer its session's replies at will.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from voicewire.agents import realtime_events as rt
from voicewire.agents.api import Agent, Call, CallStats, Response
from voicewire.relay.allow_list import LOOPBACK, AllowList
from voicewire.rtc.audio_stream import AudioParams, AudioReceived, OutputDrained
from voicewire.rtc.certificate import Certificate
from voicewire.rtc.data_channel import ChannelClosed, ChannelMessage, ChannelOpened
from voicewire.rtc.errors import ParseError
from voicewire.rtc.session import (
    AddressChanged,
    AddressValidated,
    CloseReason,
    DataChannelParams,
    Session,
    SessionClosed,
    SessionConnected,
    SessionParams,
    SessionState,
)
from voicewire.transceiver import event_channel
from voicewire.transceiver.live_call import LiveCall
from voicewire.transceiver.metrics import TransceiverMetrics
from voicewire.transceiver.session_request import NoCapacity, SessionGrant, SessionRequest
from voicewire.transceiver.timer_heap import TimerHeap
from voicewire.wire import relay_header, stun_username
from voicewire.wire.routing_token import RoutingKeys

if TYPE_CHECKING:
    from voicewire.cluster.flows import FlowPublisher

log = logging.getLogger("voicewire.transceiver")

AGENT_STOP_GRACE = 2.0  # seconds an agent gets to return after its call ended
DTLS_ROLES = {"active": "client", "passive": "server"}
"""Our answer's ``a=setup`` → our DTLS role, for offers that let us choose (``actpass``)."""
_SETUPS = {role: setup for setup, role in DTLS_ROLES.items()}


class TransceiverEndpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        *,
        keys: RoutingKeys,
        advertise: tuple[str, int] | None,
        agent_factory: Callable[[], Agent],
        max_sessions: int = 1000,
        cluster_id: int = 0,
        dtls_role: str = "client",
        consent_timeout: float = 30.0,
        metrics: TransceiverMetrics | None = None,
        allow_relays: AllowList | None = None,
    ) -> None:
        self.keys = keys
        self.advertise = advertise
        self.cluster_id = cluster_id
        self.max_sessions = max_sessions
        self.dtls_role = dtls_role
        self.consent_timeout = consent_timeout
        self.metrics = metrics or TransceiverMetrics()
        self.allow_relays = allow_relays or AllowList.parse(LOOPBACK)
        self.flows: FlowPublisher | None = None
        """Where client addresses are announced for relays to recover (set once the socket is
        bound and its address known), or None without Redis."""
        self.certificate = Certificate.generate(datetime.now(UTC))
        self._agent_factory = agent_factory
        self._calls: dict[str, LiveCall] = {}
        self._by_ufrag: dict[str, LiveCall] = {}
        self._by_address: dict[tuple, LiveCall] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._timers = TimerHeap(self._loop, self._on_timer)
        self.draining = False

    async def listen(self, address: tuple[str, int]) -> tuple[str, int]:
        """Bind the UDP socket; returns the bound address (the one tokens must name)."""
        await self._loop.create_datagram_endpoint(lambda: self, local_addr=address)
        assert self._transport is not None
        bound = self._transport.get_extra_info("sockname")[:2]
        if self.advertise is None:
            self.advertise = bound
        return bound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        for live in list(self._calls.values()):
            self.end_session(live.call_id, CloseReason.DRAIN)
        if self._transport is not None:
            self._transport.close()

    @property
    def session_count(self) -> int:
        return len(self._calls)

    def indexes_empty(self) -> bool:
        """No call, ufrag, address or timer left behind (asserted by tests after every ending)."""
        return not (self._calls or self._by_ufrag or self._by_address or len(self._timers))

    # Signaling side.

    def open_session(self, request: SessionRequest) -> SessionGrant:
        if self.draining or len(self._calls) >= self.max_sessions:
            raise NoCapacity("draining" if self.draining else "at capacity")
        assert self.advertise is not None, "listen() first"
        now = self._loop.time()
        call_id = "rtc_" + secrets.token_hex(12)
        ufrag = self.keys.issue(self.advertise, self.cluster_id)
        pwd = base64.b64encode(os.urandom(18)).decode()  # 24 ICE chars, 144 bits (RFC 8839 §5.4)
        role = self._dtls_role_for(request.remote_setup)
        audio = AudioParams(
            payload_type=request.audio_payload_type,
            ssrc=secrets.randbits(32),
            sequence_start=secrets.randbits(16),
            timestamp_start=secrets.randbits(32),
            cname=secrets.token_hex(8),
            ntp_offset=_ntp_offset(now),
            rtcp_jitter=secrets.SystemRandom().random,
        )
        params = SessionParams(
            local_ufrag=ufrag,
            local_pwd=pwd,
            remote_ufrag=request.remote_ufrag,
            remote_fingerprints=request.remote_fingerprints,
            dtls_role=role,
            audio=audio,
            data_channel=None
            if request.data_channel is None
            else DataChannelParams(*request.data_channel, random_bytes=os.urandom),
            consent_timeout=self.consent_timeout,
        )
        agent = self._agent_factory()
        live = LiveCall(call_id, Session(params, self.certificate, now), now, agent)
        live.call = Call.for_agent(agent, call_id, _Outlet(self, live), request.session_config)
        self._calls[call_id] = live
        self._by_ufrag[ufrag] = live
        self._timers.schedule(live, live.session.get_timer())
        self.metrics.opened()
        log.info("session opened", extra={"call_id": call_id})
        hash_name, value = self.certificate.sdp_fingerprint.split(" ", 1)
        return SessionGrant(
            call_id=call_id,
            ice_ufrag=ufrag,
            ice_pwd=pwd,
            fingerprint=(hash_name, value),
            dtls_setup=_SETUPS[role],
            audio_ssrc=audio.ssrc,
            cname=audio.cname,
        )

    def end_session(self, call_id: str, reason: CloseReason = CloseReason.HANGUP) -> bool:
        live = self._calls.get(call_id)
        if live is None:
            return False
        live.session.close(reason, self._loop.time())
        self._pump(live)
        return True

    def call_stats(self, call_id: str) -> CallStats | None:
        live = self._calls.get(call_id)
        return None if live is None else live.stats()

    def _dtls_role_for(self, remote_setup: str) -> str:
        # RFC 8842 §5.2 / RFC 5763 §5: an actpass offer lets us pick; otherwise take the other role.
        if remote_setup == "active":
            return "server"
        if remote_setup == "passive":
            return "client"
        return self.dtls_role

    # Network side.

    def datagram_received(self, data: bytes, relay: tuple) -> None:
        if not self.allow_relays.permits(relay[0]):  # a verdict cached per relay host
            self.metrics.drop("not_allowed")
            return
        try:
            _, host, port, offset = relay_header.decode(data)
        except relay_header.HeaderError:
            self.metrics.drop("malformed_header")
            return
        client = (host, port)
        payload = data[offset:]
        if payload and payload[0] < 4:  # RFC 7983: STUN is routed by its ufrag
            try:
                live = self._by_ufrag.get(stun_username.server_ufrag(payload).decode("ascii"))
            except (stun_username.NotBindingRequest, stun_username.MalformedStun):
                live = self._by_address.get(client)
            except UnicodeDecodeError:
                live = None
        else:
            live = self._by_address.get(client)
        if live is None:
            self.metrics.drop("unknown_session")
            return
        live.relays[client] = relay
        try:
            live.session.handle_datagram(payload, client, self._loop.time())
        except ParseError:
            self.metrics.drop("unparseable")
        self._pump(live)

    def error_received(self, exc: Exception) -> None:
        log.warning("socket error", extra={"error": str(exc)})

    def _on_timer(self, live: LiveCall, now: float) -> None:
        live.session.handle_timer(now)
        self._pump(live)

    def _pump(self, live: LiveCall) -> None:
        """Apply one change's consequences: send, handle events, re-arm the timer.

        Handling an event may make the session send more (an answer on the events channel), so
        datagrams are drained before each event, and once more at the end.
        """
        session = live.session
        while True:
            self._send(live, session.datagrams_to_send())
            event = session.next_event()
            if event is None:
                break
            if isinstance(event, AudioReceived):
                live.call.deliver(event)
            elif isinstance(event, OutputDrained):
                live.call.output_drained()
            elif isinstance(event, ChannelMessage):
                self._on_channel_message(live, event)
            elif isinstance(event, AddressValidated):
                previous = self._by_address.get(event.address)
                if previous is not None and previous is not live:
                    previous.addresses.discard(event.address)  # the client reused its port
                self._by_address[event.address] = live
                live.addresses.add(event.address)
                if self.flows is not None:
                    self.flows.announce(event.address)
            elif isinstance(event, SessionConnected):
                self._on_connected(live)
            elif isinstance(event, ChannelOpened):
                if event.label == event_channel.LABEL and live.events_channel is None:
                    live.events_channel = event.channel_id
                    live.call.send_event(
                        rt.session_event("session.created", live.call_id, live.call.session)
                    )
                    while live.early_events:
                        live.call.send_event(live.early_events.popleft())
            elif isinstance(event, ChannelClosed):
                if event.channel_id == live.events_channel:
                    live.events_channel = None
            elif isinstance(event, AddressChanged):
                log.info("client moved", extra={"call_id": live.call_id, "to": event.new})
            elif isinstance(event, SessionClosed):
                self._on_closed(live, event)
                return
        self._timers.schedule(live, session.get_timer())

    def _send(self, live: LiveCall, datagrams: list[tuple[bytes, tuple]]) -> None:
        transport = self._transport
        for datagram, client in datagrams:
            relay = live.relays.get(client)
            if relay is None or transport is None:
                self.metrics.drop("no_route")
                continue
            transport.sendto(live.header_for(client) + datagram, relay)

    def _on_channel_message(self, live: LiveCall, message: ChannelMessage) -> None:
        if message.channel_id != live.events_channel:
            return  # a channel no agent convention covers: nothing listens to it
        event, error = event_channel.decode(message.data)
        if error is None:
            live.call.deliver_event(event)
        else:
            live.call.send_event(error)

    def _on_connected(self, live: LiveCall) -> None:
        live.connected_at = self._loop.time()
        self.metrics.connected(live.connected_at - live.created_at)
        log.info(
            "session connected",
            extra={
                "call_id": live.call_id,
                "setup_ms": round(1000 * (live.connected_at - live.created_at), 1),
            },
        )
        live.agent_task = self._loop.create_task(self._run_agent(live))

    async def _run_agent(self, live: LiveCall) -> None:
        try:
            await live.agent.run(live.call)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent failed", extra={"call_id": live.call_id})
        if live.session.state is not SessionState.CLOSED:
            self.end_session(live.call_id, CloseReason.AGENT_ENDED)

    def _on_closed(self, live: LiveCall, event: SessionClosed) -> None:
        self._calls.pop(live.call_id, None)
        self._by_ufrag.pop(live.session.params.local_ufrag, None)
        for address in live.addresses:
            if self._by_address.get(address) is live:
                del self._by_address[address]
                if self.flows is not None:
                    self.flows.forget(address)
        live.addresses.clear()
        self._timers.schedule(live, None)
        live.call.end(event.reason.value)
        task = live.agent_task
        if task is not None and not task.done():
            self._loop.call_later(AGENT_STOP_GRACE, task.cancel)
        self.metrics.closed(event.reason.value)
        stats = live.stats()
        log.info(
            "session closed",
            extra={
                "call_id": live.call_id,
                "reason": event.reason.value,
                "detail": event.detail,
                "rtt_ms": None if stats.rtt_ms is None else round(stats.rtt_ms, 1),
                "jitter_ms": round(stats.jitter_ms, 1),
                "packets_received": stats.packets_received,
                "packets_lost": stats.packets_lost,
                "packets_sent": stats.packets_sent,
                "seconds": round(self._loop.time() - live.created_at, 1),
            },
        )


class _Outlet:
    """A call's way back into the transceiver: the agent's audio into the session.

    The LiveCall owns the Call and the Call owns this outlet, so the outlet holds its LiveCall
    only weakly: a strong reference would close a cycle, and an ended session's whole state
    (codec states, OpenSSL connection, SRTP contexts, jitter buffer) would then wait for the
    cyclic garbage collector's rare full pass instead of going when its last reference does.
    While the session is open the endpoint's ``_calls`` keeps the LiveCall; once it is gone
    the session has closed, and the agent's audio and events have nowhere to go.
    """

    __slots__ = ("_endpoint", "_live", "_session")
    paced = True  # the session plays audio out in real time and reports OutputDrained

    def __init__(self, endpoint: TransceiverEndpoint, live: LiveCall) -> None:
        self._endpoint = endpoint
        self._live = weakref.ref(live)
        self._session = live.session  # stats and sent_ms, also after the session has ended

    def queue_audio(self, pcm: bytes, response: Response | None) -> None:
        live = self._live()
        if live is not None:
            live.session.queue_audio(pcm, self._endpoint._loop.time())
            self._endpoint._pump(live)

    def clear_audio(self) -> None:
        live = self._live()
        if live is not None:
            live.session.clear_audio()
            self._endpoint._pump(live)

    def sent_ms(self) -> float:
        return self._session.audio.sent_ms

    def stats(self) -> CallStats:
        return self._session.audio.stats()

    @property
    def events_open(self) -> bool:
        live = self._live()
        return live is not None and live.events_channel is not None

    def send_event(self, event: dict[str, Any]) -> bool:
        live = self._live()
        if live is None:
            return False  # the session has ended
        if live.events_channel is None:
            if len(live.early_events) == live.early_events.maxlen:
                self._endpoint.metrics.drop_event("no_events_channel")
            live.early_events.append(event)
            return True
        live.session.send_message(
            live.events_channel, event_channel.encode(event), self._endpoint._loop.time()
        )
        self._endpoint._pump(live)
        return True


def _ntp_offset(loop_now: float) -> float:
    """Seconds to add to loop time for Unix time, for RTCP sender reports (RFC 3550 §6.4.1)."""
    return datetime.now(UTC).timestamp() - loop_now
