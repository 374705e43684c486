"""The composed session, sans-IO: a scripted client (aioice STUN, our DTLS engine in the other
role, libsrtp, libopus) and the session exchange datagrams in memory under a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from aioice import stun as aioice_stun
from hypothesis import given, settings
from hypothesis import strategies as st

from voicewire.rtc import rtcp
from voicewire.rtc.audio_stream import AudioParams, AudioReceived
from voicewire.rtc.certificate import Certificate
from voicewire.rtc.dtls import DtlsConnected, DtlsEndpoint
from voicewire.rtc.errors import ParseError
from voicewire.rtc.opus import FRAME_BYTES, FRAME_SAMPLES, OpusEncoder
from voicewire.rtc.rtp import RtpPacketizer, parse_rtp
from voicewire.rtc.session import (
    AddressChanged,
    AddressValidated,
    CloseReason,
    Session,
    SessionClosed,
    SessionConnected,
    SessionParams,
    SessionState,
)
from voicewire.rtc.srtp import SrtpSession

SERVER_CERT = Certificate.generate(datetime(2026, 1, 1, tzinfo=UTC))
CLIENT_CERT = Certificate.generate(datetime(2026, 1, 1, tzinfo=UTC))
CLIENT = ("198.51.100.7", 50000)
PT = 111


def fingerprint(certificate: Certificate) -> tuple[str, str]:
    name, value = certificate.sdp_fingerprint.split(" ", 1)
    return name, value


def session_params(**overrides) -> SessionParams:
    fields = dict(
        local_ufrag="serverUfragToken",
        local_pwd="serverPassword0123456789",
        remote_ufrag="cli1",
        remote_fingerprints=(fingerprint(CLIENT_CERT),),
        dtls_role="client",
        audio=AudioParams(
            payload_type=PT,
            ssrc=1111,
            sequence_start=100,
            timestamp_start=5000,
            cname="server",
            ntp_offset=1.8e9,
            rtcp_jitter=random.Random(1).random,
        ),
    )
    fields.update(overrides)
    return SessionParams(**fields)


class ScriptedClient:
    """The browser's side, just enough of it: ICE checks, DTLS server, SRTP, Opus RTP."""

    def __init__(self) -> None:
        self.dtls = DtlsEndpoint("server", CLIENT_CERT, [fingerprint(SERVER_CERT)])
        self.srtp: SrtpSession | None = None
        self.packetizer = RtpPacketizer(2222, PT, initial_sequence=1, initial_timestamp=0)
        self.encoder = OpusEncoder()
        self.received_rtp: list[tuple[float, bytes]] = []
        self.received_rtcp: list[bytes] = []
        self.dtls.start(0.0)

    def check(self, use_candidate: bool = True) -> bytes:
        request = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
        request.attributes["USERNAME"] = "serverUfragToken:cli1"
        request.attributes["PRIORITY"] = 1853824767
        request.attributes["ICE-CONTROLLING"] = 1
        if use_candidate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(b"serverPassword0123456789")
        return bytes(request)

    def take(self, datagrams: list[tuple[bytes, tuple]], now: float) -> list[bytes]:
        """Receive the session's datagrams; return what the client sends in reply."""
        for data, address in datagrams:
            assert address == CLIENT
            if data[0] < 4:
                continue  # a binding response
            if 19 < data[0] < 64:
                self.dtls.handle_datagram(data, now)
            elif 191 < data[1] < 224:
                self.received_rtcp.append(self.srtp.unprotect_rtcp(data))
            else:
                self.received_rtp.append((now, self.srtp.unprotect_rtp(data)))
        while (event := self.dtls.next_event()) is not None:
            if isinstance(event, DtlsConnected):
                self.srtp = SrtpSession(event)
        return self.dtls.datagrams_to_send()

    def rtp(self, pcm: bytes) -> bytes:
        packet = self.packetizer.packet(self.encoder.encode(pcm), FRAME_SAMPLES)
        return self.srtp.protect_rtp(packet)


def exchange(session: Session, client: ScriptedClient, now: float) -> list:
    """Deliver datagrams both ways until both sides are quiet; return the session's events."""
    events = []
    while True:
        replies = client.take(session.datagrams_to_send(), now)
        while (event := session.next_event()) is not None:
            events.append(event)
        if not replies:
            return events
        for reply in replies:
            session.handle_datagram(reply, CLIENT, now)


def advance(session: Session, client: ScriptedClient, until: float) -> list:
    """Fire the session's timers up to ``until`` (the fake clock), exchanging as they go."""
    events = []
    while (deadline := session.get_timer()) is not None and deadline <= until:
        session.handle_timer(deadline)
        events += exchange(session, client, deadline)
    return events


