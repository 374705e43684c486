"""RTCP: packets checked against aiortc, statistics against hand-worked RFC 3550 arithmetic."""

import struct

import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given
from hypothesis import strategies as st

from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.rtcp import (
    CNAME,
    Goodbye,
    ReceiverReport,
    ReceptionStatistics,
    ReportBlock,
    RtcpReporter,
    SdesChunk,
    SenderInfo,
    SenderReport,
    SourceDescription,
    is_rtcp,
    ntp_timestamp,
    parse_rtcp,
    report_interval,
)

OURS, THEIRS = 0x0A0A0A0A, 0x0B0B0B0B
BLOCK = ReportBlock(
    ssrc=THEIRS,
    fraction_lost=25,
    cumulative_lost=-3,
    highest_sequence=0x0001_0005,
    jitter=1234,
    lsr=0x12345678,
    dlsr=65536,
)


def aiortc_block(block: ReportBlock) -> aiortc_rtp.RtcpReceiverInfo:
    return aiortc_rtp.RtcpReceiverInfo(
        ssrc=block.ssrc,
        fraction_lost=block.fraction_lost,
        packets_lost=block.cumulative_lost,
        highest_sequence=block.highest_sequence,
        jitter=block.jitter,
        lsr=block.lsr,
        dlsr=block.dlsr,
    )


# Packets, against aiortc


def test_our_compound_report_parses_with_aiortc() -> None:
    reporter = RtcpReporter(OURS, "user@voicewire")
    data = reporter.build(now=1.0, wallclock=1_700_000_000.25, sending=SenderInfo(48000, 50, 4000))

    sender_report, description = aiortc_rtp.RtcpPacket.parse(data)

    assert isinstance(sender_report, aiortc_rtp.RtcpSrPacket)
    assert sender_report.ssrc == OURS
    assert sender_report.sender_info == aiortc_rtp.RtcpSenderInfo(
        ntp_timestamp=ntp_timestamp(1_700_000_000.25),
        rtp_timestamp=48000,
        packet_count=50,
        octet_count=4000,
    )
    assert isinstance(description, aiortc_rtp.RtcpSdesPacket)
    assert description.chunks[0].ssrc == OURS
    assert description.chunks[0].items == [(CNAME, b"user@voicewire")]


@pytest.mark.parametrize(
    "packet",
    [
        SenderReport(OURS, 1 << 63, 7, 8, 9, (BLOCK, BLOCK)),
        ReceiverReport(OURS, (BLOCK,)),
        ReceiverReport(OURS),
        Goodbye((OURS, THEIRS)),
    ],
    ids=["sr", "rr", "empty-rr", "bye"],
)
def test_aiortc_reads_each_packet_we_write(packet: object) -> None:
    (theirs,) = aiortc_rtp.RtcpPacket.parse(bytes(packet))

    if isinstance(packet, Goodbye):
        assert theirs.sources == list(packet.sources)
    else:
        assert theirs.ssrc == packet.ssrc
        assert theirs.reports == [aiortc_block(block) for block in packet.reports]


def test_we_read_a_compound_aiortc_writes_and_skip_the_feedback_we_do_not_use() -> None:
    compound = b"".join(
        bytes(packet)
        for packet in [
            aiortc_rtp.RtcpSrPacket(
                ssrc=THEIRS,
                sender_info=aiortc_rtp.RtcpSenderInfo(2**40 + 5, 960, 10, 800),
                reports=[aiortc_block(BLOCK)],
            ),
            aiortc_rtp.RtcpSdesPacket(
                chunks=[aiortc_rtp.RtcpSourceInfo(ssrc=THEIRS, items=[(1, b"{cname-uuid}")])]
            ),
            aiortc_rtp.RtcpRtpfbPacket(fmt=1, ssrc=THEIRS, media_ssrc=OURS, lost=[3, 5, 40]),
            aiortc_rtp.RtcpPsfbPacket(fmt=1, ssrc=THEIRS, media_ssrc=OURS),
            aiortc_rtp.RtcpRrPacket(ssrc=THEIRS, reports=[aiortc_block(BLOCK)]),
            aiortc_rtp.RtcpByePacket(sources=[THEIRS]),
        ]
    )

    assert parse_rtcp(compound) == (
        SenderReport(THEIRS, 2**40 + 5, 960, 10, 800, (BLOCK,)),
        SourceDescription((SdesChunk(THEIRS, ((CNAME, b"{cname-uuid}"),)),)),
        ReceiverReport(THEIRS, (BLOCK,)),
        Goodbye((THEIRS,)),
    )


