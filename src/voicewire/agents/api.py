"""The Agent API: what a model-side program sees of a live call (DESIGN §7).

An agent is any object with ``async def run(self, call: Call) -> None``. Its transport (the
transceiver for WebRTC calls, ``agent-server`` for WebSocket clients) starts it when the call
connects and cancels it when the call ends. Inside, the agent iterates over the caller's audio
at the rate it wants, reads events, and speaks with ``say``, which returns at once: the
transport paces the audio out in real time.

The ``Call`` also keeps the conversation conventions of OpenAI's Realtime API, so every agent
gets them without writing them: it validates client events, applies ``session.update``, runs
turn detection on the caller's audio (``input_audio_buffer.speech_started`` / ``stopped`` /
``committed``), reports the output buffer (``output_audio_buffer.started`` / ``stopped`` /
``cleared``), frames each reply with ``response.created`` / ``response.done``, and answers
``response.cancel``, ``output_audio_buffer.clear`` and ``conversation.item.truncate``. Barge-in
is here too, not in agents: when the caller starts talking over a reply the output is dropped
in the same step that detects the speech, so its latency does not depend on how busy an agent is.

An agent may declare, with a ``handles`` attribute, client event types it takes over; those go
to it instead of the default handling (the realtime bridge forwards them to its backend). One
that sets ``forwards_turn_events = True`` sends the client the turn events of its own backend
(whose item ids the rest of that backend's events use); the Call then still detects turns on the
caller's audio, to cut playback at once and to tell the agent, but reports none to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicewire.agents import realtime_events as rt
from voicewire.agents.resample import Framer, Resampler, check_rate, frame_bytes
from voicewire.agents.turn_detection import DEFAULTS, FRAME_MS, SpeechStarted, TurnDetector
from voicewire.rtc.audio_stream import AudioReceived
from voicewire.rtc.audio_stream import AudioStats as CallStats
from voicewire.rtc.opus import SAMPLE_RATE

__all__ = ["Agent", "AudioFrame", "Call", "CallOutlet", "CallStats", "Response", "SAMPLE_RATE"]

MIN_COMMIT_MS = 100  # OpenAI refuses to commit less than 100 ms of input audio


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of the caller's voice as PCM16 mono at ``rate``.

    ``start_ms`` places it on the call's input timeline, the clock that turn events use
    (``audio_start_ms``, ``audio_end_ms``); ``concealed`` if it was lost and made up.
    """

    pcm: bytes
    rate: int
    start_ms: int
    concealed: bool


@dataclass(eq=False)
class Response:
    """One agent reply: ``response.created`` … ``response.done`` on the client's side."""

    id: str
    announce: bool
    """False when another party (a backend behind the bridge) sends the response events."""
    status: str = "in_progress"
    reason: str | None = None
    item_id: str | None = None
    """The reply's audio item, made when it first says something."""
    said_all: bool = False
    """Its block ended while an unpaced transport still had its audio to send: the reply is
    done when that has all left (``output_drained``), and can be cancelled until then."""

    @property
    def cancelled(self) -> bool:
        """The caller interrupted or the client cancelled: stop producing this reply."""
        return self.status == "cancelled"


class CallOutlet(Protocol):
    """What a transport provides to a Call; agents never see it."""

    paced: bool
    """True when the transport plays audio out in real time (WebRTC); False when the client
    plays it and the transport streams it there (a WebSocket's audio deltas). Either reports
    ``output_drained`` when everything queued has left."""

    def queue_audio(self, pcm: bytes, response: Response | None) -> None: ...
    def clear_audio(self) -> None: ...
    def sent_ms(self) -> float: ...
    def stats(self) -> CallStats: ...
    def send_event(self, event: dict[str, Any]) -> bool: ...

    @property
    def events_open(self) -> bool:
        """True when an event sent now goes out now; before the client's events channel
        opens, ``send_event`` keeps what it is given for it (a bounded number)."""
        ...


class Agent(Protocol):
    async def run(self, call: Call) -> None: ...


