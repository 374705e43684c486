"""One WebRTC session, sans-IO: ICE-lite, DTLS, SRTP and the audio stream, composed.

Theory of operation
-------------------
The contract is str0m's: make one change — ``handle_datagram``, ``handle_timer``,
``queue_audio``, ``clear_audio`` or ``close`` — then drain ``datagrams_to_send()`` and
``next_event()``, then re-arm a timer at ``get_timer()``. Every part is polled in a fixed order
after each change: ICE, then DTLS, then the data channels, then the audio stream, so their outputs
interleave the same way every time.

Demultiplexing follows RFC 7983 §7 on the first byte: 0–3 STUN → ICE; 20–63 DTLS; 128–191
RTP/RTCP (told apart by the packet type, RFC 5761 §4) → SRTP, then the audio stream. Anything
else is a ``ParseError`` for the caller to count.

Lifecycle (``SessionState``): ``new`` until the first authenticated ICE check, ``connecting``
while DTLS runs, ``connected`` once DTLS is up on a validated address, ``closed`` with a
``CloseReason``. As DTLS client (``a=setup:active``, our default) the handshake starts the
moment the first check authenticates, one round trip sooner than waiting for the client's
ClientHello. Audio starts at ``connected`` without waiting for the client's nomination: RFC 8445
§12.1 lets an agent send on any valid pair before one is selected, and Chromium, toward an
ICE-lite peer, nominates (regular nomination) some 50 ms after its own DTLS is up. A later
nomination of another address moves the audio there (``AddressChanged``).

Data channels (RFC 8831): when the offer had an application section, SCTP runs inside DTLS once
DTLS is up (RFC 8261); the client sends the INIT, and the channel events come out as session
events. Losing the association does not end the call: the audio goes on.

Addresses: the session sends to the address ICE selected or, before nomination, to the first
validated one. It reports every address ICE validates with ``AddressValidated`` so the owner can
route non-STUN datagrams from it here; the owner must forget all of them when the session closes.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from voicewire.rtc.audio_stream import AudioParams, AudioReceived, AudioStream, OutputDrained
from voicewire.rtc.certificate import Certificate
from voicewire.rtc.data_channel import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    DataChannels,
)
from voicewire.rtc.dtls import (
    DtlsApplicationData,
    DtlsClosed,
    DtlsConnected,
    DtlsEndpoint,
    DtlsFailed,
    DtlsRole,
    DtlsState,
)
from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.ice_lite import IceAddressChanged, IceConnected, IceFailed, IceLite
from voicewire.rtc.sctp import MAX_MESSAGE_SIZE, SctpAssociation, SctpClosed
from voicewire.rtc.srtp import SrtpSession
from voicewire.rtc.stun import Address

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DataChannelParams:
    """The offer's application section (RFC 8841), for SCTP over DTLS."""

    remote_port: int
    """The client's ``a=sctp-port``."""
    remote_max_message_size: int
    """The client's ``a=max-message-size`` (0: no limit)."""
    random_bytes: Callable[[int], bytes]
    """Randomness for SCTP verification tags, initial TSNs and the cookie secret."""


@dataclass(frozen=True, slots=True)
class SessionParams:
    """Everything a session needs, already negotiated: no SDP reaches the core."""

    local_ufrag: str
    """Our ICE ufrag: the routing token the relay routes on."""
    local_pwd: str
    """Our ICE password, from the answer."""
    remote_ufrag: str
    """The client's ICE ufrag, from the offer."""
    remote_fingerprints: tuple[tuple[str, str], ...]
    """The offer's ``a=fingerprint`` values: the certificate the client must present."""
    dtls_role: DtlsRole
    """``client`` when our answer says ``a=setup:active``."""
    audio: AudioParams
    """Payload type, SSRC and codec settings of the audio stream."""
    data_channel: DataChannelParams | None = None
    """Set when the answer accepted the offer's data channel section."""
    consent_timeout: float = 30.0
    """RFC 7675: close when no authenticated check arrived for this long."""
    connect_timeout: float = 30.0
    """Close when the client has not connected this long after the answer."""


class SessionState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class CloseReason(enum.StrEnum):
    """Why a session ended; a short, fixed set, fit for a metrics label."""

    ICE_TIMEOUT = "ice_timeout"  # no nomination within the connect timeout
    CONSENT_LOST = "consent_lost"  # RFC 7675: the client stopped confirming consent
    DTLS_FAILED = "dtls_failed"  # handshake failed, wrong fingerprint, fatal alert
    PEER_CLOSED = "peer_closed"  # the client sent DTLS close_notify
    HANGUP = "hangup"  # the signaling side ended the call (DELETE)
    AGENT_ENDED = "agent_ended"  # the agent finished the call
    DRAIN = "drain"  # the transceiver is shutting down and the grace period ran out


