"""DTLS engine: two in-memory endpoints talk through a list-based network under a fake clock.

Only `test_lost_flight_is_retransmitted_after_the_timer` waits in real time (about 1 s),
because OpenSSL checks its retransmission timer against its own clock.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from tests.rtc.engine_events import drain
from voicewire.rtc.certificate import Certificate
from voicewire.rtc.dtls import (
    DtlsApplicationData,
    DtlsClosed,
    DtlsConnected,
    DtlsEndpoint,
    DtlsFailed,
    DtlsState,
    FailureReason,
    SrtpProfile,
)
from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.srtp import SrtpSession

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLIENT_CERTIFICATE = Certificate.generate(NOW)
SERVER_CERTIFICATE = Certificate.generate(NOW)
STRANGER_CERTIFICATE = Certificate.generate(NOW)


def offered(certificate: Certificate) -> list[tuple[str, str]]:
    """The `a=fingerprint` list an offer naming `certificate` would carry."""
    name, value = certificate.sdp_fingerprint.split(" ")
    return [(name, value)]


@dataclass
class Network:
    """Carries datagrams between two endpoints in order, dropping those `drop` picks.

    Every datagram is checked against the MTU on its way out and kept in `sent`.
    """

    client: DtlsEndpoint
    server: DtlsEndpoint
    mtu: int = 1200
    drop: Callable[[str, bytes], bool] = lambda sender, datagram: False
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def run(self, now: float = 0.0) -> None:
        """Deliver until neither side has anything left to send."""
        while self.step(now):
            pass

    def step(self, now: float) -> bool:
        moved = False
        for name, sender, receiver in (
            ("client", self.client, self.server),
            ("server", self.server, self.client),
        ):
            for datagram in sender.datagrams_to_send():
                assert len(datagram) <= self.mtu
                self.sent.append((name, datagram))
                moved = True
                if not self.drop(name, datagram):
                    receiver.handle_datagram(datagram, now)
        return moved


def endpoints(
    client_expects: Certificate = SERVER_CERTIFICATE,
    server_expects: Certificate = CLIENT_CERTIFICATE,
    mtu: int = 1200,
) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    client = DtlsEndpoint("client", CLIENT_CERTIFICATE, offered(client_expects), mtu)
    server = DtlsEndpoint("server", SERVER_CERTIFICATE, offered(server_expects), mtu)
    return client, server


def handshake() -> tuple[DtlsEndpoint, DtlsEndpoint, DtlsConnected, DtlsConnected]:
    """A connected client and server, and the DtlsConnected each reported."""
    client, server = endpoints()
    server.start(0.0)
    client.start(0.0)
    Network(client, server).run()
    [client_connected] = drain(client)
    [server_connected] = drain(server)
    return client, server, client_connected, server_connected


def assert_keys_pair_up(client: DtlsConnected, server: DtlsConnected) -> None:
    assert client.srtp_profile is server.srtp_profile
    assert (client.local_key, client.local_salt) == (server.remote_key, server.remote_salt)
    assert (client.remote_key, client.remote_salt) == (server.local_key, server.local_salt)
    assert client.local_key != client.remote_key


def test_handshake_connects_both_sides_with_matching_keys():
    client, server, client_connected, server_connected = handshake()
    assert client.state is server.state is DtlsState.CONNECTED
    assert client_connected.srtp_profile is SrtpProfile.AEAD_AES_128_GCM  # preferred
    assert_keys_pair_up(client_connected, server_connected)
    assert len(client_connected.local_key) == 16 and len(client_connected.local_salt) == 12
    assert client.get_timer() is None and server.get_timer() is None


def test_connected_event_does_not_show_keys():
    *_, connected = handshake()
    assert "key" not in repr(connected) and "salt" not in repr(connected)


@pytest.mark.parametrize("mtu", [256, 300, 1200])
def test_every_datagram_fits_the_mtu(mtu):
    client, server = endpoints(mtu=mtu)
    client.start(0.0)
    server.start(0.0)
    network = Network(client, server, mtu)
    network.run()  # asserts the MTU on every datagram
    assert client.state is server.state is DtlsState.CONNECTED
    if mtu < 600:  # the certificate flights cannot fit one datagram
        assert len(network.sent) > 4


def test_duplicated_datagrams_do_not_break_the_handshake():
    client, server = endpoints()
    client.start(0.0)
    server.start(0.0)
    for _ in range(8):
        for sender, receiver in ((client, server), (server, client)):
            for datagram in sender.datagrams_to_send():
                receiver.handle_datagram(datagram, 0.0)
                receiver.handle_datagram(datagram, 0.0)
    assert client.state is server.state is DtlsState.CONNECTED


@pytest.mark.parametrize("liar", ["client", "server"])
def test_wrong_fingerprint_fails_both_sides_without_keys(liar):
    """`liar` presents a certificate other than the one its peer was told to expect."""
    if liar == "client":
        client, server = endpoints(server_expects=STRANGER_CERTIFICATE)
    else:
        client, server = endpoints(client_expects=STRANGER_CERTIFICATE)
    victim, other = (server, client) if liar == "client" else (client, server)
    client.start(0.0)
    server.start(0.0)
    Network(client, server).run()
    [victim_event] = drain(victim)
    assert victim_event.reason is FailureReason.FINGERPRINT_MISMATCH
    [other_event] = drain(other)
    assert other_event.reason is FailureReason.HANDSHAKE_FAILED  # it got our alert
    assert victim.state is other.state is DtlsState.FAILED


class RawClient:
    """A bare pyOpenSSL DTLS client, for peers our endpoint would never be."""

    def __init__(self, certificate: Certificate | None, use_srtp: bool) -> None:
        context = SSL.Context(SSL.DTLS_METHOD)
        if certificate is not None:
            context.use_certificate(certificate.x509)
            context.use_privatekey(certificate.private_key)
        if use_srtp:
            context.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
        self.ssl = SSL.Connection(context, None)
        self.ssl.set_connect_state()

    def exchange(self, server: DtlsEndpoint) -> None:
        for _ in range(4):
            try:
                self.ssl.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error:
                return
            try:
                data = self.ssl.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                server.handle_datagram(data, 0.0)
            for datagram in server.datagrams_to_send():
                self.ssl.bio_write(datagram)


def test_server_refuses_a_client_without_certificate():
    server = DtlsEndpoint("server", SERVER_CERTIFICATE, offered(CLIENT_CERTIFICATE))
    server.start(0.0)
    RawClient(certificate=None, use_srtp=True).exchange(server)
    [event] = drain(server)
    assert event.reason is FailureReason.HANDSHAKE_FAILED
    assert server.state is DtlsState.FAILED


def test_server_fails_a_client_that_negotiates_no_srtp():
    server = DtlsEndpoint("server", SERVER_CERTIFICATE, offered(CLIENT_CERTIFICATE))
    server.start(0.0)
    RawClient(certificate=CLIENT_CERTIFICATE, use_srtp=False).exchange(server)
    assert [event.reason for event in drain(server)] == [FailureReason.NO_SRTP_PROFILE]


def test_application_data_both_ways():
    client, server, *_ = handshake()
    network = Network(client, server)
    client.send_application_data(b"from client")
    server.send_application_data(b"from server")
    server.send_application_data(b"x" * server.max_application_data)
    network.run()
    assert drain(server) == [DtlsApplicationData(b"from client")]
    assert drain(client) == [
        DtlsApplicationData(b"from server"),
        DtlsApplicationData(b"x" * server.max_application_data),
    ]


def test_application_data_must_fit_one_record():
    client, *_ = handshake()
    with pytest.raises(LocalError):
        client.send_application_data(b"x" * (client.max_application_data + 1))
    with pytest.raises(LocalError):
        client.send_application_data(b"")


def test_close_tells_the_peer():
    client, server, *_ = handshake()
    client.close()
    Network(client, server).run()
    assert drain(server) == [DtlsClosed()]
    assert client.state is server.state is DtlsState.CLOSED
    assert drain(client) == []  # the peer's answering close_notify is ignored
    with pytest.raises(LocalError):
        client.send_application_data(b"late")
    client.close()  # idempotent


def test_close_during_the_handshake_sends_nothing():
    client, _ = endpoints()
    client.start(0.0)
    client.datagrams_to_send()
    client.close()
    assert client.state is DtlsState.CLOSED
    assert client.datagrams_to_send() == [] and client.get_timer() is None


def test_misuse_is_a_local_error():
    client, _ = endpoints()
    with pytest.raises(LocalError):
        client.handle_datagram(b"\x16\xfe\xfd" + bytes(10), 0.0)  # before start()
    with pytest.raises(LocalError):
        client.send_application_data(b"too early")
    client.start(0.0)
    with pytest.raises(LocalError):
        client.start(0.0)
    with pytest.raises(LocalError):
        DtlsEndpoint("active", CLIENT_CERTIFICATE, [])  # type: ignore[arg-type]
    with pytest.raises(LocalError):
        DtlsEndpoint("client", CLIENT_CERTIFICATE, [], mtu=200)


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x16\xfe\xfd",  # truncated header
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x10" + bytes(4),  # truncated fragment
        b"\x40\xfe\xfd" + bytes(8) + b"\x00\x00",  # content type 64 is not DTLS
        b"\x16\x03\x03" + bytes(8) + b"\x00\x00",  # a TLS, not DTLS, version
    ],
)
def test_malformed_datagrams_are_parse_errors(datagram):
    client, _ = endpoints()
    client.start(0.0)
    with pytest.raises(ParseError):
        client.handle_datagram(datagram, 0.0)
    assert client.state is DtlsState.CONNECTING


def test_datagrams_after_failure_are_ignored():
    client, server = endpoints(client_expects=STRANGER_CERTIFICATE)
    client.start(0.0)
    server.start(0.0)
    network = Network(client, server)
    network.run()
    assert client.state is DtlsState.FAILED
    drain(client)
    for _, datagram in network.sent:
        client.handle_datagram(datagram, 0.0)
    client.handle_datagram(b"garbage", 0.0)
    assert client.datagrams_to_send() == [] and client.next_event() is None


def test_timer_is_absolute_on_the_callers_clock_and_waits_for_openssls():
    client, _ = endpoints()
    client.start(100.0)
    deadline = client.get_timer()
    assert deadline is not None and 100.5 < deadline <= 101.0  # OpenSSL starts at 1 s
    client.datagrams_to_send()
    client.handle_timer(100.5)  # early: nothing
    assert client.datagrams_to_send() == [] and client.get_timer() == deadline
    # At the deadline on our clock but long before it on OpenSSL's, nothing is resent and
    # the deadline moves to what OpenSSL still counts (see DtlsEndpoint._update_timer).
    client.handle_timer(deadline)
    assert client.datagrams_to_send() == []
    assert client.get_timer() > deadline


def test_lost_flight_is_retransmitted_after_the_timer():
    """The server's last flight is lost; the client's timer brings it back. Waits ~1 s."""
    client, server = endpoints()
    lost = []

    def drop_first_final_flight(sender, datagram):
        if sender == "server" and server.state is DtlsState.CONNECTED and not lost:
            lost.append(datagram)
            return True
        return False

    network = Network(client, server, drop=drop_first_final_flight)
    client.start(0.0)
    server.start(0.0)
    network.run(0.0)
    assert lost and server.state is DtlsState.CONNECTED and client.state is DtlsState.CONNECTING
    deadline = client.get_timer()
    time.sleep(deadline)  # OpenSSL's clock has to pass the timeout as well as ours
    client.handle_timer(deadline)
    network.run(deadline)
    assert client.state is DtlsState.CONNECTED
    assert_keys_pair_up(*[e for e in drain(client) + drain(server) if isinstance(e, DtlsConnected)])


# Hypothesis: whatever arrives, at whatever point, only our own errors come out; the endpoints
# only ever connect with the right keys; and bytes from nobody cannot end a connection.

_TRANSCRIPT = Network(*endpoints())
_TRANSCRIPT.client.start(0.0)
_TRANSCRIPT.server.start(0.0)
_TRANSCRIPT.run()
HANDSHAKE_DATAGRAMS = [datagram for _, datagram in _TRANSCRIPT.sent]


def records(datagram: bytes) -> list[bytes]:
    """Split a well-formed datagram into records (RFC 6347 §4.1: length in header bytes 11-12)."""
    out, offset = [], 0
    while offset < len(datagram):
        end = offset + 13 + int.from_bytes(datagram[offset + 11 : offset + 13])
        out.append(datagram[offset:end])
        offset = end
    return out


def record(content_type: int, version: bytes, epoch_seq: bytes, fragment: bytes) -> bytes:
    return bytes([content_type]) + version + epoch_seq + len(fragment).to_bytes(2) + fragment


@st.composite
def mutated_handshake_datagram(draw) -> bytes:
    """A datagram of a real handshake with its records' contents changed, framing kept valid."""
    mutated = []
    for original in records(draw(st.sampled_from(HANDSHAKE_DATAGRAMS))):
        header, fragment = bytearray(original[:11]), bytearray(original[13:])
        if fragment and draw(st.booleans()):
            for _ in range(draw(st.integers(1, 4))):
                fragment[draw(st.integers(0, len(fragment) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            fragment = fragment[: draw(st.integers(0, len(fragment)))]
        if draw(st.booleans()):
            header[3:11] = draw(st.binary(min_size=8, max_size=8))  # epoch and sequence number
        mutated.append(record(header[0], bytes(header[1:3]), bytes(header[3:11]), bytes(fragment)))
    return b"".join(mutated)


framed_garbage = st.lists(
    st.builds(
        record,
        st.integers(20, 23),
        st.sampled_from([b"\xfe\xfd", b"\xfe\xff"]),
        st.sampled_from([bytes(8), b"\x00\x01" + bytes(6)]) | st.binary(min_size=8, max_size=8),
        st.binary(max_size=300),
    ),
    min_size=1,
    max_size=3,
).map(b"".join)


hostile_datagrams = (
    st.binary(min_size=1, max_size=1500) | framed_garbage | mutated_handshake_datagram()
)


@settings(max_examples=300)
@given(
    when=st.integers(0, 8),
    target=st.sampled_from(["client", "server"]),
    hostile=hostile_datagrams,
)
def test_hostile_datagrams_raise_only_parse_errors(when, target, hostile):
    client, server = endpoints()
    client.start(0.0)
    server.start(0.0)
    queue: deque[tuple[DtlsEndpoint, bytes]] = deque()

    def deliver(receiver: DtlsEndpoint, datagram: bytes) -> None:
        try:
            receiver.handle_datagram(datagram, 0.0)
        except ParseError:
            pass
        queue.extend((server, d) for d in client.datagrams_to_send())
        queue.extend((client, d) for d in server.datagrams_to_send())

    queue.extend((server, d) for d in client.datagrams_to_send())
    for step in range(20):
        if step == when:
            deliver(client if target == "client" else server, hostile)
        if queue:
            deliver(*queue.popleft())
    events = drain(client) + drain(server)
    connected = [event for event in events if isinstance(event, DtlsConnected)]
    if len(connected) == 2:
        assert_keys_pair_up(*connected)
    alive = {DtlsState.CONNECTING, DtlsState.CONNECTED, DtlsState.FAILED}
    assert client.state in alive and server.state in alive


@settings(max_examples=200)
@given(hostile=st.lists(hostile_datagrams, min_size=1, max_size=5))
def test_hostile_datagrams_cannot_end_a_connection(hostile):
    client, server, *_ = handshake()
    for datagram in hostile:
        for endpoint in (client, server):
            try:
                endpoint.handle_datagram(datagram, 0.0)
            except ParseError:
                pass
    assert client.state is server.state is DtlsState.CONNECTED
    assert not [e for e in drain(client) + drain(server) if isinstance(e, DtlsFailed)]


# Interop with aiortc's DTLS transport (also pyOpenSSL, configured its own way), through a fake
# ICE transport: its RTCDtlsTransport only needs `_send`, `_recv` and `role` from one. aiortc is
# imported inside the test, so that a machine without it fails this test alone, loudly.


class FakeIceTransport:
    role = "controlling"

    def __init__(self) -> None:
        self.to_aiortc: asyncio.Queue[bytes] = asyncio.Queue()
        self.from_aiortc: asyncio.Queue[bytes] = asyncio.Queue()

    async def _recv(self) -> bytes:
        return await self.to_aiortc.get()

    async def _send(self, data: bytes) -> None:
        self.from_aiortc.put_nowait(data)


class DataCollector:
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    async def _handle_data(self, data: bytes) -> None:
        self.received.put_nowait(data)


RTP = bytes([0x80, 111, 0, 1, 0, 0, 0, 160, 0xDE, 0xAD, 0xBE, 0xEF]) + b"opus"
RTCP = bytes([0x80, 201, 0, 1, 0xDE, 0xAD, 0xBE, 0xEF])  # an empty receiver report


@pytest.mark.parametrize("our_role", ["client", "server"])
@pytest.mark.parametrize("their_profile", list(SrtpProfile))
async def test_interoperates_with_aiortc(our_role, their_profile):
    from aiortc import rtcdtlstransport as aiortc

    loop = asyncio.get_running_loop()
    ice = FakeIceTransport()
    their_certificate = aiortc.RTCCertificate.generateCertificate()
    theirs = aiortc.RTCDtlsTransport(ice, [their_certificate])
    theirs._set_role("server" if our_role == "client" else "client")
    theirs._srtp_profiles = [
        profile
        for profile in aiortc.SRTP_PROFILES
        if profile.openssl_profile.decode() == their_profile.openssl_name
    ]
    collector = DataCollector()
    theirs._register_data_receiver(collector)
    ours = DtlsEndpoint(
        our_role,
        SERVER_CERTIFICATE,
        [(f.algorithm, f.value) for f in their_certificate.getFingerprints()],
    )
    srtp_from_aiortc: asyncio.Queue[bytes] = asyncio.Queue()

    def flush() -> None:
        for datagram in ours.datagrams_to_send():
            ice.to_aiortc.put_nowait(datagram)

    async def pump() -> None:
        while True:
            flush()
            deadline = ours.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                data = await asyncio.wait_for(ice.from_aiortc.get(), timeout)
            except TimeoutError:
                ours.handle_timer(loop.time())
                continue
            if 127 < data[0] < 192:  # RFC 7983 §7: SRTP/SRTCP rides the same transport
                srtp_from_aiortc.put_nowait(data)
            else:
                ours.handle_datagram(data, loop.time())

    async def next_event():
        while (event := ours.next_event()) is None:
            await asyncio.sleep(0.001)
        return event

    name, value = SERVER_CERTIFICATE.sdp_fingerprint.split(" ")
    their_start = asyncio.ensure_future(
        theirs.start(aiortc.RTCDtlsParameters([aiortc.RTCDtlsFingerprint(name, value)]))
    )
    ours.start(loop.time())
    pumping = asyncio.ensure_future(pump())
    try:
        async with asyncio.timeout(10):
            connected = await next_event()
            await their_start
            assert isinstance(connected, DtlsConnected) and theirs.state == "connected"
            assert connected.srtp_profile is their_profile
            srtp = SrtpSession(connected)

            for packet in (RTP, RTCP):
                await theirs._send_rtp(packet)
            assert srtp.unprotect_rtp(await srtp_from_aiortc.get()) == RTP
            assert srtp.unprotect_rtcp(await srtp_from_aiortc.get()) == RTCP
            assert theirs._rx_srtp.unprotect(srtp.protect_rtp(RTP)) == RTP
            assert theirs._rx_srtp.unprotect_rtcp(srtp.protect_rtcp(RTCP)) == RTCP

            ours.send_application_data(b"to aiortc")
            flush()
            assert await collector.received.get() == b"to aiortc"
            await theirs._send_data(b"from aiortc")
            assert await next_event() == DtlsApplicationData(b"from aiortc")

            await theirs.stop()
            assert await next_event() == DtlsClosed()
    finally:
        pumping.cancel()
