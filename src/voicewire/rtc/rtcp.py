"""RTCP for one audio session (RFC 3550 §6): reports in both directions, loss, jitter and RTT.

Three parts, from the bytes up:

- Packets. `parse_rtcp` reads a compound packet (already SRTCP-decrypted) into frozen dataclasses:
  sender and receiver reports, source descriptions and BYE. Other types (APP, RTPFB, PSFB, XR,
  anything newer) are skipped by their length word: RFC 3550 §6.1 lets any type, "including those
  yet to be defined", follow in a compound, each with its own length. The same dataclasses turn into
  bytes with `bytes(packet)`.
- `ReceptionStatistics`, one per remote source: RFC 3550 Appendix A.1 sequence tracking (the
  extended highest sequence number across wraps, restarts detected by two sequential packets;
  no probation, as SRTP has already authenticated the source), A.3 loss (cumulative, and the
  fraction since the previous report) and A.8 interarrival jitter. It yields the report block
  we send about that source.
- `RtcpReporter`, one per session: builds our compound reports (SR when we sent media since the
  last one, else RR, always followed by SDES CNAME: RFC 3550 §6.1), reads the peer's, and derives
  the round-trip time from the peer's report block about us (RFC 3550 §6.4.1, A = LSR + DLSR +
  RTT). It remembers when it sent each SR by that SR's NTP middle 32 bits, so RTT is taken on the
  caller's monotonic clock: `rtt = now - sent_at[LSR] - DLSR`, immune to wall-clock steps.
  `wallclock` (Unix seconds) is needed only to fill the SR's NTP field, which the peer echoes.

When to send: `report_interval` (RFC 3550 §6.2 reduced to this case). The caller owns the timer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from voicewire.rtc.errors import LocalError, ParseError

__all__ = [
    "CNAME",
    "Goodbye",
    "ReceiverReport",
    "ReceptionStatistics",
    "ReportBlock",
    "RtcpPacket",
    "RtcpReporter",
    "SdesChunk",
    "SenderInfo",
    "SenderReport",
    "SourceDescription",
    "is_rtcp",
    "ntp_timestamp",
    "parse_rtcp",
    "report_interval",
]

SR, RR, SDES, BYE = 200, 201, 202, 203  # RFC 3550 §12.1
CNAME = 1  # RFC 3550 §6.5.1, §12.2

_HEADER = struct.Struct("!BBH")  # RFC 3550 §6.4.1: V P RC | PT | length in 32-bit words - 1
_WORD = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP timestamp, RTP timestamp, packets, octets
_REPORT_BLOCK = struct.Struct("!IIIIII")  # RFC 3550 §6.4.1
_MAX_REPORTS = 31  # RFC 3550 §6.4.1: RC is five bits
_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


def is_rtcp(data: bytes) -> bool:
    """Whether an RTP/RTCP datagram on a muxed port is RTCP (RFC 5761 §4: second octet 192-223)."""
    return len(data) > 1 and 192 <= data[1] <= 223


def ntp_timestamp(wallclock: float) -> int:
    """The 64-bit NTP timestamp (RFC 3550 §4) of `wallclock`, in Unix seconds."""
    seconds = int(wallclock)
    fraction = int((wallclock - seconds) * (1 << 32))
    return ((seconds + _NTP_UNIX_OFFSET) << 32 | fraction) & 0xFFFF_FFFF_FFFF_FFFF


def _header(packet_type: int, count: int, body_size: int) -> bytes:
    if count > _MAX_REPORTS:
        raise LocalError(f"{count} items do not fit an RTCP header's five-bit count")
    return _HEADER.pack(0x80 | count, packet_type, body_size // 4)  # version 2, no padding


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """What one participant says about one source it receives (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    """Packets lost since the previous report, as a fraction of those expected, times 256."""
    cumulative_lost: int
    """Expected minus received since the start: 24-bit signed, negative with duplicates."""
    highest_sequence: int
    """Extended highest sequence number received: cycles in the high 16 bits."""
    jitter: int
    """Interarrival jitter, in timestamp units (RFC 3550 §6.4.1, A.8)."""
    lsr: int
    """Middle 32 bits of the NTP timestamp of the last SR received from the source, or 0."""
    dlsr: int
    """Delay since that SR was received, in units of 1/65536 s, or 0."""

    def __bytes__(self) -> bytes:
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost << 24 | self.cumulative_lost & 0xFFFFFF,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1): what a sender sent, with report blocks on what it receives."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count & 0xFFFFFFFF,  # RFC 3550 §6.4.1: both counts wrap around
            self.octet_count & 0xFFFFFFFF,
        ) + b"".join(map(bytes, self.reports))
        return _header(SR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2): report blocks from a participant that sent no media lately."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        body = _WORD.pack(self.ssrc) + b"".join(map(bytes, self.reports))
        return _header(RR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The items one source describes itself with (RFC 3550 §6.5), as (type, value) pairs."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...]

    @property
    def cname(self) -> str | None:
        """The canonical name (RFC 3550 §6.5.1), if the chunk carries one."""
        for kind, value in self.items:
            if kind == CNAME:
                return value.decode("utf-8", "replace")
        return None

    def __bytes__(self) -> bytes:
        if any(len(value) > 255 for _, value in self.items):
            raise LocalError("an SDES item holds at most 255 octets")
        items = b"".join(bytes((kind, len(value))) + value for kind, value in self.items)
        # RFC 3550 §6.5: a null octet ends the list, then nulls pad to a 32-bit boundary.
        return _WORD.pack(self.ssrc) + items + bytes(4 - len(items) % 4)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...]

    def __bytes__(self) -> bytes:
        body = b"".join(map(bytes, self.chunks))
        return _header(SDES, len(self.chunks), len(body)) + body


