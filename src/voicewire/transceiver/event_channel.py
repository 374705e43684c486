"""The ``oai-events`` data channel: JSON events between a client and its agent.

OpenAI's Realtime WebRTC interface carries a conversation's events as JSON text on one data
channel the client opens, labelled ``oai-events``; clients wait for ``session.created`` on it.
The transceiver sends that event when the channel opens, hands every well-formed client event
(a JSON object with a string ``type``) to the agent, sends the agent's events, and answers
anything else with an ``error`` event: the session stays up.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

LABEL = "oai-events"


def event_id() -> str:
    return "event_" + secrets.token_hex(10)


def encode(event: dict[str, Any]) -> str:
    """The event as channel text, with an ``event_id`` when it had none."""
    if "event_id" not in event:
        event = {"event_id": event_id(), **event}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def session_created(call_id: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "session.created",
        "session": {"id": call_id, "object": "realtime.session", **config},
    }


def decode(data: str | bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(client event, None), or (None, the ``error`` event to answer with)."""
    if isinstance(data, bytes):
        return None, _error("events are JSON text; this message was binary")
    try:
        event = json.loads(data)
    except ValueError as exc:
        return None, _error(f"the message is not JSON: {exc}")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None, _error("an event is a JSON object with a string 'type'")
    return event, None


def _error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