@pytest.mark.parametrize(
    "packet",
    [
        SenderReport(OURS, 1, 2, 2**32 + 3, 4, (BLOCK,) * 31),
        ReceiverReport(OURS, (BLOCK, ReportBlock(1, 255, 0x7FFFFF, 0, 0, 0, 0))),
        SourceDescription(
            (
                SdesChunk(OURS, ((CNAME, b"abc"),)),  # three item octets: one null after
                SdesChunk(THEIRS, ((CNAME, b"abcd"), (6, b"voicewire"))),
                SdesChunk(7, ()),
            )
        ),
        Goodbye((OURS,), "hang-up"),
        Goodbye((), "é"),
        Goodbye((OURS, THEIRS)),
    ],
    ids=["sr-31-blocks", "rr-extremes", "sdes-chunks", "bye-reason", "bye-no-source", "bye"],
)
def test_every_packet_reads_back_as_written(packet: object) -> None:
    (read,) = parse_rtcp(bytes(packet))

    if isinstance(packet, SenderReport):  # counts are 32-bit on the wire
        assert read == SenderReport(OURS, 1, 2, 3, 4, packet.reports)
    else:
        assert read == packet


def test_cname_is_read_from_a_chunk() -> None:
    assert SdesChunk(1, ((6, b"tool"), (CNAME, b"me"))).cname == "me"
    assert SdesChunk(1, ((6, b"tool"),)).cname is None


def test_padding_on_the_last_packet_is_stripped() -> None:
    padded = bytearray(bytes(Goodbye((OURS,), "x")))  # 4 + 4 + 4 octets, reason padded
    padded[0] |= 0x20
    padded += b"\x00\x00\x00\x04"
    struct.pack_into("!H", padded, 2, 3)
    compound = bytes(ReceiverReport(OURS)) + bytes(padded)

    assert parse_rtcp(compound)[-1] == Goodbye((OURS,), "x")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x80\xc9\x00", id="short-header"),
        pytest.param(b"\x40\xc9\x00\x01" + bytes(4), id="version-1"),
        pytest.param(b"\x80\xc9\x00\x02" + bytes(4), id="length-overrun"),
        pytest.param(bytes(ReceiverReport(OURS)) + b"\x80", id="trailing-octet"),
        pytest.param(b"\xa0\xc9\x00\x01" + bytes(4) + bytes(ReceiverReport(OURS)), id="pad-first"),
        pytest.param(b"\xa0\xc9\x00\x01" + bytes(4), id="padding-zero"),
        pytest.param(b"\xa0\xc9\x00\x01" + b"\x00\x00\x00\x09", id="padding-overrun"),
        pytest.param(b"\x81\xc9\x00\x01" + bytes(4), id="rr-block-overrun"),
        pytest.param(b"\x80\xc9\x00\x00", id="rr-without-ssrc"),
        pytest.param(b"\x80\xc8\x00\x01" + bytes(4), id="sr-without-sender-info"),
        pytest.param(b"\x81\xca\x00\x02" + bytes(4) + b"\x01\x09ab", id="sdes-item-overrun"),
        pytest.param(b"\x81\xca\x00\x02" + bytes(4) + b"\x01\x02ab", id="sdes-no-terminator"),
        pytest.param(b"\x82\xca\x00\x01" + bytes(4), id="sdes-missing-chunk"),
        pytest.param(b"\x82\xcb\x00\x01" + bytes(4), id="bye-sources-overrun"),
        pytest.param(b"\x81\xcb\x00\x02" + bytes(4) + b"\x09abc", id="bye-reason-overrun"),
    ],
)
def test_malformed_compounds_raise_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_rtcp(data)


def test_builders_refuse_what_does_not_fit() -> None:
    with pytest.raises(LocalError):
        bytes(ReceiverReport(OURS, (BLOCK,) * 32))
    with pytest.raises(LocalError):
        bytes(SdesChunk(OURS, ((CNAME, bytes(256)),)))
    with pytest.raises(LocalError):
        bytes(Goodbye((OURS,), "x" * 256))


@pytest.mark.parametrize(
    ("second_octet", "expected"),
    [(200, True), (192, True), (223, True), (111, False), (0x80 | 111, False), (224, False)],
)
def test_is_rtcp_follows_rfc_5761(second_octet: int, expected: bool) -> None:
    assert is_rtcp(bytes((0x80, second_octet)) + bytes(10)) is expected


def test_ntp_timestamp_counts_from_1900_in_32_32_fixed_point() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(1.5) == (2_208_988_801 << 32) | 0x8000_0000


@given(st.binary(max_size=200))
def test_parse_of_any_bytes_raises_only_parse_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except ParseError:
        return
    for packet in packets:
        bytes(packet)  # whatever was read can be written again


