"""The agent's side of a call and the conversation conventions the Call keeps, against a
recording outlet (the transceiver's side is covered end to end in tests/e2e)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.speech import speech_pcm
from voicewire.agents import realtime_events as rt
from voicewire.agents.api import Call, Response
from voicewire.agents.turn_detection import DEFAULTS
from voicewire.rtc.audio_stream import AudioReceived, AudioStats

FRAME = 960  # samples in 20 ms at 48 kHz


class RecordingOutlet:
    """A paced transport that records everything and plays 20 ms per ``advance``."""

    paced = True
    events_open = True

    def __init__(self) -> None:
        self.queued = bytearray()
        self.sent = 0.0
        self.events: list[dict[str, Any]] = []
        self.responses: list[Response | None] = []

    def queue_audio(self, pcm: bytes, response: Response | None) -> None:
        self.queued += pcm
        self.responses.append(response)

    def clear_audio(self) -> None:
        self.queued.clear()

    def sent_ms(self) -> float:
        return self.sent

    def stats(self) -> AudioStats:
        return AudioStats(None, 0.0, 0, 0, 0, len(self.queued) / 96)

    def send_event(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return True

    def advance(self, call: Call, frames: int = 1) -> None:
        """Play ``frames`` frames; report drained as the session would once the queue is dry."""
        for _ in range(frames):
            if self.queued:
                del self.queued[: 2 * FRAME]
                self.sent += 20
                if not self.queued:
                    call.output_drained()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def frame(value: int = 0) -> AudioReceived:
    return AudioReceived(np.full(FRAME, value, dtype="<i2").tobytes(), False)


def frames_of(pcm: np.ndarray) -> list[AudioReceived]:
    padded = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME, dtype=np.int16)])
    return [
        AudioReceived(padded[i : i + FRAME].tobytes(), False) for i in range(0, len(padded), FRAME)
    ]


def voiced_extent_ms(pcm: np.ndarray) -> tuple[int, int]:
    """Where the loud part of a recording starts and ends (20 ms windows above -40 dBFS)."""
    windows = pcm[: len(pcm) // FRAME * FRAME].astype(float).reshape(-1, FRAME)
    loud = np.flatnonzero(np.sqrt((windows**2).mean(axis=1)) > 32768 * 10 ** (-40 / 20))
    return int(loud[0]) * 20, (int(loud[-1]) + 1) * 20


def turns_on(**settings: Any) -> dict[str, Any]:
    return rt.with_turn_detection({**DEFAULTS, **settings})


def drain(queue_iter_call: Call) -> list[dict[str, Any]]:
    events = []
    while not queue_iter_call._events.empty():
        event = queue_iter_call._events.get_nowait()
        if event is not None:
            events.append(event)
    return events


SPEECH = "Please repeat after me: the quick brown fox."


async def test_frames_arrive_in_order_at_the_rate_asked_for_and_iteration_ends_with_the_call():
    call = Call("c1", RecordingOutlet())

    async def listen(rate: int) -> list:
        return [f async for f in call.audio(rate)]

    task = asyncio.create_task(listen(16000))
    await asyncio.sleep(0)
    for n in range(3):
        call.deliver(frame(n * 1000))
    call.end("hangup")
    got = await task
    assert [f.start_ms for f in got] == [0, 20, 40]
    assert all(f.rate == 16000 and len(f.pcm) == 640 for f in got)
    steady = np.frombuffer(got[2].pcm, dtype="<i2")
    assert abs(int(steady[-1]) - 2000) <= 2  # the level survives the conversion
    assert await call.wait_closed() == "hangup"


async def test_a_slow_agent_loses_the_oldest_frames_not_the_newest():
    call = Call("c1", RecordingOutlet(), max_buffered_frames=5)
    frames = call.audio()
    first = asyncio.ensure_future(frames.__anext__())
    await asyncio.sleep(0)
    call.deliver(frame(0))
    assert (await first).start_ms == 0
    for n in range(1, 9):
        call.deliver(frame(n))
    call.end("hangup")
    assert [f.start_ms async for f in frames] == [100, 120, 140, 160]  # room kept for the end
    assert call.dropped_frames == 4


async def test_say_resamples_and_stops_at_the_end_of_the_call():
    outlet = RecordingOutlet()
    call = Call("c1", outlet)
    call.say(np.full(480, 1000, dtype="<i2").tobytes(), rate=24000)  # 20 ms at 24 kHz
    assert len(outlet.queued) == 2 * FRAME
    call.say(b"")
    call.end("hangup")
    call.say(b"\x00\x01")
    assert len(outlet.queued) == 2 * FRAME


async def test_output_buffer_events_follow_playback_and_interrupt_reports_what_was_played():
    outlet = RecordingOutlet()
    call = Call("c1", outlet)
    with call.response() as response:
        call.say(bytes(2 * FRAME * 10))  # 200 ms
    assert outlet.types() == [
        "response.created",
        "response.output_item.added",
        "output_audio_buffer.started",
        "response.output_item.done",
        "response.done",
    ]
    assert outlet.events[2]["response_id"] == response.id
    assert outlet.events[-1]["response"]["status"] == "completed"
    outlet.advance(call, 6)
    assert call.interrupt() == 120.0
    assert outlet.types()[-1] == "output_audio_buffer.cleared"
    cleared = drain(call)[-1]
    assert cleared["played_ms"] == 120 and cleared["item_id"] == response.item_id

    outlet.events.clear()
    call.say(bytes(2 * FRAME * 2))
    outlet.advance(call, 2)
    assert outlet.types() == ["output_audio_buffer.started", "output_audio_buffer.stopped"]


async def test_an_underrun_inside_a_reply_is_not_the_end_of_the_output():
    outlet = RecordingOutlet()
    call = Call("c1", outlet)
    with call.response():
        call.say(bytes(2 * FRAME))
        outlet.advance(call)  # dry, but the reply goes on
        call.say(bytes(2 * FRAME))
        assert "output_audio_buffer.stopped" not in outlet.types()
    outlet.advance(call)
    assert outlet.types().count("output_audio_buffer.started") == 1
    assert outlet.types()[-1] == "output_audio_buffer.stopped"


async def test_speech_onset_interrupts_the_reply_before_anyone_else_hears_of_it():
    outlet = RecordingOutlet()
    call = Call("c1", outlet, session=turns_on())
    with call.response() as response:
        call.say(bytes(2 * FRAME * 50))
        for f in frames_of(speech_pcm(SPEECH)):
            call.deliver(f)
            outlet.advance(call)
            if response.cancelled:
                break
        call.say(bytes(2 * FRAME))  # the agent is late: this must not be heard
    assert response.cancelled and response.reason == "turn_detected"
    assert not outlet.queued
    kinds = outlet.types()
    assert kinds.index("output_audio_buffer.cleared") < kinds.index(
        "input_audio_buffer.speech_started"
    )
    done = [e for e in outlet.events if e["type"] == "response.done"]
    assert [d["response"]["status"] for d in done] == ["cancelled"]
    assert done[0]["response"]["status_details"]["reason"] == "turn_detected"


async def test_a_spoken_turn_is_marked_and_committed_on_the_input_timeline():
    outlet = RecordingOutlet()
    call = Call("c1", outlet, session=turns_on(silence_duration_ms=300, prefix_padding_ms=100))
    speech = speech_pcm(SPEECH)
    silence = np.zeros(48000, dtype=np.int16)
    for f in frames_of(np.concatenate([silence, speech, silence])):
        call.deliver(f)
    started, stopped, committed = (e for e in drain(call))
    onset_ms, end_ms = (1000 + ms for ms in voiced_extent_ms(speech))
    assert started["type"] == "input_audio_buffer.speech_started"
    assert onset_ms - 100 - 40 <= started["audio_start_ms"] <= onset_ms - 100 + 60
    assert stopped["type"] == "input_audio_buffer.speech_stopped"
    assert abs(stopped["audio_end_ms"] - end_ms) <= 100
    assert stopped["item_id"] == started["item_id"] == committed["item_id"]
    assert committed["audio_start_ms"] == started["audio_start_ms"]
    assert committed["audio_end_ms"] == stopped["audio_end_ms"]
    assert outlet.types() == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]


async def test_silence_and_noise_are_not_turns():
    call = Call("c1", RecordingOutlet(), session=turns_on())
    rng = np.random.default_rng(1)
    hiss = (rng.standard_normal(48000 * 2) * 30).astype(np.int16)  # about -60 dBFS
    for f in frames_of(np.concatenate([np.zeros(48000, dtype=np.int16), hiss])):
        call.deliver(f)
    assert drain(call) == []


async def test_session_update_merges_reports_and_retunes_turn_detection():
    outlet = RecordingOutlet()
    call = Call("c1", outlet, session=turns_on())
    call.deliver_event(
        {
            "type": "session.update",
            "session": {"instructions": "be brief", "audio": {"input": {"turn_detection": None}}},
        }
    )
    updated = outlet.events[-1]
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] == "be brief"
    assert updated["session"]["audio"]["input"]["turn_detection"] is None
    assert updated["session"]["id"] == "c1"
    for f in frames_of(speech_pcm(SPEECH)):
        call.deliver(f)
    assert drain(call) == []  # turn detection is off now


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"type": "session.update"}, "session"),
        ({"type": "session.update", "session": {"voice": 3}}, "session.voice"),
        ({"type": "session.update", "session": {"temperature": "hot"}}, "session.temperature"),
        (
            {"type": "session.update", "session": {"audio": {"input": {"turn_detection": 5}}}},
            "session.audio.input.turn_detection",
        ),
        ({"type": "conversation.item.truncate", "item_id": "x"}, "audio_end_ms"),
        ({"type": "no.such.event"}, "type"),
        ({"type": "response.cancel", "surprise": 1}, "surprise"),
        ({"type": "response.create"}, "type"),  # valid, but this agent does not take it
    ],
)
async def test_invalid_or_unsupported_events_get_an_error_naming_the_parameter(event, param):
    outlet = RecordingOutlet()
    call = Call("c1", outlet)
    call.deliver_event({**event, "event_id": "evt_1"})
    (error,) = outlet.events
    assert error["type"] == "error"
    assert error["error"]["param"] == param
    assert error["error"]["event_id"] == "evt_1"
    assert error["error"]["message"]


async def test_events_an_agent_handles_reach_it_and_nothing_answers_for_it():
    outlet = RecordingOutlet()
    call = Call("c1", outlet, handles=frozenset({"session.update", "response.create"}))
    call.deliver_event({"type": "session.update", "session": {"instructions": "x"}})
    call.deliver_event({"type": "response.create"})
    assert outlet.events == []
    assert [e["type"] for e in drain(call)] == ["session.update", "response.create"]


async def test_response_cancel_output_clear_and_truncate_by_default():
    outlet = RecordingOutlet()
    call = Call("c1", outlet)
    call.deliver_event({"type": "response.cancel"})
    assert outlet.events[-1]["error"]["code"] == "response_cancel_not_active"

    with call.response() as response:
        call.deliver_event({"type": "response.cancel", "response_id": response.id})
        assert response.cancelled
        call.say(bytes(2 * FRAME))
    assert not outlet.queued
    assert outlet.types()[-1] == "response.done"

    call.say(bytes(2 * FRAME * 5))
    call.deliver_event({"type": "output_audio_buffer.clear"})
    assert not outlet.queued and outlet.types()[-1] == "output_audio_buffer.cleared"

    truncate = {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0}
    call.deliver_event({**truncate, "audio_end_ms": 640})
    assert outlet.events[-1] == {
        **truncate,
        "type": "conversation.item.truncated",
        "audio_end_ms": 640,
    }


async def test_manual_turns_commit_what_was_said_since_the_last_commit():
    outlet = RecordingOutlet()
    call = Call("c1", outlet, session=rt.with_turn_detection(None))
    for _ in range(3):
        call.deliver(frame())
    call.deliver_event({"type": "input_audio_buffer.commit"})
    assert outlet.events[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
    for _ in range(10):
        call.deliver(frame())
    call.deliver_event({"type": "input_audio_buffer.commit"})
    assert outlet.types()[-1] == "input_audio_buffer.committed"
    committed = drain(call)[-1]
    assert (committed["audio_start_ms"], committed["audio_end_ms"]) == (0, 260)
    call.deliver_event({"type": "input_audio_buffer.clear"})
    assert outlet.types()[-1] == "input_audio_buffer.cleared"
    call.deliver_event({"type": "input_audio_buffer.append", "audio": ""})
    assert outlet.events[-1]["error"]["code"] == "unsupported_event"


async def test_an_agent_waiting_for_audio_wakes_when_the_call_ends():
    call = Call("c1", RecordingOutlet())

    async def agent() -> int:
        return len([f async for f in call.audio()])

    task = asyncio.create_task(agent())
    await asyncio.sleep(0)
    call.end("consent_lost")
    assert await asyncio.wait_for(task, 1) == 0
    assert call.closed and call.close_reason == "consent_lost"