@dataclass(frozen=True, slots=True)
class Goodbye:
    """BYE (RFC 3550 §6.6): the sources are leaving the session, with an optional reason."""

    sources: tuple[int, ...]
    reason: str | None = None

    def __bytes__(self) -> bytes:
        body = b"".join(_WORD.pack(ssrc) for ssrc in self.sources)
        if self.reason is not None:
            text = self.reason.encode()
            if len(text) > 255:
                raise LocalError("a BYE reason holds at most 255 octets")
            reason = bytes((len(text),)) + text
            body += reason + bytes(-len(reason) % 4)
        return _header(BYE, len(self.sources), len(body)) + body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye


def parse_rtcp(data: bytes) -> tuple[RtcpPacket, ...]:
    """The packets of a compound RTCP packet we understand, in order; `ParseError` if malformed.

    Validity follows RFC 3550 Appendix A.2: every packet is version 2, the lengths add up to the
    datagram exactly, and only the last packet may be padded. A.2's rule that a compound starts
    with SR or RR is not applied: RFC 5506 §3.4 lets peers that negotiated `a=rtcp-rsize` (as
    Chromium offers) send feedback alone.
    """
    packets: list[RtcpPacket] = []
    size = len(data)
    if size < _HEADER.size:
        raise ParseError("shorter than an RTCP header")
    offset = 0
    while offset < size:
        if size - offset < _HEADER.size:
            raise ParseError("truncated RTCP header")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        if first >> 6 != 2:
            raise ParseError("not RTCP version 2")
        end = offset + 4 + 4 * words
        if end > size:
            raise ParseError("RTCP length overruns the datagram")
        body_end = end
        if first & 0x20:
            if end != size:  # RFC 3550 A.2: padding only on the last packet of a compound
                raise ParseError("RTCP padding before the last packet")
            padding = data[end - 1]
            if not 0 < padding <= 4 * words:
                raise ParseError("RTCP padding count out of range")
            body_end -= padding
        reader = _READERS.get(packet_type)
        if reader is not None:
            packets.append(reader(data, offset + 4, body_end, first & 0x1F))
        offset = end
    return tuple(packets)


