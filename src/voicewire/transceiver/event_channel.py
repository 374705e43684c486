"""The ``oai-events`` data channel: JSON events between a client and its agent.

OpenAI's Realtime WebRTC interface carries a conversation's events as JSON text on one data
channel the client opens, labelled ``oai-events``; clients wait for ``session.created`` on it.
The transceiver sends that event when the channel opens, hands every JSON message to the call
(which checks it against the event schema, ``agents/realtime_events.py``), sends the call's
events, and answers anything that is not JSON text with an ``error`` event: the session stays
up.
"""

from __future__ import annotations

import json
from typing import Any

from voicewire.agents import realtime_events as rt

LABEL = "oai-events"


def encode(event: dict[str, Any]) -> str:
    """The event as channel text, with an ``event_id`` when it had none."""
    if "event_id" not in event:
        event = {"event_id": rt.new_id("event"), **event}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def decode(data: str | bytes) -> tuple[Any, dict[str, Any] | None]:
    """(the decoded JSON value, None), or (None, the ``error`` event to answer with).

    Only the JSON is checked here; the Call checks the event against its schema.
    """
    if isinstance(data, bytes):
        return None, rt.error("events are JSON text; this message was binary")
    try:
        return json.loads(data), None
    except ValueError as exc:
        return None, rt.error(f"the message is not JSON: {exc}")
