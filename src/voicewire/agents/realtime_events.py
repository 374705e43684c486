"""The OpenAI Realtime event conventions: the client events we accept, checked field by field,
and the server events we send, built in one place.

Clients written for OpenAI's Realtime API (over the ``oai-events`` data channel or a WebSocket)
should work unchanged, so names and shapes follow that API; ``docs/events.md`` lists every
event and field this module accepts. A client event is checked before anything acts on it: an
unknown type, an unknown field or a wrong type becomes an ``error`` event naming the parameter,
and the session goes on. Fields that we accept but do not act on (``tools``, ``voice``, …) are
still type-checked and kept in the session object, so a client reads back what it set.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class EventError(Exception):
    """A client event that does not follow the schema; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (``event_…``, ``resp_…``, ``item_…``)."""
    return f"{prefix}_{secrets.token_hex(10)}"


# The schema: each field is a checker taking (value, path) and raising EventError.

Check = Callable[[Any, str], None]


def _fail(path: str, expected: str) -> EventError:
    return EventError(f"'{path}' must be {expected}", path, "invalid_type")


def string(max_length: int = 1 << 20) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise _fail(path, "a string")
        if len(value) > max_length:
            raise EventError(f"'{path}' is longer than {max_length} characters", path)

    return check


def integer(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(path, "an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise EventError(f"'{path}' must be between {low} and {high}", path)

    return check


def number(low: float, high: float) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _fail(path, "a number")
        if not low <= value <= high:
            raise EventError(f"'{path}' must be between {low} and {high}", path)

    return check


def boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _fail(path, "true or false")


def choice(*options: Any) -> Check:
    def check(value: Any, path: str) -> None:
        if value not in options:
            shown = ", ".join(repr(o) for o in options)
            raise EventError(f"'{path}' must be one of {shown}", path)

    return check


def nullable(inner: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if value is not None:
            inner(value, path)

    return check


def one_of(*checks: Check) -> Check:
    """The value passes any one check (``max_output_tokens``: an integer or ``"inf"``)."""

    def check(value: Any, path: str) -> None:
        first: EventError | None = None
        for inner in checks:
            try:
                inner(value, path)
                return
            except EventError as exc:
                first = first or exc
        assert first is not None
        raise first

    return check


def array(item: Check, max_items: int = 128) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise _fail(path, "an array")
        if len(value) > max_items:
            raise EventError(f"'{path}' has more than {max_items} items", path)
        for index, element in enumerate(value):
            item(element, f"{path}[{index}]")

    return check


def any_object(value: Any, path: str) -> None:
    """An object we pass along without looking inside (tool definitions, metadata)."""
    if not isinstance(value, dict):
        raise _fail(path, "an object")


def any_value(value: Any, path: str) -> None:
    """Anything JSON: ``tool_choice`` is a string or an object."""


@dataclass(frozen=True)
class Obj:
    """An object with known fields; an unknown field is an error, as in OpenAI's API."""

    fields: Mapping[str, Check]
    required: frozenset[str] = frozenset()

    def __call__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _fail(path, "an object")
        for name, element in value.items():
            where = f"{path}.{name}" if path else name
            check = self.fields.get(name)
            if check is None:
                raise EventError(f"unknown parameter '{where}'", where, "unknown_parameter")
            check(element, where)
        for name in sorted(self.required - value.keys()):
            where = f"{path}.{name}" if path else name
            raise EventError(f"missing required parameter '{where}'", where, "missing_required")


TURN_DETECTION = nullable(
    Obj(
        {
            "type": choice("server_vad", "semantic_vad"),
            "threshold": number(0.0, 1.0),
            "prefix_padding_ms": integer(0, 2000),
            "silence_duration_ms": integer(100, 5000),
            "create_response": boolean,
            "interrupt_response": boolean,
            "idle_timeout_ms": nullable(integer(1000, 600_000)),
            "eagerness": choice("low", "medium", "high", "auto"),
        },
        frozenset({"type"}),
    )
)
AUDIO_FORMAT = Obj(
    {"type": choice("audio/pcm", "audio/pcmu", "audio/pcma"), "rate": choice(24000)},
    frozenset({"type"}),
)
SESSION = Obj(
    {
        "type": choice("realtime"),
        "id": string(128),
        "object": string(64),
        "model": string(256),
        "instructions": string(),
        "output_modalities": array(choice("audio", "text"), 2),
        "audio": Obj(
            {
                "input": Obj(
                    {
                        "format": AUDIO_FORMAT,
                        "turn_detection": TURN_DETECTION,
                        "transcription": nullable(any_object),
                        "noise_reduction": nullable(any_object),
                    }
                ),
                "output": Obj(
                    {"format": AUDIO_FORMAT, "voice": string(64), "speed": number(0.25, 4.0)}
                ),
            }
        ),
        "tools": array(any_object),
        "tool_choice": any_value,
        "temperature": number(0.0, 2.0),
        "max_output_tokens": one_of(integer(1, 1_000_000), choice("inf")),
        "tracing": nullable(any_value),
        "truncation": any_value,
        "prompt": nullable(any_object),
        "include": nullable(array(string(128))),
        "expires_at": integer(0),
    }
)
EVENT_ID = string(128)