def _report_blocks(data: bytes, start: int, end: int, count: int) -> tuple[ReportBlock, ...]:
    if start + count * _REPORT_BLOCK.size > end:
        raise ParseError("RTCP report blocks overrun the packet")
    blocks = []
    for index in range(count):
        ssrc, loss, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            data, start + index * _REPORT_BLOCK.size
        )
        lost = loss & 0xFFFFFF
        if lost & 0x800000:  # RFC 3550 §6.4.1: cumulative lost is a signed 24-bit integer
            lost -= 0x1000000
        blocks.append(ReportBlock(ssrc, loss >> 24, lost, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _read_sr(data: bytes, start: int, end: int, count: int) -> SenderReport:
    if start + _SENDER_INFO.size > end:
        raise ParseError("SR shorter than its sender info")
    ssrc, ntp, rtp_timestamp, packets, octets = _SENDER_INFO.unpack_from(data, start)
    blocks = _report_blocks(data, start + _SENDER_INFO.size, end, count)
    return SenderReport(ssrc, ntp, rtp_timestamp, packets, octets, blocks)


def _read_rr(data: bytes, start: int, end: int, count: int) -> ReceiverReport:
    if start + 4 > end:
        raise ParseError("RR shorter than its SSRC")
    return ReceiverReport(
        _WORD.unpack_from(data, start)[0], _report_blocks(data, start + 4, end, count)
    )


def _read_sdes(data: bytes, start: int, end: int, count: int) -> SourceDescription:
    chunks = []
    offset = start
    for _ in range(count):
        if offset + 4 > end:
            raise ParseError("SDES chunk overruns the packet")
        ssrc = _WORD.unpack_from(data, offset)[0]
        offset += 4
        items = []
        while True:
            if offset >= end:
                raise ParseError("SDES chunk without its terminating null octet")
            kind = data[offset]
            if kind == 0:  # RFC 3550 §6.5: end of list, then padding to a 32-bit boundary
                offset = (offset + 4) & ~3
                break
            if offset + 2 > end or offset + 2 + data[offset + 1] > end:
                raise ParseError("SDES item overruns the packet")
            value_end = offset + 2 + data[offset + 1]
            items.append((kind, data[offset + 2 : value_end]))
            offset = value_end
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _read_bye(data: bytes, start: int, end: int, count: int) -> Goodbye:
    reason_at = start + 4 * count
    if reason_at > end:
        raise ParseError("BYE sources overrun the packet")
    sources = struct.unpack_from(f"!{count}I", data, start)
    reason = None
    if reason_at < end:  # RFC 3550 §6.6: an optional length-prefixed reason follows
        reason_end = reason_at + 1 + data[reason_at]
        if reason_end > end:
            raise ParseError("BYE reason overruns the packet")
        reason = data[reason_at + 1 : reason_end].decode("utf-8", "replace")
    return Goodbye(sources, reason)


_READERS: dict[int, Callable[[bytes, int, int, int], RtcpPacket]] = {
    SR: _read_sr,
    RR: _read_rr,
    SDES: _read_sdes,
    BYE: _read_bye,
}

_SEQUENCE_MOD = 1 << 16
_MAX_DROPOUT = 3000  # RFC 3550 A.1: the largest forward jump still taken as loss
_MAX_MISORDER = 100  # RFC 3550 A.1: the largest backward step still taken as reordering


class ReceptionStatistics:
    """What we know about one remote source's RTP stream: RFC 3550 Appendix A.1, A.3 and A.8.

    Feed every packet the source sends (after SRTP) to `update`; `report_block` then says what
    our next report tells the source about it.
    """

    __slots__ = (
        "ssrc",
        "_clock_rate",
        "_started",
        "_base_sequence",
        "_max_sequence",
        "_bad_sequence",
        "_cycles",
        "received",
        "_expected_prior",
        "_received_prior",
        "jitter",
        "_last_arrival",
        "_last_timestamp",
        "_lsr",
        "_lsr_received_at",
    )

    def __init__(self, ssrc: int, clock_rate: int = 48000) -> None:
        self.ssrc = ssrc
        self._clock_rate = clock_rate
        self._started = False
        self._base_sequence = 0
        self._max_sequence = 0
        self._bad_sequence = _SEQUENCE_MOD + 1  # matches no 16-bit sequence number
        self._cycles = 0
        self.received = 0
        """Packets counted as received (duplicates included, as RFC 3550 A.3 notes)."""
        self._expected_prior = 0
        self._received_prior = 0
        self.jitter = 0.0
        """Interarrival jitter in timestamp units (RFC 3550 A.8)."""
        self._last_arrival = 0.0
        self._last_timestamp = 0
        self._lsr = 0
        self._lsr_received_at = 0.0

    def update(self, sequence: int, timestamp: int, arrival: float) -> None:
        """Count one packet from the source, which arrived at `arrival` seconds."""
        if not self._started:
            self._started = True
            self._restart(sequence, timestamp, arrival)
            return
        step = (sequence - self._max_sequence) & 0xFFFF
        if step < _MAX_DROPOUT:  # RFC 3550 A.1: in order, with a gap that is just loss
            if sequence < self._max_sequence:
                self._cycles += _SEQUENCE_MOD  # the sequence number wrapped
            self._max_sequence = sequence
        elif step <= _SEQUENCE_MOD - _MAX_MISORDER:  # RFC 3550 A.1: a very large jump
            if sequence == self._bad_sequence:
                # Two sequential packets after the jump: the sender restarted (A.1).
                self._restart(sequence, timestamp, arrival)
            else:
                self._bad_sequence = (sequence + 1) & 0xFFFF
            return
        # Otherwise a duplicate or a reordered packet: counted, but not a new maximum.
        self.received += 1
        # RFC 3550 A.8: D = (Rj - Ri) - (Sj - Si) with the previous packet received, in
        # timestamp units; J += (|D| - J) / 16. The timestamp difference is taken modulo 2^32.
        elapsed = ((timestamp - self._last_timestamp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        difference = abs((arrival - self._last_arrival) * self._clock_rate - elapsed)
        self.jitter += (difference - self.jitter) / 16
        self._last_arrival = arrival
        self._last_timestamp = timestamp

    def _restart(self, sequence: int, timestamp: int, arrival: float) -> None:
        # RFC 3550 A.1 init_seq, then this first packet counted; jitter measures from it on.
        self._base_sequence = sequence
        self._max_sequence = sequence
        self._bad_sequence = _SEQUENCE_MOD + 1
        self._cycles = 0
        self.received = 1
        self._expected_prior = 0
        self._received_prior = 0
        self._last_arrival = arrival
        self._last_timestamp = timestamp

    @property
    def extended_highest_sequence(self) -> int:
        """The highest sequence number seen, with wrap-arounds counted (RFC 3550 A.1)."""
        return self._cycles + self._max_sequence

    @property
    def expected(self) -> int:
        """Packets expected since the first: highest minus first plus one (RFC 3550 A.3)."""
        return self.extended_highest_sequence - self._base_sequence + 1 if self._started else 0

    @property
    def cumulative_lost(self) -> int:
        """Packets expected but not received (RFC 3550 A.3); negative if duplicates outnumber."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self.jitter * 1000 / self._clock_rate

    @property
    def heard_since_report(self) -> bool:
        """Whether a packet was counted since the last `report_block`."""
        return self.received != self._received_prior

    def note_sender_report(self, ntp: int, now: float) -> None:
        """Remember the source's latest SR, which our next report block echoes (LSR, DLSR)."""
        self._lsr = (ntp >> 16) & 0xFFFFFFFF  # RFC 3550 §6.4.1: the middle 32 bits
        self._lsr_received_at = now

    def report_block(self, now: float) -> ReportBlock:
        """Our report block about this source at `now`; starts the next loss interval."""
        expected = self.expected
        # RFC 3550 A.3: loss over the interval since the previous report.
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (self.received - self._received_prior)
        self._expected_prior = expected
        self._received_prior = self.received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        dlsr = 0
        if self._lsr:  # RFC 3550 §6.4.1: DLSR is zero until an SR has been received
            dlsr = min(int((now - self._lsr_received_at) * 65536), 0xFFFFFFFF)
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=max(-0x800000, min(self.cumulative_lost, 0x7FFFFF)),  # A.3 clamp
            highest_sequence=self.extended_highest_sequence & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self._lsr,
            dlsr=dlsr,
        )


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """What our SR says about our own stream (RFC 3550 §6.4.1 sender info).

    `rtp_timestamp` is the RTP timestamp of the instant the SR's `wallclock` names: our stream's
    next timestamp, less the samples still to go before that packet is due.
    """

    rtp_timestamp: int
    packet_count: int
    octet_count: int


_REMEMBERED_SENDER_REPORTS = 8
"""SRs whose send time we keep for RTT: 40 s of reports, far longer than any report's round trip."""


class RtcpReporter:
    """One session's RTCP: our compound reports out, the peer's in, and the round-trip time.

    Register each remote source with `source` before feeding it RTP: only registered sources
    are reported on, so the session decides which SSRCs it accepts and memory stays bounded.
    """

    __slots__ = ("ssrc", "_sources", "_sdes", "_sent_at", "rtt", "remote_report")

    def __init__(self, ssrc: int, cname: str) -> None:
        """`cname` identifies us for the session (RFC 7022: random per session is fine)."""
        self.ssrc = ssrc
        self._sources: dict[int, ReceptionStatistics] = {}
        self._sdes = bytes(SourceDescription((SdesChunk(ssrc, ((CNAME, cname.encode()),)),)))
        self._sent_at: dict[int, float] = {}
        self.rtt: float | None = None
        """Seconds, from the peer's latest report block that echoed one of our SRs."""
        self.remote_report: ReportBlock | None = None
        """The peer's latest report block about our stream: its loss and jitter as it sees them."""

    def source(self, ssrc: int, clock_rate: int = 48000) -> ReceptionStatistics:
        """The statistics of remote source `ssrc`, registered on first use."""
        statistics = self._sources.get(ssrc)
        if statistics is None:
            statistics = self._sources[ssrc] = ReceptionStatistics(ssrc, clock_rate)
        return statistics

    def build(self, now: float, wallclock: float, sending: SenderInfo | None) -> bytes:
        """Our next compound packet: SR if `sending` (we sent RTP lately), else RR, then SDES.

        RFC 3550 §6.1: a compound starts with SR or RR and carries SDES CNAME. A report block
        goes in for every registered source heard since the previous report (§6.4.1).
        """
        blocks = tuple(
            statistics.report_block(now)
            for statistics in self._sources.values()
            if statistics.heard_since_report
        )[:_MAX_REPORTS]
        report: SenderReport | ReceiverReport
        if sending is None:
            report = ReceiverReport(self.ssrc, blocks)
        else:
            ntp = ntp_timestamp(wallclock)
            self._sent_at[(ntp >> 16) & 0xFFFFFFFF] = now
            if len(self._sent_at) > _REMEMBERED_SENDER_REPORTS:
                del self._sent_at[next(iter(self._sent_at))]
            report = SenderReport(
                self.ssrc,
                ntp,
                sending.rtp_timestamp & 0xFFFFFFFF,
                sending.packet_count,
                sending.octet_count,
                blocks,
            )
        return bytes(report) + self._sdes

    def handle(self, packets: Iterable[RtcpPacket], now: float) -> None:
        """Take in the peer's parsed compound: its SRs for our blocks, its blocks about us."""
        for packet in packets:
            if isinstance(packet, SenderReport):
                statistics = self._sources.get(packet.ssrc)
                if statistics is not None:
                    statistics.note_sender_report(packet.ntp_timestamp, now)
            if isinstance(packet, SenderReport | ReceiverReport):
                self._take_reports(packet.reports, now)

    def _take_reports(self, blocks: Sequence[ReportBlock], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            self.remote_report = block
            sent_at = self._sent_at.get(block.lsr) if block.lsr else None
            if sent_at is not None:
                # RFC 3550 §6.4.1: RTT = A - LSR - DLSR, here on our own monotonic clock.
                self.rtt = max(0.0, now - sent_at - block.dlsr / 65536)


MINIMUM_REPORT_INTERVAL = 5.0
"""Seconds: RFC 3550 §6.2's recommended minimum, and what browsers use for audio."""


def report_interval(random_value: float, *, initial: bool = False) -> float:
    """Seconds until our next RTCP report, given `random_value` drawn uniformly from [0, 1).

    RFC 3550 §6.2 derives the interval from the session bandwidth: 5 % of it for RTCP, shared
    by the members. Here there are two members, and at Opus's 32 kb/s each way that computes to
    well under a second, so the 5 s minimum always governs (§6.2: "fixed minimum interval").
    The first report may come after half the minimum (§6.2). The interval is then spread over
    [0.5, 1.5] times itself (§6.3.1) so reports do not synchronise; §6.3.1's further division by
    e - 3/2 compensates for timer reconsideration, which a two-member session never does, so it
    is left out and the mean stays at the minimum.
    """
    interval = MINIMUM_REPORT_INTERVAL / 2 if initial else MINIMUM_REPORT_INTERVAL
    return interval * (0.5 + random_value)  # RFC 3550 §6.3.1