blocks = st.builds(
    ReportBlock,
    ssrc=st.integers(0, 2**32 - 1),
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-(2**23), 2**23 - 1),
    highest_sequence=st.integers(0, 2**32 - 1),
    jitter=st.integers(0, 2**32 - 1),
    lsr=st.integers(0, 2**32 - 1),
    dlsr=st.integers(0, 2**32 - 1),
)


@given(
    ssrc=st.integers(0, 2**32 - 1),
    ntp=st.integers(0, 2**64 - 1),
    rtp_timestamp=st.integers(0, 2**32 - 1),
    reports=st.lists(blocks, max_size=31).map(tuple),
    cname=st.binary(max_size=255),
)
def test_any_report_round_trips_and_aiortc_agrees(
    ssrc: int, ntp: int, rtp_timestamp: int, reports: tuple[ReportBlock, ...], cname: bytes
) -> None:
    compound = (
        SenderReport(ssrc, ntp, rtp_timestamp, 1, 2, reports),
        SourceDescription((SdesChunk(ssrc, ((CNAME, cname),)),)),
    )
    data = b"".join(map(bytes, compound))

    assert parse_rtcp(data) == compound
    sender_report, _ = aiortc_rtp.RtcpPacket.parse(data)
    assert sender_report.reports == [aiortc_block(block) for block in reports]
    assert sender_report.sender_info.ntp_timestamp == ntp


# Reception statistics, against RFC 3550 Appendix A worked by hand


def feed(statistics: ReceptionStatistics, sequences: list[int]) -> None:
    for index, sequence in enumerate(sequences):
        statistics.update(sequence, sequence * 960 % 2**32, index * 0.02)


def test_in_order_packets_with_a_gap_count_as_lost() -> None:
    statistics = ReceptionStatistics(THEIRS)
    feed(statistics, [100, 101, 102, 105, 106, 107, 108, 109])  # 103 and 104 never came

    block = statistics.report_block(now=0.0)

    assert statistics.expected == 10 and statistics.received == 8
    assert block.cumulative_lost == 2
    assert block.fraction_lost == (2 << 8) // 10  # A.3: 51, i.e. 20 %
    assert block.highest_sequence == 109