CLIENT_EVENTS: dict[str, Obj] = {
    "session.update": Obj({"event_id": EVENT_ID, "session": SESSION}, frozenset({"session"})),
    "response.create": Obj(
        {
            "event_id": EVENT_ID,
            "response": Obj(
                {
                    "instructions": string(),
                    "output_modalities": array(choice("audio", "text"), 2),
                    "conversation": choice("auto", "none"),
                    "metadata": nullable(any_object),
                    "audio": any_object,
                    "input": array(any_object, 1024),
                    "tools": array(any_object),
                    "tool_choice": any_value,
                    "max_output_tokens": one_of(integer(1, 1_000_000), choice("inf")),
                    "prompt": nullable(any_object),
                }
            ),
        }
    ),
    "response.cancel": Obj({"event_id": EVENT_ID, "response_id": string(128)}),
    "output_audio_buffer.clear": Obj({"event_id": EVENT_ID}),
    "conversation.item.truncate": Obj(
        {
            "event_id": EVENT_ID,
            "item_id": string(128),
            "content_index": integer(0, 1024),
            "audio_end_ms": integer(0),
        },
        frozenset({"item_id", "content_index", "audio_end_ms"}),
    ),
    "conversation.item.create": Obj(
        {"event_id": EVENT_ID, "previous_item_id": nullable(string(128)), "item": any_object},
        frozenset({"item"}),
    ),
    "conversation.item.delete": Obj(
        {"event_id": EVENT_ID, "item_id": string(128)}, frozenset({"item_id"})
    ),
    "conversation.item.retrieve": Obj(
        {"event_id": EVENT_ID, "item_id": string(128)}, frozenset({"item_id"})
    ),
    "input_audio_buffer.append": Obj(
        {"event_id": EVENT_ID, "audio": string(16 << 20)}, frozenset({"audio"})
    ),
    "input_audio_buffer.commit": Obj({"event_id": EVENT_ID}),
    "input_audio_buffer.clear": Obj({"event_id": EVENT_ID}),
}
"""Every client event type this project knows, with its schema."""


def validate_client_event(event: Any) -> dict[str, Any]:
    """Return the event if it follows its schema; raise EventError naming what is wrong."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise EventError("an event is a JSON object with a string 'type'", "type")
    kind = event["type"]
    schema = CLIENT_EVENTS.get(kind)
    if schema is None:
        raise EventError(f"unknown event type '{kind}'", "type", "unknown_event")
    schema({k: v for k, v in event.items() if k != "type"}, "")
    return event


def validate_session(session: Any, path: str = "session") -> dict[str, Any]:
    """Check a session object (from ``session.update``, a calls request or a client secret)."""
    SESSION(session, path)
    return session


# Session config: the defaults, merging an update, and reading turn detection.


def merge_session(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Apply a validated ``session.update``: objects merge key by key, anything else replaces."""
    merged = dict(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_session(merged[key], value)
        else:
            merged[key] = value
    return merged


def turn_detection(session: Mapping[str, Any]) -> dict[str, Any] | None:
    """The session's turn detection settings, or None when it is off."""
    return session.get("audio", {}).get("input", {}).get("turn_detection")


def with_turn_detection(settings: dict[str, Any] | None) -> dict[str, Any]:
    """A session fragment setting turn detection, for defaults and tests."""
    return {"audio": {"input": {"turn_detection": settings}}}


# Server events.


def error(
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``error``; ``event_id`` names the client event it answers, when it had one."""
    return {
        "type": "error",
        "error": {
            "type": kind,
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }


def error_for(exc: EventError, event: Any) -> dict[str, Any]:
    client_id = event.get("event_id") if isinstance(event, dict) else None
    return error(
        exc.message,
        code=exc.code,
        param=exc.param,
        event_id=client_id if isinstance(client_id, str) else None,
    )


def session_event(kind: str, call_id: str, session: Mapping[str, Any]) -> dict[str, Any]:
    """``session.created`` or ``session.updated``: the whole session as it now stands."""
    return {
        "type": kind,
        "session": {"type": "realtime", "object": "realtime.session", **session, "id": call_id},
    }


def response_object(response_id: str, status: str, reason: str | None = None) -> dict[str, Any]:
    details = None
    if status != "in_progress" and status != "completed":
        details = {"type": status, "reason": reason}
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": details,
        "output": [],
        "usage": None,
    }
