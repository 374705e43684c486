"""``realtime-bridge``: each WebRTC call relayed to an OpenAI-Realtime-compatible WebSocket backend.

The models worth talking to (OpenAI's, or any built on ``voicewire agent-server``) speak the
Realtime API over a WebSocket: JSON events both ways, audio as base64 PCM16 inside them. The
bridge opens one such socket per call and translates, so a browser gets WebRTC's low-latency
media and OpenAI's conversation events on its ``oai-events`` channel from any backend.

- Audio up: the caller's voice at 24 kHz, 40 ms per ``input_audio_buffer.append`` (two 20 ms
  frames: half the messages, about 30 % less CPU, at most 20 ms later; see ``BATCH_MS``).
- Audio down: ``response.output_audio.delta`` (GA) and ``response.audio.delta`` (the beta name)
  are decoded and said inside ``call.response(backend_id, announce=False)``, opened on the
  backend's ``response.created`` and closed on its ``response.done``: the backend's own response
  events go to the client unchanged, and the Call tracks the reply for barge-in. The deltas
  never go on the data channel (OpenAI's WebRTC interface does not send them either).
- Events: every client event type except the two that only make sense here (``handles``) goes
  to the backend unchanged, ``event_id`` included, so the backend's errors name the client's
  event. ``session.update`` is also applied to the Call, so local turn detection follows it.
  At the start the backend gets the call's session (``call.session``) in a ``session.update``;
  the audio formats are always PCM16 at 24 kHz, and ``model`` is the operator's
  (``--backend-model``), never the client's. The backend's answer often comes before the
  client's events channel is open; the transport keeps it until the channel opens.
- Who reports what: the backend's turn events (``input_audio_buffer.speech_started`` /
  ``speech_stopped`` / ``committed``) go to the client unchanged (``forwards_turn_events``), so
  their ``item_id`` is the id every later event about the user's item carries (its
  ``conversation.item.*``, its transcription). The Call still detects turns on the caller's
  audio itself, and cuts playback on speech onset within the 150 ms barge-in budget, a network
  round trip and a backend VAD before the backend could; it just does not report them. The
  backend's ``output_audio_buffer.*`` (a WebRTC backend's) are dropped: the Call reports what
  the caller actually hears. Its ``session.created`` is dropped: the client got one when its
  channel opened.
- Barge-in: when playback is cut (caller speech, or the client's ``output_audio_buffer.clear``),
  the Call hands the bridge ``output_audio_buffer.cleared`` with ``played_ms``; the bridge
  cancels the backend's response if it is still in progress and truncates the backend item the
  caller was hearing at the point they stopped hearing it, so the model's transcript of its own
  words ends where the caller's did. A backend that cancelled by itself (its VAD fired too)
  answers our cancel with ``response_cancel_not_active``; that race is not the client's
  business and is dropped.
- Failure: an unreachable backend, or one that closes, gets the client an ``error`` event of
  type ``server_error`` and ends the agent (the call ends with ``agent_ended``). The backend's
  own ``error`` events go to the client. A message from the backend that is not a JSON event is
  logged and counted, never fatal. When the call ends the bridge returns and closes the socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from voicewire.agents import realtime_events as rt
from voicewire.agents.api import Call, Response
from voicewire.agents.turn_detection import DEFAULTS

log = logging.getLogger("voicewire.realtime_bridge")

RATE = 24_000
"""The rate of OpenAI's ``audio/pcm`` format, both ways."""
BATCH_MS = 40
"""Audio per ``input_audio_buffer.append``. Measured on loopback (aiohttp both ends, the
receiver parsing each message): 20 ms cost 0.73 ms of CPU per second of audio, 40 ms 0.51 ms,
100 ms 0.38 ms. 40 ms takes most of the saving for at most 20 ms more before the backend hears
the audio; that delays only its end-of-turn detection (which waits ~500 ms of silence anyway),
never barge-in, which the Call does locally."""
CONNECT_TIMEOUT = 10.0
"""Seconds to open the backend's WebSocket (TCP, TLS and the HTTP upgrade) before giving up."""
CLOSE_TIMEOUT = 1.0
"""Seconds the closing handshake may take: the transport cancels an agent 2 s after its call."""
HEARTBEAT = 20.0
"""Seconds between WebSocket pings, so a backend that vanished without a FIN is noticed."""
MAX_MESSAGE = 32 << 20
"""Largest backend message: ``conversation.item.retrieved`` carries a whole item's audio."""
CHANNEL_WAIT = 2.0
"""Seconds a last error waits for the client's events channel, which opens after the call
connects: a backend that is down fails faster than that."""
TRACKED_SEGMENTS = 64
"""Items of queued audio remembered for truncation: far more than one playback stretch holds."""