def test_fraction_lost_covers_only_the_interval_since_the_last_report() -> None:
    statistics = ReceptionStatistics(THEIRS)
    feed(statistics, [0, 1, 3])
    first = statistics.report_block(now=1.0)
    for sequence in range(4, 14):
        statistics.update(sequence, sequence * 960, sequence * 0.02)
    second = statistics.report_block(now=2.0)
    third = statistics.report_block(now=3.0)  # nothing received since

    assert (first.fraction_lost, first.cumulative_lost) == ((1 << 8) // 4, 1)
    assert (second.fraction_lost, second.cumulative_lost) == (0, 1)
    assert third.fraction_lost == 0
    assert not statistics.heard_since_report


def test_the_extended_highest_sequence_counts_wraps() -> None:
    statistics = ReceptionStatistics(THEIRS)
    feed(statistics, [65534, 65535, 0, 1])

    assert statistics.extended_highest_sequence == 65536 + 1
    assert statistics.report_block(now=0.0).highest_sequence == 0x0001_0001
    assert statistics.cumulative_lost == 0


def test_reordered_and_duplicated_packets_are_counted_but_do_not_move_the_maximum() -> None:
    statistics = ReceptionStatistics(THEIRS)
    feed(statistics, [65535, 1, 0, 1, 1])  # 0 late, 1 twice more

    assert statistics.extended_highest_sequence == 65536 + 1
    assert (statistics.expected, statistics.received) == (3, 5)
    assert statistics.report_block(now=0.0).cumulative_lost == -2  # A.3: may go negative


def test_one_packet_far_off_is_ignored_but_two_in_a_row_restart_the_count() -> None:
    statistics = ReceptionStatistics(THEIRS)
    feed(statistics, [10, 11, 12, 40000])  # a stray: A.1 waits for 40001

    assert (statistics.extended_highest_sequence, statistics.received) == (12, 3)

    feed(statistics, [40001, 40002])  # the stray's successor confirms a restart

    assert (statistics.extended_highest_sequence, statistics.received) == (40002, 2)
    assert statistics.expected == 2


def test_jitter_follows_rfc_3550_a8_by_hand() -> None:
    statistics = ReceptionStatistics(THEIRS)
    # Timestamps 20 ms apart; arrivals 0, 20, 45 and 60 ms: transit differences (A.8 D) in
    # samples are 0, +240 and -240. J = 0, then 0 + (240 - 0)/16 = 15, then 15 + (240 - 15)/16.
    for timestamp, arrival in [(0, 0.0), (960, 0.020), (1920, 0.045), (2880, 0.060)]:
        statistics.update(timestamp // 960, timestamp, arrival)

    assert statistics.jitter == pytest.approx(29.0625)
    assert statistics.jitter_ms == pytest.approx(29.0625 / 48)
    assert statistics.report_block(now=0.0).jitter == 29


def test_jitter_is_unaffected_by_a_timestamp_wrap() -> None:
    statistics = ReceptionStatistics(THEIRS)
    start = 2**32 - 960 * 3
    for index in range(10):
        statistics.update(index, (start + index * 960) % 2**32, index * 0.02)

    assert statistics.jitter == pytest.approx(0.0, abs=1e-6)


def test_report_block_echoes_the_last_sender_report() -> None:
    statistics = ReceptionStatistics(THEIRS)
    assert (statistics.report_block(now=0.0).lsr, statistics.report_block(now=0.0).dlsr) == (0, 0)

    statistics.note_sender_report(0x1111_2222_3333_4444, now=10.0)
    block = statistics.report_block(now=10.5)

    assert block.lsr == 0x2222_3333  # RFC 3550 §6.4.1: the middle 32 bits
    assert block.dlsr == 32768  # half a second in 1/65536 s


# The reporter: RTT from LSR and DLSR, and what goes in each compound


def test_round_trip_time_from_a_peer_that_reports_our_sender_report() -> None:
    ours, theirs = RtcpReporter(OURS, "ours"), RtcpReporter(THEIRS, "theirs")
    theirs.source(OURS).update(1, 960, 0.0)

    # We send an SR at our t=100; it takes 20 ms; the peer holds it 980 ms, then reports;
    # that report takes 30 ms back. RTT = 50 ms, whatever the two wall clocks say.
    our_report = ours.build(now=100.0, wallclock=1_700_000_000.0, sending=SenderInfo(1, 1, 1))
    theirs.handle(parse_rtcp(our_report), now=5.020)
    their_report = theirs.build(now=6.000, wallclock=1_600_000_000.0, sending=None)
    ours.handle(parse_rtcp(their_report), now=101.030)

    assert ours.rtt == pytest.approx(0.050, abs=1 / 65536)
    assert ours.remote_report is not None and ours.remote_report.ssrc == OURS


def test_report_blocks_about_other_sources_and_unknown_sender_reports_are_ignored() -> None:
    reporter = RtcpReporter(OURS, "ours")
    reporter.build(now=0.0, wallclock=1_700_000_000.0, sending=SenderInfo(0, 0, 0))
    unknown = SenderReport(12345, ntp_timestamp(1.0), 0, 0, 0, (BLOCK,))  # BLOCK is not about us

    reporter.handle([unknown], now=1.0)

    assert reporter.rtt is None and reporter.remote_report is None


def test_only_recent_sender_reports_are_remembered() -> None:
    reporter = RtcpReporter(OURS, "ours")
    first = parse_rtcp(reporter.build(0.0, 1_700_000_000.0, SenderInfo(0, 0, 0)))[0]
    for index in range(1, 20):
        reporter.build(index * 5.0, 1_700_000_000.0 + index * 5, SenderInfo(0, 0, 0))
    assert isinstance(first, SenderReport)
    echo = ReportBlock(OURS, 0, 0, 0, 0, (first.ntp_timestamp >> 16) & 0xFFFFFFFF, 0)

    reporter.handle([ReceiverReport(THEIRS, (echo,))], now=100.0)

    assert reporter.rtt is None and reporter.remote_report == echo


def test_receiver_report_carries_blocks_only_for_sources_heard_since_the_last_one() -> None:
    reporter = RtcpReporter(OURS, "ours")
    reporter.source(THEIRS).update(7, 0, 0.0)

    first = parse_rtcp(reporter.build(1.0, 1_700_000_000.0, None))
    second = parse_rtcp(reporter.build(2.0, 1_700_000_001.0, None))

    assert isinstance(first[0], ReceiverReport) and [b.ssrc for b in first[0].reports] == [THEIRS]
    assert second[0] == ReceiverReport(OURS, ())
    assert second[1] == SourceDescription((SdesChunk(OURS, ((CNAME, b"ours"),)),))
    assert reporter.source(THEIRS) is reporter.source(THEIRS)


def test_report_interval_is_five_seconds_randomised_and_half_that_at_first() -> None:
    assert report_interval(0.0) == 2.5
    assert report_interval(0.5) == 5.0
    assert report_interval(0.999) == pytest.approx(7.495)
    assert report_interval(0.0, initial=True) == 1.25
    assert report_interval(0.5, initial=True) == 2.5
