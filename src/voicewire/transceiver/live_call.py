"""A session as the transceiver's IO layer holds it: the sans-IO core plus everything around it.

The core knows clients only by their own addresses. This record adds what the IO layer needs:
which relay worker each client address was last heard through (replies go back the same way),
the relay headers to prepend, the indexes this call owns, and the agent's side of the call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from voicewire.agents.api import Agent, Call, CallStats
from voicewire.rtc.session import Session
from voicewire.rtc.stun import Address
from voicewire.wire import relay_header

EARLY_EVENTS = 64


@dataclass(eq=False)
class LiveCall:
    call_id: str
    session: Session
    created_at: float
    agent: Agent
    call: Call = field(init=False)
    relays: dict[Address, tuple] = field(default_factory=dict)
    """Client address → the relay address it was last heard through."""
    headers: dict[Address, bytes] = field(default_factory=dict)
    """Client address → relay header naming it, made once."""
    addresses: set[Address] = field(default_factory=set)
    """Every client address indexed for this call; all are removed when it closes."""
    connected_at: float | None = None
    events_channel: int | None = None
    """The id of the client's ``oai-events`` data channel, once open."""
    early_events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EARLY_EVENTS))
    """Events the agent sent before that channel opened, sent right after ``session.created``.

    An agent starts when the call connects; the client opens its channel a round trip or more
    later, and what an agent says first (a backend's ``session.updated``, an error) would
    otherwise be lost. Bounded: a client that never opens the channel keeps only the newest."""
    agent_task: asyncio.Task | None = None

    def header_for(self, client: Address) -> bytes:
        header = self.headers.get(client)
        if header is None:
            header = self.headers[client] = relay_header.encode(client[0], client[1])
        return header

    def stats(self) -> CallStats:
        return self.session.audio.stats()
