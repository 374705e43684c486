"""One OpenAI Realtime WebSocket connection as the transport of a Call (``agent-server``).

Over WebRTC the caller's voice is a media track and the transceiver plays the agent's voice out
in real time. Over OpenAI's WebSocket protocol both directions are JSON events instead: the
client sends its audio in ``input_audio_buffer.append`` (base64 PCM16 mono at 24 kHz) and plays
the ``response.output_audio.delta`` events it receives. This module turns one such connection
into a ``CallOutlet``, so every agent runs over it unchanged and the Call keeps the conversation
conventions (turns, replies, barge-in) exactly as it does for WebRTC.

- Input: appended audio is cut into 20 ms frames, brought to the call's 48 kHz and delivered as
  if it had come off a track; turn detection runs on that audio's own timeline, so a client may
  send faster than real time. Every other client event goes to the Call, which checks it.
- Output: an agent says a whole reply at once, but a model streams it, and clients (and the
  ``realtime-bridge`` relaying into a paced WebRTC call) expect it streamed: deltas leave at
  most ``OUTPUT_LEAD_MS`` ahead of the client's real-time playback, so ``response.cancel`` and
  barge-in stop a long reply part-way, and nothing is ever buffered far ahead of the listener.
  The reply's ``response.content_part.added`` / ``output_audio.done`` / ``content_part.done``
  frame its deltas as OpenAI's do.
- Slow clients: everything sent waits in one bounded outbox; a client that stops reading until
  it fills is disconnected instead of being buffered for without limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections import deque
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CollectorRegistry, Counter, Gauge

from voicewire.agents import realtime_events as rt
from voicewire.agents.api import Agent, Call, CallStats, Response
from voicewire.agents.resample import FRAME_MS, Framer, Resampler, frame_bytes
from voicewire.rtc.audio_stream import AudioReceived
from voicewire.rtc.opus import SAMPLE_RATE
from voicewire.transceiver import event_channel

log = logging.getLogger("voicewire.agent_server")

SOCKET_RATE = 24_000
"""The only rate of OpenAI's ``audio/pcm`` format (``session.audio.*.format.rate``)."""
OUTPUT_LEAD_MS = 1000
"""How far the deltas sent may run ahead of the client's real-time playback."""
DELTA_MS = 100
"""The most audio one ``response.output_audio.delta`` carries."""
OUTBOX_LIMIT = 4 << 20
"""Characters waiting to be sent before the client counts as not reading (≈ 60 s of audio)."""
YIELD_FRAMES = 10
"""Input frames delivered before the agent gets a turn to read them (see ``_append``)."""
AGENT_STOP_GRACE = 2.0
"""Seconds an agent gets to return after its call ended before it is cancelled."""
CLOSE_TIMEOUT = 2.0
"""Seconds a closing handshake (or the flush before it) may take before the socket is dropped."""

_BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # PCM16 mono at the call's 48 kHz


