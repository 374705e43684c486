"""SRTP/SRTCP through libsrtp, keyed like DTLS keys it (RFC 5764 §4.2)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.rtc.test_dtls import RTCP, RTP, handshake
from voicewire.rtc.dtls import DtlsConnected, SrtpProfile
from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.srtp import SrtpSession


def key_pair(profile: SrtpProfile) -> tuple[DtlsConnected, DtlsConnected]:
    """What DTLS would report to each side: one side's local keys are the other's remote ones."""
    client_key, server_key = bytes([1]) * profile.key_length, bytes([2]) * profile.key_length
    client_salt, server_salt = bytes([3]) * profile.salt_length, bytes([4]) * profile.salt_length
    return (
        DtlsConnected(profile, client_key, client_salt, server_key, server_salt),
        DtlsConnected(profile, server_key, server_salt, client_key, client_salt),
    )


def sessions(profile: SrtpProfile) -> tuple[SrtpSession, SrtpSession]:
    client, server = key_pair(profile)
    return SrtpSession(client), SrtpSession(server)


def rtp(sequence: int) -> bytes:
    return RTP[:2] + sequence.to_bytes(2) + RTP[4:]


@pytest.mark.parametrize("profile", list(SrtpProfile))
@pytest.mark.parametrize("direction", ["client to server", "server to client"])
def test_protect_then_unprotect(profile, direction):
    client, server = sessions(profile)
    sender, receiver = (client, server) if direction == "client to server" else (server, client)
    protected = sender.protect_rtp(RTP)
    assert protected != RTP and protected[:12] == RTP[:12]  # header in clear, payload not
    assert receiver.unprotect_rtp(protected) == RTP
    assert receiver.unprotect_rtcp(sender.protect_rtcp(RTCP)) == RTCP


def test_keys_from_a_real_handshake_work_both_ways():
    *_, client_connected, server_connected = handshake()
    client, server = SrtpSession(client_connected), SrtpSession(server_connected)
    assert server.unprotect_rtp(client.protect_rtp(RTP)) == RTP
    assert client.unprotect_rtp(server.protect_rtp(RTP)) == RTP
    assert server.unprotect_rtcp(client.protect_rtcp(RTCP)) == RTCP
    assert client.unprotect_rtcp(server.protect_rtcp(RTCP)) == RTCP


@pytest.mark.parametrize("profile", list(SrtpProfile))
def test_tampered_packets_are_parse_errors(profile):
    client, server = sessions(profile)
    protected = bytearray(client.protect_rtp(rtp(1)))
    protected[-1] ^= 1
    with pytest.raises(ParseError):
        server.unprotect_rtp(bytes(protected))
    assert server.unprotect_rtp(client.protect_rtp(rtp(2))) == rtp(2)  # the session goes on


def test_replayed_packets_are_parse_errors():
    client, server = sessions(SrtpProfile.AEAD_AES_128_GCM)
    protected = client.protect_rtp(rtp(7))
    server.unprotect_rtp(protected)
    with pytest.raises(ParseError):
        server.unprotect_rtp(protected)


def test_our_own_packet_protected_by_us_does_not_unprotect():
    """Each direction has its own key: a reflected packet is rejected."""
    client, _ = sessions(SrtpProfile.AES128_CM_SHA1_80)
    with pytest.raises(ParseError):
        client.unprotect_rtp(client.protect_rtp(RTP))


def test_protecting_a_non_rtp_packet_is_a_local_error():
    client, _ = sessions(SrtpProfile.AEAD_AES_128_GCM)
    with pytest.raises(LocalError):
        client.protect_rtp(b"\x80")
    with pytest.raises(LocalError):
        client.protect_rtp(RTP[:12] + bytes(1600))


@given(profile=st.sampled_from(SrtpProfile), data=st.binary(max_size=2000))
def test_random_bytes_unprotect_only_to_parse_errors(profile, data):
    _, server = sessions(profile)
    for unprotect in (server.unprotect_rtp, server.unprotect_rtcp):
        with pytest.raises(ParseError):
            unprotect(data)
