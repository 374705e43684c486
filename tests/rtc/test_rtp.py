"""RTP headers, read and written as aiortc's independent implementation reads and writes them."""

import struct

import pytest
from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.rtp import RtpHeader, RtpPacketizer, parse_rtp

PAYLOAD = b"\xfc\xff\xfe" + bytes(range(40))


def extensions_map() -> HeaderExtensionsMap:
    """The three header extensions Chromium puts on its audio packets."""
    uris = [
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    ]
    mapping = HeaderExtensionsMap()
    mapping.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=index + 1, uri=uri)
                for index, uri in enumerate(uris)
            ]
        )
    )
    return mapping


def aiortc_packet(**fields: object) -> RtpPacket:
    packet = RtpPacket(
        payload_type=111, marker=1, sequence_number=4321, timestamp=0xDEADBEEF, ssrc=0x11223344
    )
    packet.payload = PAYLOAD
    for name, value in fields.items():
        setattr(packet, name, value)
    return packet


def payload_of(data: bytes) -> bytes:
    header = parse_rtp(data)
    return data[header.payload_start : header.payload_end]


def test_parse_reads_every_fixed_field() -> None:
    data = aiortc_packet().serialize()

    assert parse_rtp(data) == RtpHeader(
        payload_type=111,
        marker=True,
        sequence=4321,
        timestamp=0xDEADBEEF,
        ssrc=0x11223344,
        payload_start=12,
        payload_end=len(data),
    )


def test_parse_skips_csrcs() -> None:
    data = aiortc_packet(csrc=[1, 2, 3]).serialize()

    assert parse_rtp(data).payload_start == 12 + 3 * 4
    assert payload_of(data) == PAYLOAD


def test_parse_skips_one_byte_header_extensions_as_chromium_sends_them() -> None:
    mapping = extensions_map()
    packet = aiortc_packet()
    packet.extensions.audio_level = (True, 42)
    packet.extensions.mid = "0"
    packet.extensions.transport_sequence_number = 7
    data = packet.serialize(mapping)
    assert data[0] & 0x10 and data[12:14] == b"\xbe\xde"  # RFC 8285 §4.2 one-byte form

    assert payload_of(data) == RtpPacket.parse(data, mapping).payload == PAYLOAD


def test_parse_skips_two_byte_header_extensions() -> None:
    profile_and_length = struct.pack("!HH", 0x1000, 2)  # RFC 8285 §4.3, two 32-bit words
    element = bytes((1, 5)) + b"hello" + b"\x00"
    data = bytearray(aiortc_packet().serialize())
    data[0] |= 0x10
    data[12:12] = profile_and_length + element

    assert payload_of(bytes(data)) == RtpPacket.parse(bytes(data)).payload == PAYLOAD