PCM = {"type": "audio/pcm", "rate": RATE}
LOCAL_EVENTS = frozenset({"input_audio_buffer.append", "output_audio_buffer.clear"})
"""Client events the Call answers: over WebRTC the input is the media track, and the output
buffer is the transceiver's."""
AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
NOT_FORWARDED = frozenset(
    {
        "session.created",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
    }
)
"""Backend events the client gets from the Call instead (see the module docstring)."""
SESSION_FIELDS_NOT_FORWARDED = frozenset({"id", "object", "model", "expires_at"})
"""Read-only session fields, and ``model``, which the operator picks (``Backend.model``)."""
TURN_EVENTS = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    }
)
"""The Call's turn events, which the agent also gets: the backend's are the client's."""
OWN_EVENT = "event_bridge"
"""Prefix of the ids of events the bridge itself sends, to recognise the backend's answers."""


class BackendProtocolError(Exception):
    """The backend sent a message that is not a Realtime event the bridge can act on."""


@dataclass(frozen=True, slots=True)
class Backend:
    """Where and how to reach the model: ``voicewire serve --backend*``."""

    url: str
    """``ws://`` or ``wss://`` URL of the Realtime WebSocket, e.g.
    ``wss://api.openai.com/v1/realtime``."""
    key: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer``; kept out of ``repr`` and logs."""
    model: str = "gpt-realtime"
    """``?model=`` when the URL names none."""

    def connect_url(self) -> URL:
        url = URL(self.url)
        return url if "model" in url.query else url.update_query(model=self.model)

    def headers(self) -> dict[str, str]:
        return {} if self.key is None else {"Authorization": f"Bearer {self.key}"}


class RealtimeBridge:
    """The agent; a transport makes one per call (``registry.agent_factory``)."""

    session_defaults = rt.with_turn_detection(dict(DEFAULTS))  # OpenAI's default: server_vad
    handles = frozenset(rt.CLIENT_EVENTS) - LOCAL_EVENTS
    forwards_turn_events = True

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.malformed = 0
        """Backend messages that were not JSON events (or lacked a field the bridge reads)."""
        self.dropped_deltas = 0
        """Audio deltas of a response that is not the one in progress."""

    async def run(self, call: Call) -> None:
        # total=None: aiohttp's default 5-minute total would otherwise bound the whole call.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    ws = await http.ws_connect(
                        self.backend.connect_url(),
                        headers=self.backend.headers(),
                        heartbeat=HEARTBEAT,
                        max_msg_size=MAX_MESSAGE,
                        timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
                    )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                await self._fail(call, _unreachable(exc), "backend_unavailable", exc)
                return
            async with ws:
                await _Link(self, call, ws).run()
                if not call.closed:
                    code = "" if ws.close_code is None else f" (code {ws.close_code})"
                    message = f"the model backend closed the connection{code}"
                    await self._fail(call, message, "backend_closed")
        if self.malformed or self.dropped_deltas:
            log.warning(
                "backend misbehaved",
                extra={
                    "call_id": call.call_id,
                    "malformed": self.malformed,
                    "dropped_deltas": self.dropped_deltas,
                },
            )

    async def _fail(
        self, call: Call, message: str, code: str, exc: BaseException | None = None
    ) -> None:
        """Tell the client why its call is about to end, waiting a little for its channel."""
        extra = {"call_id": call.call_id, "backend": URL(self.backend.url).host}  # no token
        if exc is not None:
            extra["error"] = f"{type(exc).__name__}: {exc}"
        log.warning(message, extra=extra)
        call.send_event(rt.error(message, kind="server_error", code=code))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CHANNEL_WAIT
        while not call.events_open and not call.closed and loop.time() < deadline:
            await asyncio.sleep(0.05)  # the error waits for the channel; the call ends after


def _unreachable(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the model backend refused the connection (HTTP {exc.status})"
    return "the model backend is unreachable"


def backend_session(session: dict[str, Any]) -> dict[str, Any]:
    """A session (or an update to one) as the backend gets it: PCM16 at 24 kHz both ways, the
    GA ``type``, and without the fields that are not the client's to set there."""
    fields = {k: v for k, v in session.items() if k not in SESSION_FIELDS_NOT_FORWARDED}
    audio = fields.get("audio", {})
    fields["audio"] = {
        **audio,
        "input": {**audio.get("input", {}), "format": PCM},
        "output": {**audio.get("output", {}), "format": PCM},
    }
    return {"type": "realtime", **fields}