def connected_pair() -> tuple[Session, ScriptedClient, list]:
    session = Session(session_params(), SERVER_CERT, now=0.0)
    client = ScriptedClient()
    session.handle_datagram(client.check(), CLIENT, 0.0)
    return session, client, exchange(session, client, 0.0)


def test_one_check_then_dtls_connects_the_session():
    session, client, events = connected_pair()
    assert AddressValidated(CLIENT) in events
    assert SessionConnected(CLIENT) in events
    assert session.state is SessionState.CONNECTED
    assert client.srtp is not None


def test_audio_flows_before_the_client_nominates():
    """Chromium nominates ~50 ms after its DTLS is up toward an ICE-lite peer: don't wait."""
    session = Session(session_params(), SERVER_CERT, now=0.0)
    client = ScriptedClient()
    session.handle_datagram(client.check(use_candidate=False), CLIENT, 0.0)
    events = exchange(session, client, 0.0)
    assert SessionConnected(CLIENT) in events
    session.queue_audio(bytes(FRAME_BYTES), 0.01)
    exchange(session, client, 0.01)
    assert len(client.received_rtp) == 1
    session.handle_datagram(client.check(use_candidate=True), CLIENT, 0.05)
    assert not [e for e in exchange(session, client, 0.05) if not isinstance(e, AudioReceived)]


def test_a_nomination_of_another_address_moves_the_audio():
    session = Session(session_params(), SERVER_CERT, now=0.0)
    client = ScriptedClient()
    session.handle_datagram(client.check(use_candidate=False), CLIENT, 0.0)
    exchange(session, client, 0.0)
    other = ("198.51.100.7", 50002)
    session.handle_datagram(client.check(use_candidate=True), other, 0.05)
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    assert AddressValidated(other) in events
    assert AddressChanged(CLIENT, other) in events
    assert session.peer == other


def test_dtls_starts_on_the_first_check_even_before_nomination():
    session = Session(session_params(), SERVER_CERT, now=0.0)
    session.handle_datagram(ScriptedClient().check(use_candidate=False), CLIENT, 0.0)
    sent = session.datagrams_to_send()
    assert [data[0] for data, _ in sent] == [1, 22]  # binding response, then the ClientHello
    assert session.state is SessionState.CONNECTING


def test_audio_in_is_decoded_on_a_steady_20_ms_schedule():
    session, client, _ = connected_pair()
    received = []
    for frame in range(10):
        now = frame * 0.02
        session.handle_datagram(client.rtp(bytes(FRAME_BYTES)), CLIENT, now)
        received += [e for e in exchange(session, client, now) if isinstance(e, AudioReceived)]
        received += [e for e in advance(session, client, now) if isinstance(e, AudioReceived)]
    received += [e for e in advance(session, client, 0.25) if isinstance(e, AudioReceived)]
    assert len(received) == 10
    assert all(len(e.pcm) == FRAME_BYTES and not e.concealed for e in received)


def test_audio_out_is_paced_in_real_time_and_barge_in_reports_what_was_played():
    session, client, _ = connected_pair()
    session.queue_audio(bytes(FRAME_BYTES * 50), 1.0)  # one second of audio
    exchange(session, client, 1.0)
    assert len(client.received_rtp) == 1  # the first frame leaves at once
    advance(session, client, 1.1)
    times = [t for t, _ in client.received_rtp]
    assert times == pytest.approx([1.0 + 0.02 * i for i in range(6)])
    sequences = [parse_rtp(packet).sequence for _, packet in client.received_rtp]
    assert sequences == list(range(100, 106))
    assert parse_rtp(client.received_rtp[0][1]).marker

    assert session.clear_audio() == pytest.approx(120.0)  # six 20 ms frames were sent
    advance(session, client, 2.0)
    assert len(client.received_rtp) == 6  # nothing after the barge-in


def test_frames_queued_early_still_leave_20_ms_apart():
    """An echo's frames arrive as the jitter buffer releases them, sometimes early."""
    session, client, _ = connected_pair()
    session.queue_audio(bytes(FRAME_BYTES), 1.0)
    exchange(session, client, 1.0)
    session.queue_audio(bytes(FRAME_BYTES), 1.005)  # the queue ran dry 5 ms ago
    exchange(session, client, 1.005)
    assert len(client.received_rtp) == 1
    advance(session, client, 1.05)
    assert [t for t, _ in client.received_rtp] == pytest.approx([1.0, 1.02])