def test_parse_strips_padding() -> None:
    data = aiortc_packet(padding_size=7, csrc=[9]).serialize()

    assert payload_of(data) == PAYLOAD
    assert parse_rtp(data).payload_end == len(data) - 7


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes([0x80]) + bytes(10), id="short-header"),
        pytest.param(bytes([0x40]) + bytes(11), id="version-1"),
        pytest.param(bytes([0x82]) + bytes(11) + bytes(4), id="csrcs-overrun"),
        pytest.param(bytes([0x90]) + bytes(11) + b"\xbe\xde", id="extension-header-truncated"),
        pytest.param(bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), id="ext-overrun"),
        pytest.param(bytes([0xA0]) + bytes(11) + b"ab\x00", id="padding-zero"),
        pytest.param(bytes([0xA0]) + bytes(11) + b"ab\x04", id="padding-into-header"),
    ],
)
def test_parse_rejects_malformed_headers(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_rtp(data)
    with pytest.raises(ValueError):  # aiortc rejects the same bytes
        RtpPacket.parse(data)


def test_packetizer_writes_what_aiortc_reads() -> None:
    packetizer = RtpPacketizer(
        0xCAFEBABE, 111, initial_sequence=65535, initial_timestamp=0xFFFFFF00
    )

    first = RtpPacket.parse(packetizer.packet(b"one", 960))
    second = RtpPacket.parse(packetizer.packet(b"two", 960))

    assert (first.version, first.payload_type, first.ssrc, first.payload) == (
        2,
        111,
        0xCAFEBABE,
        b"one",
    )
    assert (first.sequence_number, first.timestamp) == (65535, 0xFFFFFF00)
    assert (second.sequence_number, second.timestamp) == (0, 0xFFFFFF00 + 960 - 2**32)
    assert (first.marker, second.marker) == (1, 0)  # RFC 3551 §4.1: the stream starts here
    assert not first.csrc and not first.padding_size


def test_packetizer_marks_the_talkspurt_after_skipped_silence() -> None:
    packetizer = RtpPacketizer(1, 111, initial_sequence=10, initial_timestamp=1000)
    packetizer.packet(b"a", 960)
    packetizer.skip(960 * 50)  # one second not sent

    after = parse_rtp(packetizer.packet(b"b", 960))
    following = parse_rtp(packetizer.packet(b"c", 960))

    assert (after.sequence, after.timestamp, after.marker) == (11, 1000 + 960 * 51, True)
    assert following.marker is False


def test_packetizer_counts_what_a_sender_report_states() -> None:
    packetizer = RtpPacketizer(1, 111, initial_sequence=0, initial_timestamp=0)
    for size in (10, 20, 30):
        packetizer.packet(bytes(size), 960)

    assert (packetizer.packet_count, packetizer.octet_count) == (3, 60)
    assert (packetizer.sequence, packetizer.timestamp) == (3, 2880)


@pytest.mark.parametrize(("payload_type", "ssrc"), [(128, 1), (-1, 1), (111, 2**32)])
def test_packetizer_refuses_fields_that_do_not_fit(payload_type: int, ssrc: int) -> None:
    with pytest.raises(LocalError):
        RtpPacketizer(ssrc, payload_type, initial_sequence=0, initial_timestamp=0)


@given(
    payload_type=st.integers(0, 127),
    marker=st.integers(0, 1),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    extensions=st.booleans(),
    padding=st.integers(0, 255),
    payload=st.binary(max_size=200),
)
def test_parse_agrees_with_aiortc_on_any_packet_it_writes(
    payload_type: int,
    marker: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    csrcs: list[int],
    extensions: bool,
    padding: int,
    payload: bytes,
) -> None:
    mapping = extensions_map()
    packet = RtpPacket(payload_type, marker, sequence, timestamp, ssrc, payload)
    packet.csrc = csrcs
    packet.padding_size = padding
    if extensions:
        packet.extensions.mid = "audio"
        packet.extensions.audio_level = (False, 127)
    data = packet.serialize(mapping)

    header = parse_rtp(data)

    assert (header.payload_type, header.marker, header.sequence) == (
        payload_type,
        bool(marker),
        sequence,
    )
    assert (header.timestamp, header.ssrc) == (timestamp, ssrc)
    assert data[header.payload_start : header.payload_end] == payload


@given(st.binary(max_size=120))
def test_parse_of_any_bytes_raises_parse_error_or_agrees_with_aiortc(data: bytes) -> None:
    try:
        header = parse_rtp(data)
    except ParseError:
        with pytest.raises(ValueError):
            RtpPacket.parse(data)
        return
    assert 12 <= header.payload_start <= header.payload_end <= len(data)
    if not data[0] & 0x10:  # aiortc also parses extension elements; we skip them unread
        theirs = RtpPacket.parse(data)
        assert data[header.payload_start : header.payload_end] == theirs.payload
        assert (header.sequence, header.timestamp, header.ssrc) == (
            theirs.sequence_number,
            theirs.timestamp,
            theirs.ssrc,
        )