@dataclass(slots=True)
class _Segment:
    response_id: str | None
    item_id: str | None
    samples: int


class _Heard:
    """The backend's audio in the order it was queued to the caller, item by item.

    The Call reports ``played_ms`` from the start of the playback stretch that was cut, and the
    response that stretch began with; walking the items queued from there finds the one the
    caller was hearing and how far into it, even when a stretch ran on into a later reply.
    """

    def __init__(self) -> None:
        self._segments: deque[_Segment] = deque(maxlen=TRACKED_SEGMENTS)

    def queued(self, response_id: str | None, item_id: str | None, samples: int) -> None:
        last = self._segments[-1] if self._segments else None
        if last is not None and (last.response_id, last.item_id) == (response_id, item_id):
            last.samples += samples
        else:
            self._segments.append(_Segment(response_id, item_id, samples))

    def cut(self, response_id: str | None, played_ms: int) -> tuple[str, int] | None:
        """(item id, ms of it heard) when playback was cut; forgets all: the cut dropped it."""
        segments = list(self._segments)
        self._segments.clear()
        start = next((i for i, s in enumerate(segments) if s.response_id == response_id), None)
        if start is None:
            return None
        left = played_ms * RATE // 1000
        for segment in segments[start:]:
            if left <= segment.samples:
                break
            left -= segment.samples  # heard to its end: the cut came in a later item
        if segment.item_id is None:
            return None
        return segment.item_id, min(left, segment.samples) * 1000 // RATE