class SocketMetrics:
    """Prometheus metrics of the agent-server's connections."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sessions = Gauge(
            "voicewire_agent_server_sessions",
            "WebSocket sessions open now.",
            registry=self.registry,
        )
        self.closed = Counter(
            "voicewire_agent_server_sessions_closed",
            "Sessions ended, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.events_in = Counter(
            "voicewire_agent_server_events_in",
            "Client messages received, by event type ('invalid': not JSON, or no known type).",
            ["type"],
            registry=self.registry,
        )
        self.events_out = Counter(
            "voicewire_agent_server_events_out",
            "Server events sent, by type.",
            ["type"],
            registry=self.registry,
        )
        self.errors = Counter(
            "voicewire_agent_server_errors",
            "'error' events sent to clients, by code.",
            ["code"],
            registry=self.registry,
        )


class Outbox:
    """Text messages for one WebSocket, sent in order by one writer, at most ``limit`` waiting.

    ``put`` never blocks, because the Call sends its events from synchronous code. A client
    that reads so slowly that ``limit`` characters pile up has ``overflowed``: the writer, likely
    stuck waiting for the client's TCP window, is cancelled, and nothing more is taken.
    """

    def __init__(self, ws: web.WebSocketResponse, limit: int = OUTBOX_LIMIT) -> None:
        self._ws = ws
        self._limit = limit
        self._queue: deque[str] = deque()
        self.size = 0
        """Characters waiting."""
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self.overflowed = False

    def start(self) -> asyncio.Task[None]:
        """Start the writer; its task ends when the outbox is closed and empty, on overflow
        (cancelled), or with the error that stopped it sending."""
        self._writer = asyncio.create_task(self._run())
        return self._writer

    @property
    def open(self) -> bool:
        return not (self.overflowed or self._closing)

    def put(self, text: str) -> bool:
        if not self.open:
            return False
        if self.size + len(text) > self._limit:
            self.overflowed = True
            if self._writer is not None:
                self._writer.cancel()
            return False
        self._queue.append(text)
        self.size += len(text)
        self._wake.set()
        return True

    def close(self) -> None:
        """Take nothing more; the writer ends once what is queued has been sent."""
        self._closing = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            text = self._queue.popleft()
            self.size -= len(text)
            await self._ws.send_str(text)  # waits while the client's TCP window is full


class RealtimeSocket:
    """The transport of one call over one accepted WebSocket: a ``CallOutlet``.

    ``serve`` runs the whole connection: ``session.created``, the agent, the client's messages,
    and the ending, whichever side starts it.
    """

    paced = False  # the client plays the deltas; the Call sends no output_audio_buffer events

    def __init__(
        self,
        ws: web.WebSocketResponse,
        agent: Agent,
        call_id: str,
        config: dict[str, Any],
        metrics: SocketMetrics,
    ) -> None:
        self._ws = ws
        self._agent = agent
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._outbox = Outbox(ws)
        self._stop_reason: str | None = None
        self._reader: asyncio.Task[str] | None = None
        # Input: 20 ms frames at the socket's rate, up to the call's.
        self._framer = Framer(frame_bytes(SOCKET_RATE))
        self._upsampler = Resampler(SOCKET_RATE, SAMPLE_RATE)
        self._frames_in = 0
        # Output: the agent's audio waiting for its turn to leave, by reply.
        self._pending: deque[tuple[Response | None, bytearray]] = deque()
        self._pending_bytes = 0
        self._downsampler = Resampler(SAMPLE_RATE, SOCKET_RATE)
        self._sent_bytes = 0
        self._playout_end = 0.0  # loop time when the client will have played all audio sent
        self._pacer: asyncio.TimerHandle | None = None
        self._open_parts: set[str] = set()  # replies whose audio content part is open
        self.call = Call.for_agent(agent, call_id, self, config)

    async def serve(self) -> str:
        """Run the connection to its end; returns why it ended (the call's close reason)."""
        call = self.call
        self.send_event(rt.session_event("session.created", call.call_id, call.session))
        writer = self._outbox.start()
        agent = asyncio.create_task(self._agent.run(call))
        self._reader = asyncio.create_task(self._read())
        tasks = (writer, agent, self._reader)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is going down without a word
            call.end("shutdown")
            self._stop_audio()
            for task in tasks:
                task.cancel()
            raise
        reason, code = self._ending(writer, agent)
        call.end(reason)
        self._stop_audio()
        if code is not None and not self._outbox.overflowed:
            self._outbox.close()  # the agent's or the server's last words still go out
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT)
        writer.cancel()
        self._reader.cancel()
        if code is not None:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(
                    self._ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT
                )
        await _stop_agent(agent, call.call_id)
        return reason

    def stop(self, reason: str) -> None:
        """End the connection from the server's side (shutdown)."""
        self._stop_reason = reason
        if self._reader is not None:
            self._reader.cancel()

    def _ending(
        self, writer: asyncio.Task[None], agent: asyncio.Task[None]
    ) -> tuple[str, WSCloseCode | None]:
        """Why the connection ends, and the close code to send (None: the client is gone)."""
        reader = self._reader
        assert reader is not None
        if self._stop_reason is not None:
            return self._stop_reason, WSCloseCode.GOING_AWAY
        if reader.done():
            return reader.result(), None
        if writer.done():
            if self._outbox.overflowed:
                return "slow_client", WSCloseCode.POLICY_VIOLATION
            log.info(
                "connection lost",
                extra={"call_id": self.call.call_id, "error": str(writer.exception())},
            )
            return "connection_lost", None
        if not agent.cancelled() and agent.exception() is not None:  # logged by _stop_agent
            return "agent_failed", WSCloseCode.INTERNAL_ERROR
        return "agent_ended", WSCloseCode.OK

    # The client's side.

    async def _read(self) -> str:
        async for message in self._ws:
            if message.type is WSMsgType.ERROR:
                log.info(
                    "websocket error",
                    extra={"call_id": self.call.call_id, "error": str(message.data)},
                )
                return "protocol_error"  # e.g. a message over the size limit: aiohttp closed
            try:
                await self._on_message(message.data)
            except Exception:  # a bug must not take the session down with it
                log.exception("client message failed", extra={"call_id": self.call.call_id})
                self.send_event(rt.error("internal error", kind="server_error"))
        return "hangup"

    async def _on_message(self, data: str | bytes) -> None:
        event, error = event_channel.decode(data)
        if error is not None:
            self._metrics.events_in.labels("invalid").inc()
            self.send_event(error)
            return
        kind = event.get("type") if isinstance(event, dict) else None
        self._metrics.events_in.labels(kind if kind in rt.CLIENT_EVENTS else "invalid").inc()
        if kind == "input_audio_buffer.append":
            await self._append(event)
        else:
            self.call.deliver_event(event)

    async def _append(self, event: dict[str, Any]) -> None:
        """``input_audio_buffer.append``: the caller's audio, as frames into the Call.

        A client may send faster than real time (a recording), and the Call drops what its agent
        leaves unread for a second, as a live call must; so the agent gets a turn to read every
        ``YIELD_FRAMES``, and a slow agent slows down reading the socket instead.
        """
        try:
            rt.validate_client_event(event)
            pcm = base64.b64decode(event["audio"], validate=True)
        except rt.EventError as exc:
            self.send_event(rt.error_for(exc, event))
            return
        except binascii.Error as exc:
            self.send_event(
                rt.error_for(rt.EventError(f"'audio' is not base64: {exc}", "audio"), event)
            )
            return
        audio_format = self.call.session.get("audio", {}).get("input", {}).get("format", {})
        if audio_format.get("type", "audio/pcm") != "audio/pcm":
            message = "agent-server takes audio/pcm input only (PCM16 mono, 24 kHz)"
            where = "session.audio.input.format.type"
            self.send_event(rt.error_for(rt.EventError(message, where), event))
            return
        for frame in self._framer.push(pcm):
            self._frames_in += 1
            self.call.deliver(AudioReceived(self._upsampler.convert(frame), False))
            if self._frames_in % YIELD_FRAMES == 0:
                await asyncio.sleep(0)

    # CallOutlet: the agent's side.

    @property
    def events_open(self) -> bool:
        return self._outbox.open

    def send_event(self, event: dict[str, Any]) -> bool:
        kind = event["type"]
        if kind == "response.output_item.done":
            self._finish_audio(event["response_id"], event["item"]["id"])
        self._metrics.events_out.labels(kind).inc()
        if kind == "error":
            self._metrics.errors.labels(str(event["error"]["code"])).inc()
        return self._outbox.put(event_channel.encode(event))

    def queue_audio(self, pcm: bytes, response: Response | None) -> None:
        if self._pending and self._pending[-1][0] is response:
            self._pending[-1][1].extend(pcm)
        else:
            self._pending.append((response, bytearray(pcm)))
        self._pending_bytes += len(pcm)
        if self._pacer is None:
            self._pacer = self._loop.call_soon(self._pace)

    def clear_audio(self) -> None:
        """Drop the audio not yet sent; what was sent is the client's to stop playing."""
        self._stop_audio()
        self._downsampler = Resampler(SAMPLE_RATE, SOCKET_RATE)  # no tail of the old reply
        self._playout_end = 0.0  # the client stops too: the next reply starts afresh

    def sent_ms(self) -> float:
        return self._sent_bytes / _BYTES_PER_MS

    def stats(self) -> CallStats:
        return CallStats(
            rtt_ms=None,
            jitter_ms=0.0,
            packets_received=self._frames_in,
            packets_lost=0,
            packets_sent=self._sent_bytes // (_BYTES_PER_MS * FRAME_MS),
            queued_ms=self._pending_bytes / _BYTES_PER_MS,
        )

    # Output audio.

    def _pace(self) -> None:
        """Send the deltas that are due; come back when more are; report when all have left."""
        self._pacer = None
        now = self._loop.time()
        while self._pending:
            ahead = self._playout_end - now
            if ahead > OUTPUT_LEAD_MS / 1000:
                self._pacer = self._loop.call_later(ahead - OUTPUT_LEAD_MS / 1000, self._pace)
                return
            self._send_delta(now)
        self.call.output_drained()

    def _send_delta(self, now: float) -> None:
        response, pcm = self._pending[0]
        piece = bytes(pcm[: DELTA_MS * _BYTES_PER_MS])
        del pcm[: len(piece)]
        if not pcm:
            self._pending.popleft()
        self._pending_bytes -= len(piece)
        self._sent_bytes += len(piece)
        self._playout_end = max(self._playout_end, now) + len(piece) / _BYTES_PER_MS / 1000
        ids = _ids(None, None) if response is None else _ids(response.id, response.item_id)
        if response is not None and response.announce and response.id not in self._open_parts:
            self._open_parts.add(response.id)
            self.send_event({"type": "response.content_part.added", **ids, "part": _AUDIO_PART})
        delta = base64.b64encode(self._downsampler.convert(piece)).decode("ascii")
        self.send_event({"type": "response.output_audio.delta", **ids, "delta": delta})

    def _finish_audio(self, response_id: str, item_id: str) -> None:
        """A reply's item is done: the reply's audio goes first (at once, if any is still
        waiting: a new reply began before it had all left), then the events that close its
        content part, as OpenAI sends them."""
        now = self._loop.time()
        while any(r is not None and r.id == response_id for r, _ in self._pending):
            self._send_delta(now)
        if response_id not in self._open_parts:
            return  # it never got to say anything
        self._open_parts.discard(response_id)
        ids = _ids(response_id, item_id)
        self.send_event({"type": "response.output_audio.done", **ids})
        self.send_event({"type": "response.content_part.done", **ids, "part": _AUDIO_PART})

    def _stop_audio(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        if self._pacer is not None:
            self._pacer.cancel()
            self._pacer = None


_AUDIO_PART = {"type": "audio", "transcript": ""}


def _ids(response_id: str | None, item_id: str | None) -> dict[str, Any]:
    """Where audio belongs; audio said outside a reply (the ``echo`` agent) names no reply."""
    return {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}


async def _stop_agent(task: asyncio.Task[None], call_id: str) -> None:
    """Give the agent ``AGENT_STOP_GRACE`` to return after its call ended, then cancel it."""
    await asyncio.wait({task}, timeout=AGENT_STOP_GRACE)
    if not task.done():
        log.warning("agent did not stop; cancelling it", extra={"call_id": call_id})
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("agent failed", exc_info=task.exception(), extra={"call_id": call_id})