_TRANSITIONS = {
    SessionState.NEW: frozenset({SessionState.CONNECTING, SessionState.CLOSED}),
    SessionState.CONNECTING: frozenset({SessionState.CONNECTED, SessionState.CLOSED}),
    SessionState.CONNECTED: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class AddressValidated:
    """An authenticated ICE check came from ``address``: route its datagrams to this session."""

    address: Address


@dataclass(frozen=True, slots=True)
class SessionConnected:
    """DTLS is up with the client at ``address``: audio flows both ways from now on."""

    address: Address


@dataclass(frozen=True, slots=True)
class AddressChanged:
    """The client moved (NAT rebinding, network change); media now goes to ``new``."""

    old: Address
    new: Address


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: CloseReason
    detail: str = ""


SessionEvent = (
    AddressValidated
    | SessionConnected
    | AddressChanged
    | AudioReceived
    | OutputDrained
    | ChannelOpened
    | ChannelMessage
    | ChannelClosed
    | SessionClosed
)


class Session:
    def __init__(self, params: SessionParams, certificate: Certificate, now: float) -> None:
        self.params = params
        self._state = SessionState.NEW
        self._ice = IceLite(
            params.local_ufrag,
            params.local_pwd,
            params.remote_ufrag,
            now=now,
            consent_timeout=params.consent_timeout,
            connect_timeout=params.connect_timeout,
        )
        self._dtls = DtlsEndpoint(params.dtls_role, certificate, params.remote_fingerprints)
        self._srtp: SrtpSession | None = None
        self._channels: DataChannels | None = None
        self._audio = AudioStream(params.audio, now)
        self._peer: Address | None = None
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: deque[SessionEvent] = deque()
        self.dropped = 0
        """Datagrams that could not be used: before keys, failed SRTP checks, after close."""

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def peer(self) -> Address | None:
        """Where this session sends: the nominated address, or before that the first validated."""
        return self._peer

    @property
    def audio(self) -> AudioStream:
        return self._audio

    def handle_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from ``addr``; raises ``ParseError`` for bytes no layer can read."""
        if self._state is SessionState.CLOSED:
            self.dropped += 1
            return
        if not data:
            raise ParseError("empty datagram")
        first = data[0]
        if first < 4:  # RFC 7983 §7: STUN
            known = len(self._ice.validated_addresses)
            self._ice.handle_stun(data, addr, now)
            if len(self._ice.validated_addresses) > known:
                self._on_validated(addr, now)
        elif 19 < first < 64:  # RFC 7983 §7: DTLS
            if self._state is SessionState.NEW:  # no check authenticated yet: not our client
                self.dropped += 1
                return
            self._dtls.handle_datagram(data, now)
        elif 127 < first < 192:  # RFC 7983 §7: RTP and RTCP
            self._receive_media(data, addr, now)
        else:
            raise ParseError(f"first byte {first} is none of STUN, DTLS, RTP (RFC 7983)")
        self._process(now)

    def handle_timer(self, now: float) -> None:
        self._ice.handle_timer(now)
        self._dtls.handle_timer(now)
        if self._channels is not None:
            self._channels.handle_timer(now)
        if self._state is SessionState.CONNECTED:
            self._audio.handle_timer(now)
        self._process(now)

    def get_timer(self) -> float | None:
        if self._state is SessionState.CLOSED:
            return None
        deadlines = [self._ice.get_timer(), self._dtls.get_timer()]
        if self._channels is not None:
            deadlines.append(self._channels.get_timer())
        if self._state is SessionState.CONNECTED:
            deadlines.append(self._audio.get_timer())
        return min((d for d in deadlines if d is not None), default=None)

    def queue_audio(self, pcm: bytes, now: float) -> None:
        """Queue PCM16 mono 48 kHz audio; it goes out at real-time pace once connected."""
        self._audio.queue_audio(pcm, now)
        self._process(now)

    def clear_audio(self) -> float:
        """Barge-in: drop queued audio; the milliseconds of it already sent."""
        return self._audio.clear_audio()

    def send_message(self, channel_id: int, data: str | bytes, now: float) -> None:
        """Send one data channel message (str as text, bytes as binary, RFC 8831 §6.6)."""
        if self._channels is None:
            raise LocalError("this session has no data channels")
        self._channels.send(channel_id, data)
        self._process(now)

    def close(self, reason: CloseReason, now: float, detail: str = "") -> None:
        """End the session: DTLS close_notify to the client, then ``SessionClosed``."""
        if self._state is SessionState.CLOSED:
            return
        if self._channels is not None:
            self._channels.abort(reason.value)  # RFC 9260 §9.1: the peer learns at once
            self._send_channel_packets(now)
        self._dtls.close()
        self._flush_dtls()
        self._set_state(SessionState.CLOSED)
        self._events.append(SessionClosed(reason, detail))

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        datagrams, self._outgoing = self._outgoing, []
        return datagrams

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def _on_validated(self, addr: Address, now: float) -> None:
        self._events.append(AddressValidated(addr))
        if self._peer is None:
            self._peer = addr
        if self._state is SessionState.NEW:
            self._set_state(SessionState.CONNECTING)
            self._dtls.start(now)  # as DTLS client this sends the ClientHello at once

    def _receive_media(self, data: bytes, addr: Address, now: float) -> None:
        if len(data) < 8:  # RFC 3550 §6.4.1: even an empty RTCP report is 8 bytes
            raise ParseError("too short for RTP or RTCP")
        srtp = self._srtp
        if srtp is None:
            self.dropped += 1  # media before the keys: nothing to check it with
            return
        if 191 < data[1] < 224:  # RFC 5761 §4: RTCP packet types 192–223
            packet = srtp.unprotect_rtcp(data)
            self._ice.note_received(addr, now)
            self._audio.handle_rtcp(packet, now)
        else:
            packet = srtp.unprotect_rtp(data)
            self._ice.note_received(addr, now)
            self._audio.handle_rtp(packet, now)

    def _process(self, now: float) -> None:
        """Poll every part in the documented order: ICE, DTLS, audio."""
        self._outgoing.extend(self._ice.datagrams_to_send())
        while (ice_event := self._ice.next_event()) is not None:
            if isinstance(ice_event, IceConnected):
                self._move_to(ice_event.address)
            elif isinstance(ice_event, IceAddressChanged):
                self._move_to(ice_event.new)
            elif isinstance(ice_event, IceFailed):
                reason = (
                    CloseReason.ICE_TIMEOUT
                    if ice_event.reason == "ice_timeout"
                    else CloseReason.CONSENT_LOST
                )
                self.close(reason, now)
                return
        self._flush_dtls()
        while (dtls_event := self._dtls.next_event()) is not None:
            if isinstance(dtls_event, DtlsConnected):
                self._srtp = SrtpSession(dtls_event)
                self._start_channels()
                self._maybe_connected(now)
            elif isinstance(dtls_event, DtlsFailed):
                self.close(CloseReason.DTLS_FAILED, now, dtls_event.reason.value)
                return
            elif isinstance(dtls_event, DtlsClosed):
                self.close(CloseReason.PEER_CLOSED, now)
                return
            elif isinstance(dtls_event, DtlsApplicationData):
                self._receive_sctp(dtls_event.data, now)
        if self._channels is not None:
            self._send_channel_packets(now)
            while (channel_event := self._channels.next_event()) is not None:
                if isinstance(channel_event, ChannelOpened | ChannelMessage | ChannelClosed):
                    self._events.append(channel_event)
                elif isinstance(channel_event, SctpClosed):
                    logger.info(
                        "session %s: SCTP closed (%s)",
                        self.params.local_ufrag,
                        channel_event.reason,
                    )
        if self._state is SessionState.CONNECTED:
            self._send_media()
        while (audio_event := self._audio.next_event()) is not None:
            self._events.append(audio_event)

    def _start_channels(self) -> None:
        """DTLS is up: be ready for the client's SCTP INIT (RFC 8841 §9.3)."""
        wanted = self.params.data_channel
        if wanted is None:
            return
        association = SctpAssociation(
            random_bytes=wanted.random_bytes,
            max_packet_size=self._dtls.max_application_data,
            remote_port=wanted.remote_port,
            remote_max_message_size=wanted.remote_max_message_size,
            max_message_size=MAX_MESSAGE_SIZE,
        )
        self._channels = DataChannels(association, self.params.dtls_role)

    def _receive_sctp(self, packet: bytes, now: float) -> None:
        if self._channels is None:
            self.dropped += 1  # no data channel was negotiated
            return
        try:
            self._channels.receive_packet(packet, now)
        except ParseError:
            self.dropped += 1

    def _send_channel_packets(self, now: float) -> None:
        assert self._channels is not None
        if self._dtls.state is not DtlsState.CONNECTED:
            return
        for packet in self._channels.packets_to_send(now):
            self._dtls.send_application_data(packet)
        self._flush_dtls()

    def _move_to(self, address: Address) -> None:
        """Send to ``address`` from now on (a nomination, or ICE following a moved client)."""
        old = self._peer
        self._peer = address
        if old is not None and old != address:
            self._events.append(AddressChanged(old, address))

    def _maybe_connected(self, now: float) -> None:
        # RFC 8445 §12.1: data may flow on a valid pair before a pair is selected.
        if self._state is SessionState.CONNECTING and self._srtp is not None:
            assert self._peer is not None  # DTLS ran over the first validated address
            self._set_state(SessionState.CONNECTED)
            self._audio.start(now)
            self._events.append(SessionConnected(self._peer))

    def _flush_dtls(self) -> None:
        peer = self._peer
        if peer is None:
            return
        self._outgoing.extend((datagram, peer) for datagram in self._dtls.datagrams_to_send())

    def _send_media(self) -> None:
        srtp, peer = self._srtp, self._peer
        assert srtp is not None and peer is not None
        for packet in self._audio.rtp_to_send():
            self._outgoing.append((srtp.protect_rtp(packet), peer))
        for packet in self._audio.rtcp_to_send():
            self._outgoing.append((srtp.protect_rtcp(packet), peer))

    def _set_state(self, state: SessionState) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise LocalError(f"session {self._state.value} -> {state.value} is not allowed")
        logger.debug(
            "session %s: %s -> %s", self.params.local_ufrag, self._state.value, state.value
        )
        self._state = state