@dataclass
class _Input:
    """The agent's view of the caller's audio at the rate it asked for."""

    rate: int
    resampler: Resampler | None
    framer: Framer
    start_ms: int | None = None


@dataclass
class _Output:
    """What the caller is hearing: for ``output_audio_buffer`` events and barge-in."""

    playing: bool = False
    drained: bool = False
    mark_ms: float = 0.0
    """``sent_ms`` when the current playback began: what was played since is ``sent − mark``."""
    response_id: str | None = None
    item_id: str | None = None
    resamplers: dict[int, Resampler] = field(default_factory=dict)


class Call:
    """One live call, from the agent's side."""

    def __init__(
        self,
        call_id: str,
        outlet: CallOutlet,
        *,
        session: dict[str, Any] | None = None,
        handles: frozenset[str] = frozenset(),
        report_turns: bool = True,
        max_buffered_frames: int = 50,
    ) -> None:
        self.call_id = call_id
        self._outlet = outlet
        self._handles = handles
        self._report_turns = report_turns
        self._session: dict[str, Any] = dict(session or {})
        self._frames: asyncio.Queue[AudioFrame | None] = asyncio.Queue(max_buffered_frames)
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._input: _Input | None = None
        self._input_ms = 0  # the caller's audio received so far: the input timeline
        self._uncommitted_from = 0  # start of input audio not yet committed (manual turns)
        self._turns: TurnDetector | None = None
        self._turn_item: str | None = None
        self._last_item: str | None = None
        self._response: Response | None = None
        self._output = _Output()
        self.close_reason: str | None = None
        self.dropped_frames = 0
        """Input frames thrown away because the agent fell more than a second behind."""
        self._configure_turns()

    @classmethod
    def for_agent(
        cls, agent: Agent, call_id: str, outlet: CallOutlet, config: dict[str, Any]
    ) -> Call:
        """The call an agent runs: its ``session_defaults`` under the client's ``config``, the
        event types it ``handles``, and whether it ``forwards_turn_events`` itself."""
        return cls(
            call_id,
            outlet,
            session=rt.merge_session(getattr(agent, "session_defaults", {}), config),
            handles=getattr(agent, "handles", frozenset()),
            report_turns=not getattr(agent, "forwards_turn_events", False),
        )

    # The agent's side.

    @property
    def session(self) -> dict[str, Any]:
        """The session configuration as the client last set it (read-only by convention)."""
        return self._session

    async def audio(self, rate: int = SAMPLE_RATE) -> AsyncIterator[AudioFrame]:
        """The caller's audio in 20 ms PCM16 mono frames at ``rate`` Hz, until the call ends.

        ``rate`` is one of 8000, 16000, 24000, 48000 (the codec's own, no conversion).
        """
        check_rate(rate)
        if self._input is None or self._input.rate != rate:
            resampler = None if rate == SAMPLE_RATE else Resampler(SAMPLE_RATE, rate)
            self._input = _Input(rate, resampler, Framer(frame_bytes(rate)))
        while True:
            frame = await self._frames.get()
            if frame is None:
                return
            yield frame

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Events for the agent, in order, until the call ends.

        The client's events of the types the agent ``handles``; the turn events the client
        also gets (``input_audio_buffer.speech_started`` / ``speech_stopped``); and
        ``input_audio_buffer.committed`` and ``output_audio_buffer.cleared`` with the extra
        fields an agent needs (``audio_start_ms``/``audio_end_ms``, ``played_ms``).
        """
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    def send_event(self, event: dict[str, Any]) -> bool:
        """Send a JSON event to the client; False if it can get none any more.

        Before the client's events channel opens (the agent starts when the media connects,
        the channel follows), events wait and go right after ``session.created``; see
        ``events_open``. An ``event_id`` is added when the event has none.
        """
        return not self._closed.is_set() and self._outlet.send_event(event)

    @property
    def events_open(self) -> bool:
        """Whether an event sent now reaches the client now (its events channel is open)."""
        return not self._closed.is_set() and self._outlet.events_open

    def say(self, pcm: bytes, rate: int = SAMPLE_RATE) -> None:
        """Queue PCM16 mono audio of any length at ``rate`` Hz to play; returns at once.

        Inside a response that was cancelled (the caller talked over it), audio is dropped:
        an agent that is still producing the old reply cannot talk over the caller.
        """
        response = self._response
        if not pcm or self._closed.is_set() or (response is not None and response.cancelled):
            return
        if rate != SAMPLE_RATE:
            output = self._output
            resampler = output.resamplers.get(rate)
            if resampler is None:
                resampler = output.resamplers[rate] = Resampler(check_rate(rate), SAMPLE_RATE)
            pcm = resampler.convert(pcm)
        if response is not None and response.item_id is None:
            response.item_id = rt.new_id("item")
            if response.announce:
                self._send(
                    {
                        "type": "response.output_item.added",
                        "response_id": response.id,
                        "output_index": 0,
                        "item": _assistant_item(response.item_id, "in_progress"),
                    }
                )
        self._start_playback(response)
        self._outlet.queue_audio(pcm, response)

    def interrupt(self) -> float:
        """Drop all queued audio now (barge-in); return the milliseconds of it that were played.

        "Played" counts from when the current reply (or, outside replies, the current stretch
        of speech) began, so an agent learns how much of it the caller heard.
        """
        return self._interrupt("client_cancelled")

    @contextlib.contextmanager
    def response(
        self, response_id: str | None = None, *, announce: bool = True
    ) -> Iterator[Response]:
        """Frame a reply: ``response.created`` now, ``response.done`` when the block ends.

        ``say`` inside the block belongs to the reply; if the caller interrupts, the reply is
        ``cancelled`` and its further audio dropped. With ``announce=False`` (a backend sends
        its own response events) the Call only tracks the reply for barge-in.
        """
        if self._response is not None and self._response.status == "in_progress":
            self._finish_response("completed")
        response = Response(response_id or rt.new_id("resp"), announce)
        self._response = response
        if announce:
            self._send(
                {
                    "type": "response.created",
                    "response": rt.response_object(response.id, "in_progress"),
                }
            )
        try:
            yield response
        finally:
            if self._response is response:
                output = self._output
                if response.status != "in_progress":
                    self._response = None
                elif self._outlet.paced or not output.playing or output.drained:
                    self._finish_response("completed")
                    self._response = None
                else:  # still streaming to the client: done when it has all left
                    response.said_all = True

    def update_session(self, update: dict[str, Any]) -> None:
        """Apply a validated ``session.update`` here, turn detection included, without
        answering it: for an agent that ``handles`` the event because another party answers
        (the realtime bridge's backend sends the ``session.updated``)."""
        self._session = rt.merge_session(self._session, update)
        self._configure_turns()

    def stats(self) -> CallStats:
        return self._outlet.stats()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> str | None:
        await self._closed.wait()
        return self.close_reason

    # The transport's side.

    def deliver(self, frame: AudioReceived) -> None:
        """One 20 ms frame of the caller's audio at 48 kHz: turn detection, then the agent."""
        start_ms = self._input_ms
        self._input_ms += FRAME_MS
        if self._turns is not None and not self._closed.is_set():
            self._detect_turn(frame.pcm, start_ms)
        stream = self._input
        if stream is None:
            return  # the agent does not listen (yet)
        pcm = frame.pcm if stream.resampler is None else stream.resampler.convert(frame.pcm)
        if stream.start_ms is None:
            stream.start_ms = start_ms
        for piece in stream.framer.push(pcm):
            self._put_frame(AudioFrame(piece, stream.rate, stream.start_ms, frame.concealed))
            stream.start_ms += FRAME_MS

    def deliver_event(self, event: Any) -> None:
        """A decoded client event: validated, then handled here or passed to the agent."""
        try:
            rt.validate_client_event(event)
        except rt.EventError as exc:
            self._send(rt.error_for(exc, event))
            return
        kind = event["type"]
        if kind in self._handles:
            self._events.put_nowait(event)
            return
        handler = _DEFAULT_HANDLERS.get(kind)
        if handler is None:
            self._send(
                rt.error(
                    f"'{kind}' is not supported by this agent",
                    code="unsupported_event",
                    param="type",
                    event_id=event.get("event_id"),
                )
            )
            return
        handler(self, event)

    def output_drained(self) -> None:
        """The transport played out (paced) or sent (unpaced) everything queued."""
        output = self._output
        if not output.playing:
            return
        response = self._response
        if response is not None and response.status == "in_progress":
            if response.said_all:
                self._finish_response("completed")
            else:
                output.drained = True  # an underrun inside a reply: more is coming
            return
        self._stop_playback()

    def end(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        if self._frames.full():  # the end-of-call marker must fit
            self._frames.get_nowait()
            self.dropped_frames += 1
        self._frames.put_nowait(None)
        self._events.put_nowait(None)

    # Inside.

    def _send(self, event: dict[str, Any]) -> None:
        if not self._closed.is_set():
            self._outlet.send_event(event)

    def _report_turn(self, event: dict[str, Any]) -> None:
        """A turn event to the client, unless the agent forwards its backend's instead."""
        if self._report_turns:
            self._send(event)

    def _put_frame(self, frame: AudioFrame) -> None:
        """Hand the agent a frame; if it is a second behind, drop the oldest rather than lag."""
        if self._frames.full():
            self._frames.get_nowait()
            self.dropped_frames += 1
        self._frames.put_nowait(frame)

    def _configure_turns(self) -> None:
        settings = rt.turn_detection(self._session)
        if settings is None:
            self._turns = None
        elif self._turns is None or self._turns.settings != {**DEFAULTS, **settings}:
            self._turns = TurnDetector(settings)  # new settings: judge afresh

    def _detect_turn(self, pcm: bytes, start_ms: int) -> None:
        assert self._turns is not None
        event = self._turns.feed(pcm, start_ms)
        if event is None:
            return
        if isinstance(event, SpeechStarted):
            if self._turns.settings["interrupt_response"]:
                self._interrupt("turn_detected")  # barge-in, before anything else
            self._turn_item = rt.new_id("item")
            started = {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": event.audio_start_ms,
                "item_id": self._turn_item,
            }
            self._uncommitted_from = event.audio_start_ms
            self._report_turn(started)
            self._events.put_nowait(started)
            return
        stopped = {
            "type": "input_audio_buffer.speech_stopped",
            "audio_end_ms": event.audio_end_ms,
            "item_id": self._turn_item,
        }
        self._report_turn(stopped)
        self._events.put_nowait(stopped)
        self._commit(event.audio_end_ms, self._turn_item)

    def _commit(self, end_ms: int, item_id: str | None, client_event_id: str | None = None) -> None:
        start_ms = self._uncommitted_from
        if end_ms - start_ms < MIN_COMMIT_MS:
            self._report_turn(
                rt.error(
                    f"the input audio buffer holds {end_ms - start_ms} ms; "
                    f"at least {MIN_COMMIT_MS} ms are needed to commit",
                    code="input_audio_buffer_commit_empty",
                    event_id=client_event_id,
                )
            )
            return
        item_id = item_id or rt.new_id("item")
        committed = {
            "type": "input_audio_buffer.committed",
            "previous_item_id": self._last_item,
            "item_id": item_id,
        }
        self._report_turn(committed)
        self._events.put_nowait({**committed, "audio_start_ms": start_ms, "audio_end_ms": end_ms})
        self._last_item = item_id
        self._uncommitted_from = end_ms

    def _start_playback(self, response: Response | None) -> None:
        output = self._output
        output.drained = False
        if output.playing:
            return
        output.playing = True
        output.mark_ms = self._outlet.sent_ms()
        output.response_id = None if response is None else response.id
        output.item_id = None if response is None else response.item_id
        if self._outlet.paced:
            self._send({"type": "output_audio_buffer.started", "response_id": output.response_id})

    def _stop_playback(self) -> None:
        output = self._output
        output.playing = output.drained = False
        if self._outlet.paced:
            self._send({"type": "output_audio_buffer.stopped", "response_id": output.response_id})

    def _interrupt(self, reason: str) -> float:
        output = self._output
        played = self._outlet.sent_ms() - output.mark_ms if output.playing else 0.0
        self._outlet.clear_audio()
        response = self._response
        if output.playing:
            output.playing = output.drained = False
            cleared = {"type": "output_audio_buffer.cleared", "response_id": output.response_id}
            if self._outlet.paced:
                self._send(cleared)
            self._events.put_nowait(
                {**cleared, "played_ms": round(played), "item_id": output.item_id}
            )
        if response is not None and response.status == "in_progress":
            self._finish_response("cancelled", reason)
        return played

    def _finish_response(self, status: str, reason: str | None = None) -> None:
        response = self._response
        assert response is not None and response.status == "in_progress"
        response.status, response.reason = status, reason
        if response.announce:
            done = rt.response_object(response.id, status, reason)
            if response.item_id is not None:
                item_status = "completed" if status == "completed" else "incomplete"
                item = _assistant_item(response.item_id, item_status)
                done["output"] = [item]
                self._send(
                    {
                        "type": "response.output_item.done",
                        "response_id": response.id,
                        "output_index": 0,
                        "item": item,
                    }
                )
            self._send({"type": "response.done", "response": done})
        if self._output.drained:
            self._stop_playback()
        elif not self._outlet.paced:
            self._output.playing = False  # its audio has all left: the next reply starts afresh
        if response.said_all:
            self._response = None  # its block has ended

    # Default handling of client events (an agent's ``handles`` takes precedence).

    def _on_session_update(self, event: dict[str, Any]) -> None:
        self.update_session(event["session"])
        self._send(rt.session_event("session.updated", self.call_id, self._session))

    def _on_response_cancel(self, event: dict[str, Any]) -> None:
        response = self._response
        wanted = event.get("response_id")
        active = response is not None and response.status == "in_progress"
        if not active or (wanted is not None and wanted != response.id):
            self._send(
                rt.error(
                    "there is no response in progress to cancel",
                    code="response_cancel_not_active",
                    event_id=event.get("event_id"),
                )
            )
            return
        self._interrupt("client_cancelled")

    def _on_output_clear(self, event: dict[str, Any]) -> None:
        self._interrupt("client_cancelled")

    def _on_truncate(self, event: dict[str, Any]) -> None:
        self._send(
            {
                "type": "conversation.item.truncated",
                "item_id": event["item_id"],
                "content_index": event["content_index"],
                "audio_end_ms": event["audio_end_ms"],
            }
        )

    def _on_commit(self, event: dict[str, Any]) -> None:
        if self._turns is not None:
            self._send(
                rt.error(
                    "turn detection commits the input audio; turn it off to commit by hand",
                    code="invalid_value",
                    event_id=event.get("event_id"),
                )
            )
            return
        self._commit(self._input_ms, None, event.get("event_id"))

    def _on_input_clear(self, event: dict[str, Any]) -> None:
        self._uncommitted_from = self._input_ms
        self._send({"type": "input_audio_buffer.cleared"})

    def _on_append(self, event: dict[str, Any]) -> None:
        self._send(
            rt.error(
                "over WebRTC the caller's audio is the media track, not input_audio_buffer.append",
                code="unsupported_event",
                param="type",
                event_id=event.get("event_id"),
            )
        )


_DEFAULT_HANDLERS = {
    "session.update": Call._on_session_update,
    "response.cancel": Call._on_response_cancel,
    "output_audio_buffer.clear": Call._on_output_clear,
    "conversation.item.truncate": Call._on_truncate,
    "input_audio_buffer.commit": Call._on_commit,
    "input_audio_buffer.clear": Call._on_input_clear,
    "input_audio_buffer.append": Call._on_append,
}


def _assistant_item(item_id: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_audio"}],
    }
