"""From an SDP offer to an SDP answer: parse, ask a transceiver for a session, write the answer.

The answer's only candidate is the relay's public address and its ufrag is the routing token the
transceiver minted, so every packet of the call goes through the relay to that transceiver.

``Signaling`` does this next to a transceiver: in ``serve``'s one process, and behind each
transceiver's internal API in a cluster (``transceiver/internal_api.py``), where the gateway
reaches it through ``ClusterSignaling``. The HTTP API sees either as a ``CallSignaling``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Protocol

from voicewire.gateway.errors import ApiError
from voicewire.rtc import sdp
from voicewire.rtc.sctp import MAX_MESSAGE_SIZE
from voicewire.transceiver.session_request import (
    NoCapacity,
    SessionGrant,
    SessionRequest,
    UnsupportedOffer,
)

log = logging.getLogger("voicewire.gateway")


class SessionOpener(Protocol):
    """A transceiver, in this process or behind its internal API."""

    def open_session(self, request: SessionRequest) -> SessionGrant: ...
    def end_session(self, call_id: str) -> bool: ...


class CallSignaling(Protocol):
    """What the public HTTP API needs: an answer for an offer, and a way to hang up."""

    async def answer(self, offer_text: str, session_config: dict[str, Any]) -> tuple[str, str]:
        """Return (call id, SDP answer); raise ApiError with the status the client should see."""
        ...

    async def hang_up(self, call_id: str) -> bool:
        """End the call; False when no such call exists."""
        ...


class Signaling:
    """A ``CallSignaling`` over a transceiver in this process."""

    def __init__(self, transceiver: SessionOpener, relay_public: tuple[str, int]) -> None:
        self.transceiver = transceiver
        self.relay_public = relay_public

    async def answer(self, offer_text: str, session_config: dict[str, Any]) -> tuple[str, str]:
        try:
            offer = sdp.parse_offer(offer_text)
        except sdp.SdpError as exc:
            raise ApiError(400, f"malformed or unsupported SDP offer: {exc}") from None
        audio = offer.audio.audio
        assert audio is not None  # parse_offer guarantees an Opus audio section
        channel = None if offer.data_channel is None else offer.data_channel.data_channel
        request = SessionRequest(
            remote_ufrag=offer.ice_ufrag,
            remote_fingerprints=offer.fingerprints,
            remote_setup=offer.setup,
            audio_payload_type=audio.opus_payload_type,
            data_channel=None if channel is None else (channel.sctp_port, channel.max_message_size),
            session_config=session_config,
        )
        try:
            grant = self.transceiver.open_session(request)
        except NoCapacity as exc:
            raise ApiError(503, f"no capacity for a new call ({exc}); try again") from None
        except UnsupportedOffer as exc:
            raise ApiError(400, str(exc)) from None
        answer = sdp.build_answer(
            offer,
            sdp.AnswerParams(
                ice_ufrag=grant.ice_ufrag,
                ice_pwd=grant.ice_pwd,
                fingerprint=grant.fingerprint,
                candidate_ip=self.relay_public[0],
                candidate_port=self.relay_public[1],
                session_id=secrets.randbits(62),
                session_version=1,
                ssrc=grant.audio_ssrc,
                cname=grant.cname,
                dtls_role=grant.dtls_setup,
                max_message_size=MAX_MESSAGE_SIZE,
            ),
        )
        return grant.call_id, answer

    async def hang_up(self, call_id: str) -> bool:
        return self.transceiver.end_session(call_id)
