"""The client event schema: what OpenAI's clients send passes; anything else is an EventError
naming the parameter, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicewire.agents import realtime_events as rt

SDK_STYLE_UPDATE = {
    "type": "session.update",
    "event_id": "evt_1",
    "session": {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "You are terse.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "prefix_padding_ms": 200,
                    "silence_duration_ms": 400,
                    "create_response": True,
                    "interrupt_response": True,
                    "idle_timeout_ms": None,
                },
                "transcription": None,
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
        },
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
    },
}


def test_a_full_session_update_as_an_sdk_sends_it_is_valid():
    assert rt.validate_client_event(SDK_STYLE_UPDATE) is SDK_STYLE_UPDATE


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.create"},
        {"type": "response.create", "response": {"instructions": "x", "metadata": None}},
        {"type": "response.cancel", "response_id": "resp_1"},
        {"type": "output_audio_buffer.clear"},
        {
            "type": "conversation.item.truncate",
            "item_id": "i",
            "content_index": 0,
            "audio_end_ms": 1,
        },
        {"type": "input_audio_buffer.append", "audio": "AAAA"},
        {"type": "input_audio_buffer.commit"},
        {"type": "conversation.item.create", "item": {"type": "message"}},
    ],
)
def test_every_supported_client_event_has_a_schema(event):
    assert rt.validate_client_event(event) is event


def test_merging_an_update_replaces_leaves_and_merges_objects():
    merged = rt.merge_session(
        {"instructions": "a", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
        {"audio": {"input": {"turn_detection": None}, "output": {"voice": "v"}}},
    )
    assert merged == {
        "instructions": "a",
        "audio": {"input": {"turn_detection": None}, "output": {"voice": "v"}},
    }
    assert rt.turn_detection(merged) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    kind=st.sampled_from([*rt.CLIENT_EVENTS, "x"]),
    body=st.dictionaries(
        st.sampled_from(["session", "response", "item_id", "audio", "event_id", "x"]),
        json_values,
        max_size=4,
    ),
)
def test_anything_json_is_valid_or_an_event_error(kind, body):
    event = json.loads(json.dumps({**body, "type": kind}))
    try:
        rt.validate_client_event(event)
    except rt.EventError as exc:
        assert exc.message and exc.param is not None


@settings(max_examples=200)
@given(session=st.dictionaries(st.sampled_from(sorted(rt.SESSION.fields)), json_values, max_size=5))
def test_any_session_object_is_valid_or_an_event_error(session):
    try:
        rt.validate_session(session)
    except rt.EventError as exc:
        assert exc.param.startswith("session.")