class _Link:
    """One call's bridge: three tasks (audio up, client events, backend events) over one socket."""

    def __init__(
        self, agent: RealtimeBridge, call: Call, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        self._agent = agent
        self._call = call
        self._ws = ws
        self._replies = contextlib.ExitStack()
        self._reply: Response | None = None
        """The backend's response in progress (``response.created`` … ``response.done``)."""
        self._cancel_sent = False
        self._heard = _Heard()

    async def run(self) -> None:
        """Until the call ends or the backend goes away, whichever is first."""
        session = backend_session(self._call.session)
        await self._send({"type": "session.update", "event_id": _own_id(), "session": session})
        tasks = [
            asyncio.create_task(self._audio_up()),
            asyncio.create_task(self._client_events()),
            asyncio.create_task(self._backend_events()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._replies.close()
        for task in done:
            task.result()  # a bug in a task is the agent's failure, and logged as one

    async def _send(self, event: dict[str, Any]) -> None:
        """Send to the backend; if it has gone, drop: the receiving task sees the close."""
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await self._ws.send_str(json.dumps(event, separators=(",", ":")))

    # Caller to backend.

    async def _audio_up(self) -> None:
        batch = bytearray()
        size = RATE * 2 * BATCH_MS // 1000
        async for frame in self._call.audio(RATE):
            batch += frame.pcm
            if len(batch) >= size:
                audio = base64.b64encode(batch).decode("ascii")
                batch.clear()
                await self._send({"type": "input_audio_buffer.append", "audio": audio})

    async def _client_events(self) -> None:
        async for event in self._call.events():
            kind = event["type"]
            if kind == "output_audio_buffer.cleared":
                await self._cut(event)
            elif kind in TURN_EVENTS:
                continue
            elif kind == "session.update":
                self._call.update_session(event["session"])
                await self._send({**event, "session": backend_session(event["session"])})
            elif kind == "response.cancel":
                await self._send(event)
                reply = self._reply
                if reply is not None and event.get("response_id", reply.id) == reply.id:
                    self._cancel_sent = True
                    self._call.interrupt()  # as the Call does for other agents: stop the audio
            else:
                await self._send(event)

    async def _cut(self, cleared: dict[str, Any]) -> None:
        """Playback was cut: stop the backend's reply and truncate what the caller did not hear."""
        await self._cancel_reply()
        heard = self._heard.cut(cleared["response_id"], cleared["played_ms"])
        if heard is not None:
            item_id, audio_end_ms = heard
            truncate = {
                "type": "conversation.item.truncate",
                "event_id": _own_id(),
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
            await self._send(truncate)

    async def _cancel_reply(self) -> None:
        reply = self._reply
        if reply is not None and not self._cancel_sent:
            self._cancel_sent = True
            await self._send(
                {"type": "response.cancel", "event_id": _own_id(), "response_id": reply.id}
            )

    # Backend to caller.

    async def _backend_events(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                self._malformed(f"a {message.type.name} message")
                continue
            try:
                event = json.loads(message.data)
                _string(event, "type")
                await self._from_backend(event)
            except (ValueError, BackendProtocolError) as exc:  # binascii.Error is a ValueError
                self._malformed(str(exc))

    async def _from_backend(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind in AUDIO_DELTAS:
            await self._play(event)
            return
        if kind in NOT_FORWARDED:
            return
        if kind == "error":
            if _lost_cancel_race(event):
                return
            # Logged too: an operator sees a backend that refuses the session it is given.
            log.info("backend error", extra={"call_id": self._call.call_id, "error": event})
        if kind == "response.created":
            self._open_reply(_string(event, "response", "id"))
        self._call.send_event(event)
        if kind == "response.done" and self._reply is not None:
            if _string(event, "response", "id") == self._reply.id:
                self._close_reply()

    async def _play(self, delta: dict[str, Any]) -> None:
        reply = self._reply
        response_id = delta.get("response_id")
        if response_id is not None and (reply is None or response_id != reply.id):
            self._agent.dropped_deltas += 1
            return
        if reply is not None and reply.cancelled:
            await self._cancel_reply()  # the Call cut it: e.g. a clear before any audio played
            return
        pcm = base64.b64decode(_string(delta, "delta"), validate=True)
        item_id = delta.get("item_id")
        owner = None if reply is None else reply.id
        self._heard.queued(owner, item_id if isinstance(item_id, str) else None, len(pcm) // 2)
        self._call.say(pcm, RATE)

    def _open_reply(self, response_id: str) -> None:
        self._close_reply()
        self._reply = self._replies.enter_context(self._call.response(response_id, announce=False))
        self._cancel_sent = False

    def _close_reply(self) -> None:
        self._replies.close()
        self._reply = None

    def _malformed(self, what: str) -> None:
        self._agent.malformed += 1
        if self._agent.malformed == 1:  # a backend that sends junk would flood the log
            log.warning(
                "backend message is not a Realtime event; dropped (counted from now on)",
                extra={"call_id": self._call.call_id, "error": what},
            )


def _own_id() -> str:
    return rt.new_id(OWN_EVENT)


def _string(event: Any, *path: str) -> str:
    """The string at ``path`` in a backend event, or BackendProtocolError."""
    value = event
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str):
        raise BackendProtocolError(f"'{'.'.join(path)}' is not a string in {str(event)[:200]}")
    return value


def _lost_cancel_race(event: dict[str, Any]) -> bool:
    """The backend's answer to our cancel of a reply it had already ended by itself."""
    error = event.get("error")
    if not isinstance(error, dict) or error.get("code") != "response_cancel_not_active":
        return False
    event_id = error.get("event_id")
    return isinstance(event_id, str) and event_id.startswith(OWN_EVENT)