def test_silence_advances_rtp_time_and_marks_the_next_talkspurt():
    session, client, _ = connected_pair()
    session.queue_audio(bytes(FRAME_BYTES), 1.0)
    exchange(session, client, 1.0)
    session.queue_audio(bytes(FRAME_BYTES), 2.0)  # a second later
    advance(session, client, 2.0)
    exchange(session, client, 2.0)
    first, second = (parse_rtp(packet) for _, packet in client.received_rtp)
    assert second.timestamp - first.timestamp == 48_000
    assert second.marker and second.sequence == first.sequence + 1


def test_rtcp_reports_give_round_trip_time():
    session, client, _ = connected_pair()
    session.queue_audio(bytes(FRAME_BYTES * 500), 0.0)
    advance(session, client, 8.0)
    assert client.received_rtcp, "no sender report in 8 s"
    reports = [
        p for p in rtcp.parse_rtcp(client.received_rtcp[0]) if isinstance(p, rtcp.SenderReport)
    ]
    assert reports
    # The client answers with a receiver report echoing the SR 30 ms later (RFC 3550 §6.4.1).
    reporter = rtcp.RtcpReporter(2222, "client")
    stats = reporter.source(1111)
    for _, packet in client.received_rtp[:5]:
        header = parse_rtp(packet)
        stats.update(header.sequence, header.timestamp, 0.0)
    arrival = 8.0
    stats.note_sender_report(reports[0].ntp_timestamp, arrival)
    reply = reporter.build(arrival + 0.030, 1.8e9, None)
    session.handle_datagram(client.srtp.protect_rtcp(reply), CLIENT, arrival + 0.030)
    rtt = session.audio.stats().rtt_ms
    assert rtt is not None and rtt == pytest.approx(
        1000 * (arrival - _sr_sent_at(session, client)), abs=1.0
    )


def _sr_sent_at(session: Session, client: ScriptedClient) -> float:
    """When the session sent its first SR: the moment the client received the first RTCP."""
    return session.audio._reporter._sent_at[next(iter(session.audio._reporter._sent_at))]


def test_consent_lapses_after_30_seconds_without_checks():
    session, client, _ = connected_pair()
    events = advance(session, client, 29.9)
    assert session.state is SessionState.CONNECTED
    events += advance(session, client, 30.1)
    assert SessionClosed(CloseReason.CONSENT_LOST) in events
    assert session.state is SessionState.CLOSED
    assert session.get_timer() is None


def test_a_client_that_never_checks_times_out():
    session = Session(session_params(connect_timeout=10.0), SERVER_CERT, now=0.0)
    session.handle_timer(10.0)
    assert session.next_event() == SessionClosed(CloseReason.ICE_TIMEOUT)


def test_wrong_client_certificate_fails_the_session():
    impostor = Certificate.generate(datetime(2026, 1, 1, tzinfo=UTC))
    session = Session(
        session_params(remote_fingerprints=(fingerprint(impostor),)), SERVER_CERT, now=0.0
    )
    client = ScriptedClient()
    session.handle_datagram(client.check(), CLIENT, 0.0)
    events = exchange(session, client, 0.0)
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert closed and closed[0].reason is CloseReason.DTLS_FAILED
    assert client.received_rtp == []


def test_close_sends_close_notify_and_ends():
    session, client, _ = connected_pair()
    session.close(CloseReason.HANGUP, 1.0)
    sent = session.datagrams_to_send()
    assert sent and all(data[0] == 21 for data, _ in sent)  # DTLS alert records
    assert session.next_event() == SessionClosed(CloseReason.HANGUP)


datagrams = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda first, rest: bytes([first]) + rest, st.integers(0, 255), st.binary(max_size=200)
    ),
)


@settings(max_examples=200)
@given(data=st.lists(datagrams, max_size=5))
def test_garbage_never_escapes_but_as_parse_error_and_never_breaks_a_live_session(data):
    session, client, _ = connected_pair()
    for datagram in data:
        try:
            session.handle_datagram(datagram, CLIENT, 1.0)
        except ParseError:
            pass
        client.take(session.datagrams_to_send(), 1.0)
    assert session.state is SessionState.CONNECTED
    session.queue_audio(bytes(FRAME_BYTES), 2.0)
    before = len(client.received_rtp)
    exchange(session, client, 2.0)
    assert len(client.received_rtp) == before + 1  # still sends audio


@settings(max_examples=200)
@given(data=st.lists(datagrams, max_size=5))
def test_garbage_before_any_check_leaves_a_new_session_untouched(data):
    session = Session(session_params(), SERVER_CERT, now=0.0)
    for datagram in data:
        try:
            session.handle_datagram(datagram, CLIENT, 1.0)
        except ParseError:
            pass
    assert session.state is SessionState.NEW
    assert session.datagrams_to_send() == []
    assert session.next_event() is None
