"""What signaling asks of a transceiver, and what it gets back: plain values, no SDP.

The gateway parses the client's offer and sends a ``SessionRequest``; the transceiver makes the
session and answers with a ``SessionGrant`` from which the gateway writes the SDP answer. Both
are plain data so they can cross a process boundary (an internal HTTP API in a cluster) as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class SessionRequest:
    remote_ufrag: str
    """The client's ICE ufrag (``a=ice-ufrag`` of the offer)."""
    remote_fingerprints: tuple[tuple[str, str], ...]
    """The client's certificate fingerprints (``a=fingerprint``), as (hash, value)."""
    remote_setup: Literal["actpass", "active", "passive"]
    """The offer's ``a=setup``: which DTLS roles we may take."""
    audio_payload_type: int
    """The Opus payload type the offer chose."""
    data_channel: tuple[int, int] | None = None
    """The offer's data channel section as (``a=sctp-port``, ``a=max-message-size``), if any."""
    session_config: dict[str, Any] = field(default_factory=dict)
    """The OpenAI-style ``session`` object sent with the offer, for the agent."""


@dataclass(frozen=True, slots=True)
class SessionGrant:
    call_id: str
    ice_ufrag: str
    """Our ufrag: the routing token naming this transceiver."""
    ice_pwd: str
    fingerprint: tuple[str, str]
    """Our certificate's fingerprint as (hash, value)."""
    dtls_setup: Literal["active", "passive"]
    audio_ssrc: int
    cname: str


class NoCapacity(Exception):
    """The transceiver is full or draining; try another (the gateway answers 503)."""


class UnsupportedOffer(Exception):
    """The request cannot be served (e.g. the client insists on a DTLS role we cannot take)."""
