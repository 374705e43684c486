"""SCTP for WebRTC data channels: one sans-IO association over DTLS (RFC 9260, 8261, 3758, 6525).

Theory of operation
-------------------
WebRTC carries data channels in SCTP packets, each packet one DTLS application_data record
(RFC 8261 §3): DTLS already gives us a connected, authenticated, single-path "network", so this
module implements only what an association over it needs, for the one peer it belongs to. The
DTLS engine hands us each decrypted record with `receive_packet(data, now)`; we give packets back
through `packets_to_send(now)`, each at most `max_packet_size` bytes, which the owner passes to
`DtlsEndpoint.send_application_data` one by one. Like aioquic's `datagrams_to_send(now)`, that
drain is where transmission is decided (congestion window, retransmission, bundling), so
`send()` only queues and the clock reaches the sender through the drain. The contract is the
session's: make one change (`receive_packet`, `handle_timer`, `send`, `reset_streams`,
`shutdown`, `abort`), then drain `packets_to_send(now)` and `next_event()`, then re-arm a timer at
`get_timer()`.

Wire format (RFC 9260 §3): a 12-byte common header (ports, verification tag, CRC32c) and chunks,
each padded to 4 bytes. A packet that cannot be read raises `ParseError` before any state
changes; one with a bad checksum, a wrong verification tag or the wrong ports is dropped and
counted, as §8.5 and §6.8 ask (DTLS has authenticated it, so this mostly catches bugs).

Setup (§5): either side may send INIT (`connect`); browsers and aiortc always do, so the server
waits. An INIT gets an INIT-ACK whose state cookie carries everything the association needs,
MACed with HMAC-SHA256 under a per-association secret; only the COOKIE-ECHO that returns it
creates state (§5.1.3). Both sides sending INIT at once (RFC 8841 §9.3 lets them) is the
§5.2.1 collision and ends in one association: our tag and initial TSN never change, so every
INIT-ACK and cookie we produce agrees with every other.

Receiving data: chunks are held by TSN and consumed strictly at the cumulative TSN ack point.
Fragments of one message carry consecutive TSNs and, without I-DATA (RFC 8260, which we do not
offer), never interleave with another message, so consuming in TSN order reassembles each message
with one running buffer and delivers every stream's ordered messages in SSN order without
tracking SSNs at all. The cost is head-of-line blocking across streams and for unordered
messages behind a loss, which a voice session with one `oai-events` channel never notices.
Buffered bytes (held chunks plus the message being reassembled) are bounded by
`receive_window` and what is left of it is the advertised a_rwnd; the chunk that advances the
cumulative TSN is always accepted, so a full window can never deadlock reassembly. SACKs follow
§6.2: every second packet carrying DATA, else after `SACK_DELAY`, at once on a gap, a duplicate
or a filled gap. FORWARD-TSN (RFC 3758 §3.6) moves the cumulative point over what a
partially-reliable sender gave up, discarding the messages broken by that.

Sending data: messages are cut into DATA chunks that fill one packet, TSNs assigned at `send()`.
Congestion control is RFC 9260 §7.2 for one path (slow start, congestion avoidance, fast
retransmit on the third miss indication, fast recovery, T3 collapse to one MTU, Max.Burst per
drain) and the peer's rwnd is respected with §6.1's zero-window probe. A fixed window would be
simpler, but the data channel shares the path, and a bottleneck queue, with the call's audio: a
large event burst sent at loopback speed over a mobile uplink would add its queueing delay to
every voice packet.
Retransmission follows §6.3 with one T3-rtx timer, Karn's rule and one RTT sample per round trip.

Stream reset (RFC 6525) is how a data channel closes (RFC 8831 §6.7): `reset_streams` sends an
Outgoing SSN Reset Request once the streams' queued data has left; the peer's request is
performed when its cumulative TSN reaches the request's last TSN (§5.2.2 "deferred reset", with
an "In progress" answer meanwhile). Both directions end in `SctpStreamReset`.

Shutdown (§9.2) and ABORT (§9.1) end the association with `SctpClosed`. There is no HEARTBEAT
of our own: ICE consent (RFC 7675) already proves the path every few seconds; the peer's are
answered.

Left out, on purpose: multi-homing and path management (one DTLS path), path MTU discovery (the
DTLS record size is the limit), association restart (§5.2.4 case A: a new DTLS session brings a
new association), our own HEARTBEATs, cwnd decay after idle (§7.2.1), the AUTH, ASCONF, I-DATA
and stream-scheduling extensions, PR-SCTP sending (we only send reliably), the RE-CONFIG requests
WebRTC does not use (Incoming SSN, SSN/TSN reset, Add Streams: answered "Denied"), partial
delivery of large messages, and reneging (we never revoke a gap ack; a peer that does is covered
by T3). A stale-cookie ERROR is not acted on: T1 retries, then the association times out.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import google_crc32c

from voicewire.rtc.errors import LocalError, ParseError

logger = logging.getLogger(__name__)

# RFC 8831 §8 (and the IANA SCTP PPID registry): payload protocol identifiers of data channels.
PPID_DCEP = 50
PPID_STRING = 51
PPID_BINARY = 53
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57

DEFAULT_PORT = 5000
"""RFC 8841 §5.2: the SDP `a=sctp-port` default, which every browser uses."""
MAX_MESSAGE_SIZE = 262144
"""Largest message we reassemble; what the SDP answer's `a=max-message-size` should say."""
REMOTE_MAX_MESSAGE_SIZE = 65536
"""RFC 8841 §6.1: the peer's limit when its offer has no `a=max-message-size`."""
MAX_STREAMS = 1024
"""Inbound and outbound streams we offer; data channels need one each, voice uses one."""

SACK_DELAY = 0.2
"""RFC 9260 §6.2: the delayed-SACK time (its recommended 200 ms, which Chromium also uses)."""
RTO_INITIAL = 1.0
"""RFC 9260 §6.3.1: the RTO before any RTT sample; also paces INIT and COOKIE-ECHO."""
RTO_MIN = 0.3
"""Lower than RFC 9260's 1 s, which is far too slow on the few-ms paths a transceiver sees.

It must stay above the peer's delayed-SACK time (200 ms in Chromium and usrsctp) plus a round
trip: a lone packet is acknowledged only after that delay, and a smaller RTO would retransmit
every lone message once, for nothing."""
RTO_MAX = 60.0
"""RFC 9260 §6.3.1. ICE consent (30 s) ends a dead session long before the backoff gets here."""
MAX_ASSOCIATION_RETRANSMITS = 10  # RFC 9260 §16: Association.Max.Retrans
MAX_INIT_RETRANSMITS = 8  # RFC 9260 §16: Max.Init.Retransmits
COOKIE_LIFETIME = 60.0  # RFC 9260 §16: Valid.Cookie.Life

_RTO_ALPHA = 1 / 8  # RFC 9260 §6.3.1
_RTO_BETA = 1 / 4
_MAX_BURST = 4  # RFC 9260 §6.1, §16: Max.Burst, in packets of new data per drain
_MISS_THRESHOLD = 3  # RFC 9260 §7.2.4: the third miss indication triggers fast retransmit
_MAX_HELD_CHUNKS = 4096  # out-of-order chunks held at most, whatever their size
_MAX_TSN_AHEAD = 0xFFFF  # RFC 9260 §3.3.4: gap-ack offsets are 16 bits
_MAX_DUPLICATES = 32  # duplicate TSNs reported in one SACK
_MAX_DEFERRED_RESETS = 16  # peer reset requests waiting for their last TSN
_MAX_RESET_STREAMS = 128  # streams in one of our reset requests

_HEADER = struct.Struct("!HHII")  # RFC 9260 §3.1: ports, verification tag, checksum
_HEADER_LENGTH = 12
_CHUNK_HEADER = struct.Struct("!BBH")  # RFC 9260 §3.2: type, flags, length
_DATA_HEADER = struct.Struct("!IHHI")  # RFC 9260 §3.3.1: TSN, stream id, SSN, PPID
_DATA_CHUNK_OVERHEAD = 16
_INIT = struct.Struct("!IIHHI")  # RFC 9260 §3.3.2: tag, a_rwnd, OS, MIS, initial TSN
_SACK = struct.Struct("!IIHH")  # RFC 9260 §3.3.4: cumulative TSN ack, a_rwnd, #gaps, #dups
_PARAM_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_MASK32 = 0xFFFFFFFF

# RFC 9260 §3.2 chunk types, plus RFC 6525's RE-CONFIG and RFC 3758's FORWARD-TSN.
_CT_DATA = 0
_CT_INIT = 1
_CT_INIT_ACK = 2
_CT_SACK = 3
_CT_HEARTBEAT = 4
_CT_HEARTBEAT_ACK = 5
_CT_ABORT = 6
_CT_SHUTDOWN = 7
_CT_SHUTDOWN_ACK = 8
_CT_ERROR = 9
_CT_COOKIE_ECHO = 10
_CT_COOKIE_ACK = 11
_CT_SHUTDOWN_COMPLETE = 14
_CT_RE_CONFIG = 130
_CT_FORWARD_TSN = 192

_FLAG_END = 0x01  # RFC 9260 §3.3.1: E bit
_FLAG_BEGIN = 0x02  # B bit
_FLAG_UNORDERED = 0x04  # U bit
_FLAG_IMMEDIATE = 0x08  # I bit: the sender asks for a SACK without delay
_FLAG_T = 0x01  # RFC 9260 §3.3.7, §3.3.13: the tag is the sender's own, reflected

# RFC 9260 §3.3.2.1 parameters, RFC 3758 §3.1 Forward-TSN-Supported, RFC 5061 §4.2.7
# Supported Extensions.
_PT_STATE_COOKIE = 7
_PT_SUPPORTED_EXTENSIONS = 0x8008
_PT_FORWARD_TSN_SUPPORTED = 0xC000
# Parameters we know and ignore: addresses, cookie preservative, host name, supported address
# types, ECN, AUTH's random/chunks/HMAC, padding, adaptation layer indication.
_IGNORED_PARAMS = frozenset({5, 6, 9, 11, 12, 0x8000, 0x8002, 0x8003, 0x8004, 0x8005, 0xC006})

# RFC 6525 §4 RE-CONFIG parameters and §4.4 results.
_PT_OUTGOING_RESET = 13
_PT_INCOMING_RESET = 14
_PT_SSN_TSN_RESET = 15
_PT_RECONFIG_RESPONSE = 16
_PT_ADD_OUTGOING_STREAMS = 17
_PT_ADD_INCOMING_STREAMS = 18
_RESULT_NOTHING_TO_DO = 0
_RESULT_PERFORMED = 1
_RESULT_DENIED = 2
_RESULT_IN_PROGRESS_ERROR = 4  # "Error - Request already in progress"
_RESULT_BAD_SEQUENCE = 5
_RESULT_IN_PROGRESS = 6

# RFC 9260 §3.3.10 error causes.
_CAUSE_INVALID_STREAM = 1
_CAUSE_STALE_COOKIE = 3
_CAUSE_UNRECOGNIZED_CHUNK = 6
_CAUSE_NO_USER_DATA = 9
_CAUSE_USER_ABORT = 12
_CAUSE_PROTOCOL_VIOLATION = 13


# ---------------------------------------------------------------------------------------------
# Events


class SctpCloseReason(enum.StrEnum):
    """Why an association ended; a short, fixed set, fit for a metrics label."""

    SHUTDOWN = "shutdown"  # RFC 9260 §9.2 graceful shutdown, from either side
    PEER_ABORTED = "peer_aborted"  # the peer sent ABORT
    ABORTED = "aborted"  # `abort()` was called
    TIMEOUT = "timeout"  # retransmissions exhausted (setup, data, shutdown or reset)
    PROTOCOL_VIOLATION = "protocol_violation"  # the peer broke the protocol; we sent ABORT


@dataclass(frozen=True, slots=True)
class SctpConnected:
    """The association is established (RFC 9260 §5.1): messages may be sent."""


@dataclass(frozen=True, slots=True)
class SctpMessage:
    """One whole user message (RFC 9260 §6.9: reassembled) from stream `stream_id`."""

    stream_id: int
    ppid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SctpStreamReset:
    """Streams were reset (RFC 6525); an empty `stream_ids` means every stream.

    `incoming`: the peer reset its outgoing streams; nothing more arrives on them, and a message
    delivered afterwards starts afresh. `outgoing`: the peer performed our `reset_streams`; the
    streams may be used again, from SSN 0.
    """

    stream_ids: tuple[int, ...]
    direction: Literal["incoming", "outgoing"]


@dataclass(frozen=True, slots=True)
class SctpClosed:
    """The association is over; `detail` says more, for logs."""

    reason: SctpCloseReason
    detail: str = ""


SctpEvent = SctpConnected | SctpMessage | SctpStreamReset | SctpClosed


class SctpState(enum.Enum):
    """RFC 9260 §4 states; `NEW` is its CLOSED before anything happened, `CLOSED` is final."""

    NEW = "new"
    COOKIE_WAIT = "cookie-wait"
    COOKIE_ECHOED = "cookie-echoed"
    ESTABLISHED = "established"
    SHUTDOWN_PENDING = "shutdown-pending"
    SHUTDOWN_SENT = "shutdown-sent"
    SHUTDOWN_RECEIVED = "shutdown-received"
    SHUTDOWN_ACK_SENT = "shutdown-ack-sent"
    CLOSED = "closed"


_S = SctpState
_TRANSITIONS: dict[SctpState, frozenset[SctpState]] = {
    _S.NEW: frozenset({_S.COOKIE_WAIT, _S.ESTABLISHED, _S.CLOSED}),
    _S.COOKIE_WAIT: frozenset({_S.COOKIE_ECHOED, _S.ESTABLISHED, _S.CLOSED}),
    _S.COOKIE_ECHOED: frozenset({_S.ESTABLISHED, _S.CLOSED}),
    _S.ESTABLISHED: frozenset({_S.SHUTDOWN_PENDING, _S.SHUTDOWN_RECEIVED, _S.CLOSED}),
    _S.SHUTDOWN_PENDING: frozenset({_S.SHUTDOWN_SENT, _S.SHUTDOWN_RECEIVED, _S.CLOSED}),
    _S.SHUTDOWN_SENT: frozenset({_S.SHUTDOWN_ACK_SENT, _S.CLOSED}),
    _S.SHUTDOWN_RECEIVED: frozenset({_S.SHUTDOWN_ACK_SENT, _S.CLOSED}),
    _S.SHUTDOWN_ACK_SENT: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}
TERMINAL_STATES = frozenset({_S.CLOSED})
_HAS_PEER = frozenset(set(SctpState) - {_S.NEW, _S.COOKIE_WAIT, _S.CLOSED})
# States in which our queued DATA goes out (RFC 9260 §9.2: until the SHUTDOWN exchange).
_SENDING = frozenset({_S.ESTABLISHED, _S.SHUTDOWN_PENDING, _S.SHUTDOWN_RECEIVED})
# States in which the peer's DATA is taken (§9.2: SHUTDOWN-SENT must keep accepting it).
_RECEIVING = frozenset(
    {_S.ESTABLISHED, _S.SHUTDOWN_PENDING, _S.SHUTDOWN_SENT, _S.SHUTDOWN_RECEIVED}
)


# ---------------------------------------------------------------------------------------------
# Wire format


_WORDS = struct.Struct("<I")  # RFC 9260 Appendix A: the CRC32c goes out least significant first


def crc32c(data: bytes) -> int:
    """CRC32c as RFC 9260 Appendix A defines it for the SCTP checksum.

    A checksum, not a MAC (DTLS authenticates every packet). From google-crc32c, whose C (or
    hardware) implementation takes ~0.15 µs for a full packet, against ~70 µs in pure Python.
    """
    return google_crc32c.value(data)


def _tsn_after(a: int, b: int) -> bool:
    """a > b in 32-bit serial number arithmetic (RFC 9260 §1.6, RFC 1982)."""
    return 0 < ((a - b) & _MASK32) < 0x80000000


def _padded(length: int) -> int:
    return (length + 3) & ~3


def _chunk(chunk_type: int, flags: int, value: bytes) -> bytes:
    """One chunk with its padding (RFC 9260 §3.2: the length excludes the padding)."""
    length = 4 + len(value)
    return _CHUNK_HEADER.pack(chunk_type, flags, length) + value + bytes(_padded(length) - length)


def _param(param_type: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return _PARAM_HEADER.pack(param_type, length) + value + bytes(_padded(length) - length)


def _cause(code: int, info: bytes = b"") -> bytes:
    """An error cause (RFC 9260 §3.3.10): the same TLV layout as a parameter."""
    return _param(code, info)


def _packet(source_port: int, destination_port: int, tag: int, chunks: bytes) -> bytes:
    header = _HEADER.pack(source_port, destination_port, tag, 0)
    checksum = crc32c(header + chunks)
    # RFC 9260 Appendix A: the CRC is stored with its least significant byte first.
    return header[:8] + _WORDS.pack(checksum) + chunks


@dataclass(frozen=True, slots=True)
class _RawChunk:
    type: int
    flags: int
    value: bytes


@dataclass(frozen=True, slots=True)
class _Data:
    flags: int
    tsn: int
    stream_id: int
    ssn: int
    ppid: int
    user_data: bytes


@dataclass(frozen=True, slots=True)
class _Init:
    """An INIT or INIT-ACK (RFC 9260 §3.3.2, §3.3.3)."""

    ack: bool
    initiate_tag: int
    a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    initial_tsn: int
    forward_tsn: bool
    reconfig: bool
    cookie: bytes | None


@dataclass(frozen=True, slots=True)
class _Sack:
    cumulative_tsn: int
    a_rwnd: int
    gaps: tuple[tuple[int, int], ...]
    duplicates: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _ForwardTsn:
    new_cumulative_tsn: int


@dataclass(frozen=True, slots=True)
class _OutgoingResetRequest:
    """RFC 6525 §4.1."""

    request_seq: int
    response_seq: int
    last_tsn: int
    streams: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _OtherResetRequest:
    """RFC 6525 §4.2, §4.3, §4.5, §4.6: requests we answer "Denied"."""

    request_seq: int


@dataclass(frozen=True, slots=True)
class _ReconfigResponse:
    """RFC 6525 §4.4."""

    response_seq: int
    result: int


@dataclass(frozen=True, slots=True)
class _Unrecognized:
    """A chunk type we do not know; RFC 9260 §3.2's upper two bits say what to do."""

    chunk: bytes
    stop: bool
    report: bool


def _parse_header(data: bytes) -> tuple[int, int, int, int]:
    if len(data) < _HEADER_LENGTH + 4:
        raise ParseError(f"SCTP packet of {len(data)} bytes is shorter than a header and a chunk")
    source, destination, tag, _ = _HEADER.unpack_from(data)
    (checksum,) = _WORDS.unpack_from(data, 8)
    return source, destination, tag, checksum


def _split_chunks(data: bytes) -> list[_RawChunk]:
    """Cut a packet body into chunks with strict bounds (RFC 9260 §3.2)."""
    chunks = []
    offset = _HEADER_LENGTH
    end = len(data)
    while offset < end:
        if end - offset < 4:
            raise ParseError("truncated SCTP chunk header")
        chunk_type, flags, length = _CHUNK_HEADER.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            raise ParseError(f"SCTP chunk length {length} does not fit the packet")
        chunks.append(_RawChunk(chunk_type, flags, data[offset + 4 : offset + length]))
        offset += _padded(length)  # a missing final padding is tolerated
    return chunks


def _split_params(value: bytes) -> list[tuple[int, bytes]]:
    """TLV parameters (RFC 9260 §3.2.1), each padded to 4 bytes."""
    params = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 4:
            raise ParseError("truncated SCTP parameter header")
        param_type, length = _PARAM_HEADER.unpack_from(value, offset)
        if length < 4 or offset + length > len(value):
            raise ParseError(f"SCTP parameter length {length} does not fit its chunk")
        params.append((param_type, value[offset + 4 : offset + length]))
        offset += _padded(length)
    return params


def _parse_data(chunk: _RawChunk) -> _Data:
    if len(chunk.value) < _DATA_HEADER.size:
        raise ParseError("DATA chunk shorter than its header")
    tsn, stream_id, ssn, ppid = _DATA_HEADER.unpack_from(chunk.value)
    return _Data(chunk.flags, tsn, stream_id, ssn, ppid, chunk.value[_DATA_HEADER.size :])


def _parse_init(chunk: _RawChunk) -> _Init:
    value = chunk.value
    if len(value) < _INIT.size:
        raise ParseError("INIT chunk shorter than its fixed fields")
    tag, a_rwnd, outbound, inbound, initial_tsn = _INIT.unpack_from(value)
    # RFC 9260 §3.3.2: a zero tag or stream count is a broken INIT; we discard it.
    if tag == 0 or outbound == 0 or inbound == 0:
        raise ParseError("INIT with a zero initiate tag or stream count")
    forward_tsn = reconfig = False
    cookie = None
    for param_type, param_value in _split_params(value[_INIT.size :]):
        if param_type == _PT_STATE_COOKIE:
            cookie = param_value
        elif param_type == _PT_FORWARD_TSN_SUPPORTED:
            forward_tsn = True  # RFC 3758 §3.1
        elif param_type == _PT_SUPPORTED_EXTENSIONS:
            forward_tsn |= _CT_FORWARD_TSN in param_value
            reconfig = _CT_RE_CONFIG in param_value  # RFC 6525 §3.1
        elif param_type not in _IGNORED_PARAMS and not param_type & 0x8000:
            break  # RFC 9260 §3.2.1: an unknown type with high bit 0 ends parameter processing
    ack = chunk.type == _CT_INIT_ACK
    if ack and cookie is None:
        raise ParseError("INIT-ACK without a state cookie")  # RFC 9260 §3.3.3: mandatory
    return _Init(ack, tag, a_rwnd, outbound, inbound, initial_tsn, forward_tsn, reconfig, cookie)


def _parse_sack(chunk: _RawChunk) -> _Sack:
    value = chunk.value
    if len(value) < _SACK.size:
        raise ParseError("SACK chunk shorter than its fixed fields")
    cumulative, a_rwnd, gap_count, duplicate_count = _SACK.unpack_from(value)
    if len(value) != _SACK.size + 4 * (gap_count + duplicate_count):
        raise ParseError("SACK length disagrees with its gap and duplicate counts")
    offset = _SACK.size
    gaps = []
    for _ in range(gap_count):
        start, end = _PARAM_HEADER.unpack_from(value, offset)
        if not 0 < start <= end:
            raise ParseError(f"SACK gap block {start}-{end} is not a range after the ack")
        gaps.append((start, end))
        offset += 4
    duplicates = tuple(_U32.unpack_from(value, offset + 4 * i)[0] for i in range(duplicate_count))
    return _Sack(cumulative, a_rwnd, tuple(gaps), duplicates)


def _parse_forward_tsn(chunk: _RawChunk) -> _ForwardTsn:
    # RFC 3758 §3.2: new cumulative TSN, then (stream, SSN) pairs, which we need not read: we
    # deliver in TSN order, so skipping TSNs is all the skipped SSNs mean to us.
    if len(chunk.value) < 4 or len(chunk.value) % 4:
        raise ParseError("FORWARD-TSN chunk of a length that is not 4 + 4n")
    return _ForwardTsn(_U32.unpack_from(chunk.value)[0])


def _parse_re_config(chunk: _RawChunk) -> list[object]:
    parsed: list[object] = []
    for param_type, value in _split_params(chunk.value):
        if param_type == _PT_OUTGOING_RESET:
            if len(value) < 12 or len(value) % 2:
                raise ParseError("Outgoing SSN Reset Request of a bad length")
            request_seq, response_seq, last_tsn = struct.unpack_from("!III", value)
            streams = tuple(_U16.unpack_from(value, i)[0] for i in range(12, len(value), 2))
            parsed.append(_OutgoingResetRequest(request_seq, response_seq, last_tsn, streams))
        elif param_type == _PT_RECONFIG_RESPONSE:
            if len(value) not in (8, 16):
                raise ParseError("Re-configuration Response of a bad length")
            parsed.append(_ReconfigResponse(*struct.unpack_from("!II", value)))
        elif param_type in (
            _PT_INCOMING_RESET,
            _PT_SSN_TSN_RESET,
            _PT_ADD_OUTGOING_STREAMS,
            _PT_ADD_INCOMING_STREAMS,
        ):
            if len(value) < 4:
                raise ParseError("RE-CONFIG request without a sequence number")
            parsed.append(_OtherResetRequest(_U32.unpack_from(value)[0]))
    return parsed


def _parse_chunk(chunk: _RawChunk) -> object:
    """Decode one chunk's value; unknown types become `_Unrecognized` (RFC 9260 §3.2)."""
    t = chunk.type
    if t == _CT_DATA:
        return _parse_data(chunk)
    if t == _CT_SACK:
        return _parse_sack(chunk)
    if t in (_CT_INIT, _CT_INIT_ACK):
        return _parse_init(chunk)
    if t == _CT_FORWARD_TSN:
        return _parse_forward_tsn(chunk)
    if t == _CT_RE_CONFIG:
        return _parse_re_config(chunk)
    if t == _CT_SHUTDOWN:
        if len(chunk.value) != 4:
            raise ParseError("SHUTDOWN chunk of a length other than 8")
        return _U32.unpack(chunk.value)[0]
    if t == _CT_HEARTBEAT and len(chunk.value) < 4:
        raise ParseError("HEARTBEAT without Heartbeat Info")  # RFC 9260 §3.3.5
    if t in _KNOWN_CHUNKS:
        return chunk
    return _Unrecognized(
        _chunk(t, chunk.flags, chunk.value), stop=not t & 0x80, report=bool(t & 0x40)
    )


_KNOWN_CHUNKS = frozenset(
    {
        _CT_HEARTBEAT,
        _CT_HEARTBEAT_ACK,
        _CT_ABORT,
        _CT_SHUTDOWN_ACK,
        _CT_ERROR,
        _CT_COOKIE_ECHO,
        _CT_COOKIE_ACK,
        _CT_SHUTDOWN_COMPLETE,
    }
)
_ALONE = frozenset({_CT_INIT, _CT_INIT_ACK, _CT_SHUTDOWN_COMPLETE})  # RFC 9260 §6.10


def _first_cause(value: bytes) -> str:
    """The first error cause of an ABORT or ERROR chunk, for logs; never raises."""
    if len(value) < 4:
        return ""
    code, length = _PARAM_HEADER.unpack_from(value)
    info = value[4 : max(4, min(length, len(value)))]
    if code == _CAUSE_PROTOCOL_VIOLATION:
        return f"cause {code}: {info.decode('utf-8', 'replace')}"
    return f"cause {code}"


# ---------------------------------------------------------------------------------------------
# State cookie (RFC 9260 §5.1.3)

_COOKIE_VERSION = 1
# version, created (caller's clock), our tag, peer tag, our initial TSN, peer initial TSN,
# peer a_rwnd, outbound streams, inbound streams, peer features
_COOKIE = struct.Struct("!BdIIIIIHHB")
_COOKIE_MAC_LENGTH = 32
_FEATURE_FORWARD_TSN = 1
_FEATURE_RECONFIG = 2


@dataclass(frozen=True, slots=True)
class _Cookie:
    created: float
    local_tag: int
    peer_tag: int
    local_initial_tsn: int
    peer_initial_tsn: int
    peer_a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    forward_tsn: bool
    reconfig: bool


# ---------------------------------------------------------------------------------------------
# Send side bookkeeping


class _Outbound:
    """One DATA chunk we sent or will send, until it is cumulatively acknowledged."""

    __slots__ = (
        "tsn",
        "stream_id",
        "ssn",
        "ppid",
        "flags",
        "data",
        "sent_count",
        "in_flight",
        "acked",
        "retransmit",
        "misses",
        "fast_retransmitted",
    )

    def __init__(self, tsn: int, stream_id: int, ssn: int, ppid: int, flags: int, data: bytes):
        self.tsn = tsn
        self.stream_id = stream_id
        self.ssn = ssn
        self.ppid = ppid
        self.flags = flags
        self.data = data
        self.sent_count = 0
        self.in_flight = False  # counted in the flight size (RFC 9260 §1.3 "outstanding")
        self.acked = False  # covered by a gap ack block of the latest SACK
        self.retransmit = False
        self.misses = 0
        self.fast_retransmitted = False

    def encode(self) -> bytes:
        value = _DATA_HEADER.pack(self.tsn, self.stream_id, self.ssn, self.ppid) + self.data
        return _chunk(_CT_DATA, self.flags, value)


@dataclass(slots=True)
class _ResetRequest:
    """Our Outgoing SSN Reset Request in flight (RFC 6525 §5.1.2)."""

    request_seq: int
    streams: tuple[int, ...]
    last_tsn: int
    deadline: float
    in_progress: bool = False  # the peer answered "In progress": the deadline is a retry


@dataclass(slots=True)
class _Partial:
    """The message being reassembled, in TSN order."""

    stream_id: int
    ppid: int
    data: bytearray


# ---------------------------------------------------------------------------------------------
# The association


class SctpAssociation:
    """One SCTP association over one DTLS association. See the module docstring."""

    def __init__(
        self,
        *,
        random_bytes: Callable[[int], bytes],
        max_packet_size: int,
        local_port: int = DEFAULT_PORT,
        remote_port: int = DEFAULT_PORT,
        max_message_size: int = MAX_MESSAGE_SIZE,
        remote_max_message_size: int = REMOTE_MAX_MESSAGE_SIZE,
        receive_window: int = 1024 * 1024,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        """Prepare an association that waits for the peer's INIT (or sends its own: `connect`).

        `random_bytes(n)` returns n unpredictable bytes (`os.urandom` or `secrets.token_bytes`
        in production): it picks the verification tag, the initial TSN and the cookie secret.
        `max_packet_size` is the largest SCTP packet one DTLS record carries, i.e. the DTLS
        engine's `max_application_data` once connected. `local_port`/`remote_port` are the SDP
        `a=sctp-port` values. `max_message_size` is the largest message we accept (our SDP's
        `a=max-message-size`), `remote_max_message_size` the peer's (0: unlimited).
        `receive_window` bounds the bytes we buffer for the peer. `max_streams` is offered for
        each direction; the peer's offer may lower it.
        """
        if max_packet_size < _HEADER_LENGTH + _DATA_CHUNK_OVERHEAD + 64:
            raise LocalError(f"SCTP packets of {max_packet_size} bytes are too small")
        if not 0 < max_streams <= 65535:
            raise LocalError(f"stream count must be 1..65535, not {max_streams}")
        if receive_window < 1500:  # RFC 9260 §3.3.2: a_rwnd is at least 1500
            raise LocalError(f"receive window of {receive_window} bytes is below 1500")
        if max_message_size <= 0 or max_message_size > receive_window:
            raise LocalError("max_message_size must be positive and fit the receive window")
        self._max_packet = max_packet_size
        # Each DATA chunk fills one packet; 4-byte aligned so the padding never overflows it.
        self._max_fragment = (max_packet_size - _HEADER_LENGTH - _DATA_CHUNK_OVERHEAD) & ~3
        self._local_port = local_port
        self._remote_port = remote_port
        self._max_message = max_message_size
        self._remote_max_message = remote_max_message_size
        self._window = receive_window
        self._max_streams = max_streams

        self._local_tag = _nonzero_u32(random_bytes)
        self._local_initial_tsn = int.from_bytes(random_bytes(4))
        self._secret = random_bytes(32)
        if len(self._secret) != 32:
            raise LocalError("random_bytes(32) did not return 32 bytes")

        self._state = SctpState.NEW
        self._events: deque[SctpEvent] = deque()
        self._packets: list[bytes] = []  # finished packets that travel alone (INIT, ABORT, …)
        self._control: list[bytes] = []  # control chunks to bundle into the next packets

        # What the handshake settles.
        self._peer_tag = 0
        self._peer_initial_tsn = 0
        self._outbound_streams = 0
        self._inbound_streams = 0
        self._peer_forward_tsn = False
        self._peer_reconfig = False

        # Receive side (RFC 9260 §6.2).
        self._cumulative = 0  # highest TSN received with nothing missing below it
        self._held: dict[int, _Data] = {}  # chunks above the cumulative TSN, by TSN
        self._held_bytes = 0
        self._partial: _Partial | None = None
        self._duplicates: list[int] = []
        self._sack_now = False
        self._sack_deadline: float | None = None
        self._unacked_packets = 0

        # Send side (RFC 9260 §6.1, §7).
        self._next_tsn = self._local_initial_tsn
        self._acked_tsn = (self._local_initial_tsn - 1) & _MASK32  # the peer's cumulative ack
        self._ssn: dict[int, int] = {}
        self._unsent: deque[_Outbound] = deque()
        self._sent: deque[_Outbound] = deque()  # sent, not cumulatively acked, in TSN order
        self._buffered_out = 0  # user bytes in `_unsent` and `_sent`
        self._flight = 0
        self._peer_rwnd = 0
        self._cwnd = 0
        self._ssthresh = 0
        self._partial_bytes_acked = 0
        self._fast_recovery_exit: int | None = None
        self._rto = RTO_INITIAL
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._timed: tuple[int, float] | None = None  # (TSN, sent at) of the RTT sample
        self._t3: float | None = None
        self._errors = 0  # RFC 9260 §8.1: the association's error counter

        # Setup and shutdown timers (RFC 9260 §5.1 T1, §9.2 T2).
        self._t1: float | None = None
        self._t1_count = 0
        self._t1_packet = b""  # the INIT packet, or the COOKIE-ECHO chunk
        self._t1_sent_at = 0.0
        self._t2: float | None = None
        self._t2_count = 0

        # Stream reset (RFC 6525).
        self._reset_pending: list[int] = []  # our streams waiting to be in a request
        self._reset_request: _ResetRequest | None = None
        self._next_request_seq = self._local_initial_tsn  # RFC 6525 §5.1.1: starts at our ITSN
        self._peer_request_seq = 0  # the peer's next request sequence number
        self._last_peer_request: tuple[int, int] | None = None  # (sequence, result)
        self._deferred_resets: deque[_OutgoingResetRequest] = deque()
        self._responses: dict[int, int] = {}  # our answers to the peer's requests, not yet sent

        self.bad_checksums = 0
        """Packets dropped for a wrong CRC32c (RFC 9260 §6.8)."""
        self.bad_tags = 0
        """Packets dropped for a wrong verification tag or port (RFC 9260 §8.5)."""
        self.ignored_chunks = 0
        """Chunks that made no sense in the current state (stale, out of the blue, unknown)."""
        self.duplicate_tsns = 0
        """DATA chunks received twice."""
        self.dropped_data = 0
        """DATA chunks refused for lack of buffer space (the sender retransmits them)."""
        self.broken_messages = 0
        """Fragments that did not form a message: abandoned by FORWARD-TSN, or peer bugs."""
        self.retransmissions = 0
        """DATA chunks we sent again, after T3 or fast retransmit."""

    # -- inspection ---------------------------------------------------------------------------

    @property
    def state(self) -> SctpState:
        return self._state

    @property
    def outbound_streams(self) -> int:
        """Streams we may send on, once established (the lower of both offers)."""
        return self._outbound_streams

    @property
    def inbound_streams(self) -> int:
        return self._inbound_streams

    @property
    def supports_stream_reset(self) -> bool:
        """Whether the peer offered RE-CONFIG (RFC 6525), which closing a channel needs."""
        return self._peer_reconfig

    @property
    def buffered_amount(self) -> int:
        """User bytes queued or in flight: the owner's backpressure signal."""
        return self._buffered_out

    @property
    def rto(self) -> float:
        return self._rto

    # -- the sans-IO contract -----------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Send our own INIT (RFC 9260 §5.1 A). Optional: the peer's INIT also sets us up."""
        if self._state is not SctpState.NEW:
            raise LocalError(f"connect() while {self._state.value}")
        self._set_state(SctpState.COOKIE_WAIT)
        self._t1_packet = _packet(
            self._local_port, self._remote_port, 0, _chunk(_CT_INIT, 0, self._init_value())
        )
        self._packets.append(self._t1_packet)
        self._t1 = now + self._rto
        self._t1_count = 0
        self._t1_sent_at = now

    def receive_packet(self, data: bytes, now: float) -> None:
        """Take one SCTP packet (one DTLS application_data record).

        Raises `ParseError` for bytes that are not a well-formed SCTP packet, before any state
        changes. A peer that breaks the protocol is answered with ABORT and `SctpClosed`.
        """
        source, destination, tag, checksum = _parse_header(data)
        if crc32c(data[:8] + b"\0\0\0\0" + data[12:]) != checksum:
            self.bad_checksums += 1  # RFC 9260 §6.8: silently discard
            return
        if source != self._remote_port or destination != self._local_port:
            self.bad_tags += 1
            return
        raw = _split_chunks(data)
        if self._state is SctpState.CLOSED:
            if raw and raw[0].type == _CT_SHUTDOWN_ACK and tag == self._local_tag:
                # RFC 9260 §8.4 (5): our SHUTDOWN-COMPLETE was lost; answer again, T bit set.
                complete = _chunk(_CT_SHUTDOWN_COMPLETE, _FLAG_T, b"")
                self._packets.append(_packet(self._local_port, self._remote_port, tag, complete))
            return
        if not raw:
            raise ParseError("SCTP packet without chunks")
        if len(raw) > 1 and any(chunk.type in _ALONE for chunk in raw):
            raise ParseError("INIT, INIT-ACK or SHUTDOWN-COMPLETE bundled with other chunks")
        parsed = []
        for chunk in raw:
            item = _parse_chunk(chunk)
            parsed.append((chunk, item))
            if isinstance(item, _Unrecognized) and item.stop:
                break  # RFC 9260 §3.2: the rest of the packet is discarded
        if not self._tag_ok(raw[0], tag):
            self.bad_tags += 1  # RFC 9260 §8.5
            return

        had_gaps = bool(self._held)
        data_chunks = 0
        for chunk, item in parsed:
            if self._state is SctpState.CLOSED:
                break
            if isinstance(item, _Data):
                data_chunks += 1
                self._receive_data(item)
            else:
                self._receive_control(chunk, item, now)
        if data_chunks and self._state in _RECEIVING:
            self._schedule_sack(had_gaps, now)

    def handle_timer(self, now: float) -> None:
        """Fire every deadline `get_timer` announced that `now` has reached."""
        if self._state is SctpState.CLOSED:
            return
        if self._t1 is not None and now >= self._t1:
            self._t1_expired(now)
        if self._t2 is not None and now >= self._t2:
            self._t2_expired(now)
        if self._t3 is not None and now >= self._t3:
            self._t3_expired(now)
        request = self._reset_request
        if request is not None and now >= request.deadline and self._state is not _S.CLOSED:
            self._reset_timer_expired(request, now)
        if self._sack_deadline is not None and now >= self._sack_deadline:
            self._sack_now = True  # RFC 9260 §6.2: the delayed SACK is due
            self._sack_deadline = None

    def get_timer(self) -> float | None:
        """The absolute time at which to call `handle_timer`, or None."""
        if self._state is SctpState.CLOSED:
            return None
        deadlines = [self._t1, self._t2, self._t3, self._sack_deadline]
        if self._reset_request is not None:
            deadlines.append(self._reset_request.deadline)
        return min((d for d in deadlines if d is not None), default=None)

    def packets_to_send(self, now: float) -> list[bytes]:
        """Packets to pass to DTLS, in order, each at most `max_packet_size` bytes.

        This is where DATA goes out (within the congestion and receive windows), where the
        delayed SACK rides along with it, and where the retransmission timer starts.
        """
        packets, self._packets = self._packets, []
        if self._state not in _HAS_PEER:
            return packets
        self._progress_shutdown(now)
        data = self._transmit(now) if self._state in _SENDING else []
        self._maybe_request_reset(now)
        chunks = []
        if self._state in _RECEIVING and (
            self._sack_now or (data and self._sack_deadline is not None)
        ):
            chunks.append(self._sack())  # RFC 9260 §6.2: a pending SACK rides with DATA
        chunks.extend(self._control)
        self._control = []
        for seq, result in self._responses.items():
            value = _param(_PT_RECONFIG_RESPONSE, struct.pack("!II", seq, result))
            chunks.append(_chunk(_CT_RE_CONFIG, 0, value))
        self._responses.clear()
        chunks.extend(data)
        packets.extend(self._pack(chunks))
        return packets

    def next_event(self) -> SctpEvent | None:
        return self._events.popleft() if self._events else None

    # -- the user's API -----------------------------------------------------------------------

    def send(self, stream_id: int, ppid: int, data: bytes, *, ordered: bool = True) -> None:
        """Queue one message; it goes out from `packets_to_send`. Always reliable.

        Empty messages cannot be carried (RFC 9260 §3.3.1); data channels send one zero byte
        with PPID 56 or 57 instead (RFC 8831 §6.6).
        """
        if self._state is not SctpState.ESTABLISHED:
            raise LocalError(f"cannot send while {self._state.value}")
        if not 0 <= stream_id < self._outbound_streams:
            raise LocalError(f"stream {stream_id} is outside the {self._outbound_streams} agreed")
        if not data:
            raise LocalError("SCTP cannot send an empty message")
        if self._remote_max_message and len(data) > self._remote_max_message:
            raise LocalError(
                f"message of {len(data)} bytes exceeds the peer's {self._remote_max_message}"
            )
        if self.is_resetting(stream_id):
            raise LocalError(f"stream {stream_id} is being reset")
        if ordered:
            ssn = self._ssn.get(stream_id, 0)
            self._ssn[stream_id] = (ssn + 1) & 0xFFFF
            base_flags = 0
        else:
            ssn = 0  # RFC 9260 §3.3.1: ignored for unordered messages
            base_flags = _FLAG_UNORDERED
        size = self._max_fragment
        last = (len(data) - 1) // size
        for index in range(last + 1):
            flags = base_flags
            if index == 0:
                flags |= _FLAG_BEGIN
            if index == last:
                flags |= _FLAG_END
            fragment = data[index * size : (index + 1) * size]
            self._unsent.append(_Outbound(self._next_tsn, stream_id, ssn, ppid, flags, fragment))
            self._next_tsn = (self._next_tsn + 1) & _MASK32
        self._buffered_out += len(data)

    def reset_streams(self, stream_ids: Iterable[int]) -> None:
        """Reset our outgoing `stream_ids` (RFC 6525 §5.1.2), after their queued data.

        `SctpStreamReset(direction="outgoing")` reports when the peer has performed it.
        """
        if self._state is not SctpState.ESTABLISHED:
            raise LocalError(f"cannot reset streams while {self._state.value}")
        if not self._peer_reconfig:
            raise LocalError("the peer does not support stream reset (RFC 6525)")
        for stream_id in stream_ids:
            if not 0 <= stream_id < self._outbound_streams:
                raise LocalError(f"stream {stream_id} is outside the agreed streams")
            if not self.is_resetting(stream_id):
                self._reset_pending.append(stream_id)

    def is_resetting(self, stream_id: int) -> bool:
        """Whether our outgoing `stream_id` awaits its reset: nothing may be sent on it."""
        request = self._reset_request
        return stream_id in self._reset_pending or (
            request is not None and stream_id in request.streams
        )

    def shutdown(self) -> None:
        """Close gracefully (RFC 9260 §9.2): deliver what is queued, then SHUTDOWN."""
        if self._state in (SctpState.NEW, SctpState.COOKIE_WAIT, SctpState.COOKIE_ECHOED):
            self._close(SctpCloseReason.SHUTDOWN, "before the association was up")
        elif self._state is SctpState.ESTABLISHED:
            self._set_state(SctpState.SHUTDOWN_PENDING)
            self._forget_reset_requests()

    def abort(self, detail: str = "") -> None:
        """End at once (RFC 9260 §9.1): ABORT to the peer if there is one, then `SctpClosed`."""
        if self._state is SctpState.CLOSED:
            return
        if self._state in _HAS_PEER:
            info = detail.encode()[:64]
            chunk = _chunk(_CT_ABORT, 0, _cause(_CAUSE_USER_ABORT, info))
            self._packets.append(
                _packet(self._local_port, self._remote_port, self._peer_tag, chunk)
            )
        self._close(SctpCloseReason.ABORTED, detail)

    # -- receiving ----------------------------------------------------------------------------

    def _tag_ok(self, first: _RawChunk, tag: int) -> bool:
        """RFC 9260 §8.5, §8.5.1: which verification tag this packet must carry."""
        if first.type == _CT_INIT:
            return tag == 0
        if first.type in (_CT_ABORT, _CT_SHUTDOWN_COMPLETE) and first.flags & _FLAG_T:
            return self._state in _HAS_PEER and tag == self._peer_tag
        return tag == self._local_tag

    def _receive_control(self, chunk: _RawChunk, item: object, now: float) -> None:
        t = chunk.type
        state = self._state
        if isinstance(item, _Init):
            if item.ack:
                self._receive_init_ack(item, now)
            else:
                self._receive_init(item, now)
        elif t == _CT_COOKIE_ECHO:
            self._receive_cookie_echo(chunk.value, now)
        elif t == _CT_COOKIE_ACK:
            if state is SctpState.COOKIE_ECHOED:
                if self._t1_count == 0:
                    self._update_rto(now - self._t1_sent_at)  # a first RTT sample, Karn-safe
                self._establish()
            else:
                self.ignored_chunks += 1
        elif isinstance(item, _Sack):
            if state in _SENDING or state is SctpState.SHUTDOWN_SENT:
                self._receive_sack(item, now)
            else:
                self.ignored_chunks += 1
        elif isinstance(item, _ForwardTsn):
            if state in _RECEIVING:
                self._receive_forward_tsn(item.new_cumulative_tsn)
            else:
                self.ignored_chunks += 1
        elif t == _CT_RE_CONFIG:
            if state in _RECEIVING:
                assert isinstance(item, list)
                for param in item:
                    self._receive_reconfig_param(param, now)
            else:
                self.ignored_chunks += 1
        elif t == _CT_HEARTBEAT:
            self._receive_heartbeat(chunk)
        elif t == _CT_ABORT:
            self._close(SctpCloseReason.PEER_ABORTED, _first_cause(chunk.value))
        elif t == _CT_SHUTDOWN:
            assert isinstance(item, int)
            self._receive_shutdown(item, now)
        elif t == _CT_SHUTDOWN_ACK:
            if state in (SctpState.SHUTDOWN_SENT, SctpState.SHUTDOWN_ACK_SENT):
                # RFC 9260 §9.2: answer with SHUTDOWN-COMPLETE and forget the association.
                complete = _chunk(_CT_SHUTDOWN_COMPLETE, 0, b"")
                self._packets.append(
                    _packet(self._local_port, self._remote_port, self._peer_tag, complete)
                )
                self._close(SctpCloseReason.SHUTDOWN)
            else:
                self.ignored_chunks += 1
        elif t == _CT_SHUTDOWN_COMPLETE:
            if state is SctpState.SHUTDOWN_ACK_SENT:
                self._close(SctpCloseReason.SHUTDOWN)
            else:
                self.ignored_chunks += 1
        elif t == _CT_ERROR:
            logger.debug("SCTP ERROR from peer: %s", _first_cause(chunk.value))
        elif isinstance(item, _Unrecognized):
            self.ignored_chunks += 1
            if item.report and state in _HAS_PEER:
                cause = _cause(_CAUSE_UNRECOGNIZED_CHUNK, item.chunk)
                if len(cause) + 4 + _HEADER_LENGTH <= self._max_packet:
                    self._control.append(_chunk(_CT_ERROR, 0, cause))
        else:
            self.ignored_chunks += 1  # HEARTBEAT-ACK: we send no HEARTBEAT

    def _receive_init(self, init: _Init, now: float) -> None:
        """RFC 9260 §5.1 B, §5.2.1: answer with an INIT-ACK carrying a signed cookie."""
        if self._state not in (SctpState.NEW, SctpState.COOKIE_WAIT, SctpState.COOKIE_ECHOED):
            self.ignored_chunks += 1  # a restart (§5.2.2): not supported, see module docstring
            return
        cookie = self._make_cookie(init, now)
        value = self._init_value() + _param(_PT_STATE_COOKIE, cookie)
        chunk = _chunk(_CT_INIT_ACK, 0, value)
        self._packets.append(_packet(self._local_port, self._remote_port, init.initiate_tag, chunk))

    def _receive_init_ack(self, init: _Init, now: float) -> None:
        """RFC 9260 §5.1 C: adopt the peer's parameters and echo its cookie."""
        if self._state is not SctpState.COOKIE_WAIT:
            self.ignored_chunks += 1
            return
        assert init.cookie is not None
        if self._t1_count == 0:
            self._update_rto(now - self._t1_sent_at)  # the INIT was sent once: an RTT sample
        self._adopt_peer(
            init.initiate_tag,
            init.initial_tsn,
            init.a_rwnd,
            min(self._max_streams, init.inbound_streams),
            min(self._max_streams, init.outbound_streams),
            init.forward_tsn,
            init.reconfig,
        )
        echo = _chunk(_CT_COOKIE_ECHO, 0, init.cookie)
        if len(echo) + _HEADER_LENGTH > self._max_packet:
            self._close(SctpCloseReason.PROTOCOL_VIOLATION, "state cookie too large to echo")
            return
        self._set_state(SctpState.COOKIE_ECHOED)
        self._t1_packet = echo
        self._control.append(echo)
        self._t1 = now + self._rto
        self._t1_count = 0
        self._t1_sent_at = now

    def _receive_cookie_echo(self, value: bytes, now: float) -> None:
        """RFC 9260 §5.1 D, §5.2.4: a valid cookie of ours establishes the association."""
        cookie = self._open_cookie(value)
        if cookie is None:
            self.ignored_chunks += 1  # §5.1.5: a cookie we did not sign is silently discarded
            return
        age = now - cookie.created
        if age > COOKIE_LIFETIME:
            # §5.2.6: report the stale cookie, with the staleness in microseconds.
            staleness = _U32.pack(min(int((age - COOKIE_LIFETIME) * 1e6), _MASK32))
            error = _chunk(_CT_ERROR, 0, _cause(_CAUSE_STALE_COOKIE, staleness))
            self._packets.append(
                _packet(self._local_port, self._remote_port, cookie.peer_tag, error)
            )
            return
        if self._state in _HAS_PEER and self._state is not SctpState.COOKIE_ECHOED:
            # §5.2.4 case D: our COOKIE-ACK was lost; the same peer asks again.
            if cookie.peer_tag == self._peer_tag:
                self._control.append(_chunk(_CT_COOKIE_ACK, 0, b""))
            else:
                self.ignored_chunks += 1  # case A, a restart: not supported
            return
        self._adopt_peer(
            cookie.peer_tag,
            cookie.peer_initial_tsn,
            cookie.peer_a_rwnd,
            cookie.outbound_streams,
            cookie.inbound_streams,
            cookie.forward_tsn,
            cookie.reconfig,
        )
        self._control.append(_chunk(_CT_COOKIE_ACK, 0, b""))
        if self._state is SctpState.NEW and age >= 0:
            # The cookie is dated when our INIT-ACK left: its return is a round trip, so the
            # first data does not wait RTO.Initial (1 s) for a loss to be repaired.
            self._update_rto(age)
        self._establish()

    def _receive_data(self, chunk: _Data) -> None:
        """RFC 9260 §6.2: take a DATA chunk, or count it as a duplicate or a refusal."""
        if self._state not in _RECEIVING:
            self.ignored_chunks += 1
            return
        if not chunk.user_data:
            # RFC 9260 §6.2: a DATA chunk without user data is answered with ABORT.
            self._abort_for(_CAUSE_NO_USER_DATA, _U32.pack(chunk.tsn), "DATA without user data")
            return
        if chunk.flags & _FLAG_IMMEDIATE:
            self._sack_now = True  # RFC 9260 §3.3.1, §6.2: the sender asks for a SACK now
        offset = (chunk.tsn - self._cumulative) & _MASK32
        if offset == 0 or offset >= 0x80000000 or chunk.tsn in self._held:
            self.duplicate_tsns += 1
            if len(self._duplicates) < _MAX_DUPLICATES:
                self._duplicates.append(chunk.tsn)
            return
        if offset == 1:
            # The chunk that advances the cumulative TSN is always taken: without it nothing
            # can be delivered, so refusing it for space could only stall the association.
            self._cumulative = chunk.tsn
            self._consume(chunk)
            self._advance()
            return
        size = len(chunk.user_data)
        if (
            offset > _MAX_TSN_AHEAD
            or len(self._held) >= _MAX_HELD_CHUNKS
            or self._buffered() + size > self._window
        ):
            self.dropped_data += 1  # §6.2: no room; the sender will retransmit
            self._sack_now = True
            return
        self._held[chunk.tsn] = chunk
        self._held_bytes += size

    def _advance(self) -> None:
        """Consume held chunks while they continue the cumulative TSN (RFC 9260 §6.2)."""
        self._perform_deferred_resets()
        while self._held and self._state in _RECEIVING:
            tsn = (self._cumulative + 1) & _MASK32
            chunk = self._held.pop(tsn, None)
            if chunk is None:
                break
            self._held_bytes -= len(chunk.user_data)
            self._cumulative = tsn
            self._consume(chunk)
            self._perform_deferred_resets()

    def _consume(self, chunk: _Data) -> None:
        """Reassemble in TSN order (RFC 9260 §6.9) and deliver each whole message."""
        if chunk.stream_id >= self._inbound_streams:
            # RFC 9260 §6.5: acknowledge the TSN, drop the data, report the stream.
            self._control.append(
                _chunk(
                    _CT_ERROR, 0, _cause(_CAUSE_INVALID_STREAM, _U32.pack(chunk.stream_id << 16))
                )
            )
            self.broken_messages += 1
            return
        flags = chunk.flags
        partial = self._partial
        if flags & _FLAG_BEGIN:
            if partial is not None:
                self.broken_messages += 1  # a new message began before the last one ended
                self._partial = partial = None
            if flags & _FLAG_END:
                self._deliver(chunk.stream_id, chunk.ppid, chunk.user_data)
                return
            self._partial = _Partial(chunk.stream_id, chunk.ppid, bytearray(chunk.user_data))
            return
        if partial is None or partial.stream_id != chunk.stream_id:
            self.broken_messages += 1  # a middle or end without its beginning
            self._partial = None
            return
        partial.data += chunk.user_data
        if len(partial.data) > self._max_message:
            # The peer ignored our a=max-message-size (RFC 8841 §6): a protocol violation.
            self._abort_for(
                _CAUSE_PROTOCOL_VIOLATION,
                f"message over {self._max_message} bytes".encode(),
                f"message larger than {self._max_message} bytes on stream {chunk.stream_id}",
            )
            return
        if flags & _FLAG_END:
            self._partial = None
            self._deliver(partial.stream_id, partial.ppid, bytes(partial.data))

    def _deliver(self, stream_id: int, ppid: int, data: bytes) -> None:
        if len(data) > self._max_message:
            self._abort_for(
                _CAUSE_PROTOCOL_VIOLATION,
                f"message over {self._max_message} bytes".encode(),
                f"message larger than {self._max_message} bytes on stream {stream_id}",
            )
            return
        self._events.append(SctpMessage(stream_id, ppid, data))

    def _buffered(self) -> int:
        return self._held_bytes + (len(self._partial.data) if self._partial else 0)

    def _schedule_sack(self, had_gaps: bool, now: float) -> None:
        """RFC 9260 §6.2: when to acknowledge a packet that carried DATA."""
        if self._state is SctpState.SHUTDOWN_SENT:
            # §9.2: answer every packet with DATA with a SHUTDOWN and restart T2.
            self._control.append(_chunk(_CT_SHUTDOWN, 0, _U32.pack(self._cumulative)))
            self._t2 = now + self._rto
            self._sack_now = True
            return
        if had_gaps or self._held or self._duplicates:
            self._sack_now = True  # a gap, a filled gap or a duplicate: acknowledge at once
            return
        self._unacked_packets += 1
        if self._unacked_packets >= 2:
            self._sack_now = True  # every second packet
        elif self._sack_deadline is None:
            self._sack_deadline = now + SACK_DELAY

    def _sack(self) -> bytes:
        """Build a SACK (RFC 9260 §3.3.4) and clear what it acknowledges."""
        gaps: list[tuple[int, int]] = []
        room = (self._max_packet - _HEADER_LENGTH - 4 - _SACK.size) // 4  # blocks and dups
        if self._held:
            limit = room
            for offset in sorted((tsn - self._cumulative) & _MASK32 for tsn in self._held):
                if gaps and gaps[-1][1] == offset - 1:
                    gaps[-1] = (gaps[-1][0], offset)
                elif len(gaps) < limit:
                    gaps.append((offset, offset))
                else:
                    break
        duplicates = self._duplicates[: room - len(gaps)]
        value = _SACK.pack(
            self._cumulative,
            max(0, self._window - self._buffered()),
            len(gaps),
            len(duplicates),
        )
        value += b"".join(_PARAM_HEADER.pack(start, end) for start, end in gaps)
        value += b"".join(_U32.pack(tsn) for tsn in duplicates)
        self._duplicates = []
        self._sack_now = False
        self._sack_deadline = None
        self._unacked_packets = 0
        return _chunk(_CT_SACK, 0, value)

    def _receive_forward_tsn(self, new_cumulative: int) -> None:
        """RFC 3758 §3.6: skip what the sender abandoned, deliver what was whole before it."""
        self._sack_now = True
        if not _tsn_after(new_cumulative, self._cumulative):
            return  # out of date
        expected = (self._cumulative + 1) & _MASK32
        below = sorted(
            (tsn for tsn in self._held if not _tsn_after(tsn, new_cumulative)),
            key=lambda tsn: (tsn - self._cumulative) & _MASK32,
        )
        for tsn in below:
            if tsn != expected and self._partial is not None:
                self.broken_messages += 1  # the message continued in an abandoned TSN
                self._partial = None
            chunk = self._held.pop(tsn)
            self._held_bytes -= len(chunk.user_data)
            self._cumulative = tsn
            self._consume(chunk)
            self._perform_deferred_resets()
            if self._state not in _RECEIVING:
                return
            expected = (tsn + 1) & _MASK32
        if expected != (new_cumulative + 1) & _MASK32 and self._partial is not None:
            self.broken_messages += 1
            self._partial = None
        self._cumulative = new_cumulative
        self._advance()

    def _receive_sack(self, sack: _Sack, now: float) -> None:
        """RFC 9260 §6.2.1, §7.2: what the peer has, congestion control, retransmission."""
        cumulative = sack.cumulative_tsn
        if _tsn_after(self._acked_tsn, cumulative):
            return  # §6.2.1 D i: an older SACK arriving late
        highest_sent = self._sent[-1].tsn if self._sent else self._acked_tsn
        if _tsn_after(cumulative, highest_sent):
            self.ignored_chunks += 1  # acknowledges what we never sent
            return
        flight_was_full = self._flight >= self._cwnd
        acked_bytes = 0
        advanced = cumulative != self._acked_tsn
        self._acked_tsn = cumulative
        while self._sent and not _tsn_after(self._sent[0].tsn, cumulative):
            chunk = self._sent.popleft()
            self._buffered_out -= len(chunk.data)
            if not chunk.acked:
                acked_bytes += len(chunk.data)
            self._leave_flight(chunk)
        if self._timed is not None and not _tsn_after(self._timed[0], cumulative):
            self._update_rto(now - self._timed[1])  # §6.3.1 C5, Karn: only if sent once
            self._timed = None

        highest_newly_acked = cumulative
        if sack.gaps:
            # Walk the outstanding chunks (in TSN order) and the sorted blocks together: the
            # cost follows what we sent, not the ranges the peer claims.
            blocks = sorted(sack.gaps)
            block = 0
            for chunk in self._sent:
                offset = (chunk.tsn - cumulative) & _MASK32
                while block < len(blocks) and blocks[block][1] < offset:
                    block += 1
                if block < len(blocks) and blocks[block][0] <= offset:
                    if not chunk.acked:
                        chunk.acked = True
                        chunk.retransmit = False
                        acked_bytes += len(chunk.data)
                        highest_newly_acked = chunk.tsn
                        self._leave_flight(chunk)
                elif chunk.acked:
                    chunk.acked = False  # reneged (§6.2.1): T3 will send it again
            self._strike_missing(highest_newly_acked)
        else:
            for chunk in self._sent:
                chunk.acked = False

        if advanced and self._fast_recovery_exit is not None:
            if not _tsn_after(self._fast_recovery_exit, cumulative):
                self._fast_recovery_exit = None  # §7.2.4: fast recovery ends
        if acked_bytes and self._fast_recovery_exit is None:
            self._grow_cwnd(acked_bytes, flight_was_full)
        if advanced or acked_bytes:
            self._errors = 0  # §8.3: the peer is alive
        self._peer_rwnd = max(0, sack.a_rwnd - self._flight)  # §6.2.1 D iv

        if not any(not chunk.acked for chunk in self._sent):
            self._t3 = None  # §6.3.2 R2: everything outstanding is acknowledged
        elif advanced or self._t3 is None:
            self._t3 = now + self._rto  # §6.3.2 R3: the earliest outstanding TSN moved

    def _strike_missing(self, highest_newly_acked: int) -> None:
        """RFC 9260 §7.2.4: a miss indication for each TSN below the highest newly acked."""
        for chunk in self._sent:
            if _tsn_after(chunk.tsn, highest_newly_acked):
                break
            if chunk.acked or chunk.retransmit or chunk.fast_retransmitted:
                continue
            chunk.misses += 1
            if chunk.misses >= _MISS_THRESHOLD:
                chunk.retransmit = True
                chunk.fast_retransmitted = True
                self._leave_flight(chunk)
                if self._fast_recovery_exit is None:
                    # §7.2.3, §7.2.4: halve the window once per loss event; enter fast recovery.
                    self._ssthresh = max(self._cwnd // 2, 4 * self._max_fragment)
                    self._cwnd = self._ssthresh
                    self._partial_bytes_acked = 0
                    self._fast_recovery_exit = self._sent[-1].tsn

    def _grow_cwnd(self, acked_bytes: int, flight_was_full: bool) -> None:
        """RFC 9260 §7.2.1 slow start, §7.2.2 congestion avoidance."""
        if not flight_was_full:
            return  # only a window in full use may grow
        if self._cwnd <= self._ssthresh:
            self._cwnd += min(acked_bytes, self._max_fragment)
        else:
            self._partial_bytes_acked += acked_bytes
            if self._partial_bytes_acked >= self._cwnd:
                self._partial_bytes_acked -= self._cwnd
                self._cwnd += self._max_fragment

    def _update_rto(self, rtt: float) -> None:
        """RFC 9260 §6.3.1 C2, C3."""
        rtt = max(rtt, 0.0)
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = (1 - _RTO_BETA) * self._rttvar + _RTO_BETA * abs(self._srtt - rtt)
            self._srtt = (1 - _RTO_ALPHA) * self._srtt + _RTO_ALPHA * rtt
        self._rto = min(max(self._srtt + 4 * self._rttvar, RTO_MIN), RTO_MAX)

    def _receive_heartbeat(self, chunk: _RawChunk) -> None:
        """RFC 9260 §8.3: echo the Heartbeat Info back unchanged."""
        if self._state not in _HAS_PEER:
            self.ignored_chunks += 1
            return
        ack = _chunk(_CT_HEARTBEAT_ACK, 0, chunk.value)
        if len(ack) + _HEADER_LENGTH > self._max_packet:
            self.ignored_chunks += 1  # cannot fit our packets; the peer will count a miss
            return
        self._control.append(ack)

    def _receive_shutdown(self, cumulative: int, now: float) -> None:
        """RFC 9260 §9.2: the peer is done sending; finish ours, then SHUTDOWN-ACK."""
        state = self._state
        if state in (SctpState.ESTABLISHED, SctpState.SHUTDOWN_PENDING):
            self._receive_sack(_Sack(cumulative, self._peer_rwnd + self._flight, (), ()), now)
            self._set_state(SctpState.SHUTDOWN_RECEIVED)
            self._forget_reset_requests()
            self._progress_shutdown(now)
        elif state is SctpState.SHUTDOWN_RECEIVED:
            self._receive_sack(_Sack(cumulative, self._peer_rwnd + self._flight, (), ()), now)
        elif state is SctpState.SHUTDOWN_SENT:
            # Both sides shut down at once: answer with SHUTDOWN-ACK right away.
            self._set_state(SctpState.SHUTDOWN_ACK_SENT)
            self._control.append(_chunk(_CT_SHUTDOWN_ACK, 0, b""))
            self._t2 = now + self._rto
            self._t2_count = 0
        else:
            self.ignored_chunks += 1

    def _progress_shutdown(self, now: float) -> None:
        """RFC 9260 §9.2: once all our data is acknowledged, take the next shutdown step."""
        if self._unsent or self._sent:
            return
        if self._state is SctpState.SHUTDOWN_PENDING:
            self._set_state(SctpState.SHUTDOWN_SENT)
            self._control.append(_chunk(_CT_SHUTDOWN, 0, _U32.pack(self._cumulative)))
        elif self._state is SctpState.SHUTDOWN_RECEIVED:
            self._set_state(SctpState.SHUTDOWN_ACK_SENT)
            self._control.append(_chunk(_CT_SHUTDOWN_ACK, 0, b""))
        else:
            return
        self._t3 = None
        self._t2 = now + self._rto
        self._t2_count = 0

    # -- stream reset (RFC 6525) --------------------------------------------------------------

    def _receive_reconfig_param(self, param: object, now: float) -> None:
        if isinstance(param, _ReconfigResponse):
            self._receive_reset_response(param, now)
            return
        assert isinstance(param, _OutgoingResetRequest | _OtherResetRequest)
        seq = param.request_seq
        if self._last_peer_request is not None and seq == self._last_peer_request[0]:
            # §5.2.1: a retransmitted request gets the same answer (brought up to date).
            self._respond(seq, self._last_peer_request[1])
            return
        if seq != self._peer_request_seq:
            self._respond(seq, _RESULT_BAD_SEQUENCE)
            return
        self._peer_request_seq = (seq + 1) & _MASK32
        if isinstance(param, _OtherResetRequest):
            result = _RESULT_DENIED  # only outgoing resets are part of WebRTC (RFC 8831 §6.7)
        elif not _tsn_after(param.last_tsn, self._cumulative):
            self._reset_incoming(param.streams)  # §5.2.2 E3: all its data has arrived
            result = _RESULT_PERFORMED
        elif len(self._deferred_resets) >= _MAX_DEFERRED_RESETS:
            result = _RESULT_IN_PROGRESS_ERROR
        else:
            self._deferred_resets.append(param)  # §5.2.2 E2: wait for the last TSN
            result = _RESULT_IN_PROGRESS
        self._last_peer_request = (seq, result)
        self._respond(seq, result)

    def _perform_deferred_resets(self) -> None:
        """Perform the peer's deferred requests whose last TSN has now arrived, in order."""
        while self._deferred_resets and not _tsn_after(
            self._deferred_resets[0].last_tsn, self._cumulative
        ):
            request = self._deferred_resets.popleft()
            self._reset_incoming(request.streams)
            if self._last_peer_request is not None and self._last_peer_request[0] == (
                request.request_seq
            ):
                self._last_peer_request = (request.request_seq, _RESULT_PERFORMED)
            # Say so now rather than at the peer's retry an RTO later; dcsctp and aiortc take
            # an answer to the request they still hold.
            self._respond(request.request_seq, _RESULT_PERFORMED)

    def _reset_incoming(self, streams: tuple[int, ...]) -> None:
        # Delivery is in TSN order and keeps no per-stream SSN, so there is nothing to reset but
        # a message that was being reassembled on one of these streams.
        if self._partial is not None and (not streams or self._partial.stream_id in streams):
            self.broken_messages += 1
            self._partial = None
        self._events.append(SctpStreamReset(streams, "incoming"))

    def _respond(self, seq: int, result: int) -> None:
        # Answers go out at the next drain, the latest per request: a request deferred and then
        # performed by the DATA bundled after it is answered "Performed" only.
        self._responses[seq] = result

    def _maybe_request_reset(self, now: float) -> None:
        """Send our Outgoing SSN Reset Request once its streams' queued data has gone out."""
        if self._reset_request is not None:
            return  # RFC 6525 §5.1.1: one request at a time
        if not self._reset_pending or self._state is not SctpState.ESTABLISHED:
            return
        pending = set(self._reset_pending)
        if any(chunk.stream_id in pending for chunk in self._unsent):
            return  # RFC 6525 §5.1.2: the request's last TSN must cover their data
        streams = tuple(self._reset_pending[:_MAX_RESET_STREAMS])
        del self._reset_pending[:_MAX_RESET_STREAMS]
        # The last TSN assigned covers every queued message of these streams (RFC 6525 §4.1);
        # it stays the same in every retransmission and retry of this request.
        last_tsn = (self._next_tsn - 1) & _MASK32
        request = _ResetRequest(self._next_request_seq, streams, last_tsn, now)
        self._next_request_seq = (self._next_request_seq + 1) & _MASK32
        self._reset_request = request
        self._send_reset_request(request, now)

    def _send_reset_request(self, request: _ResetRequest, now: float) -> None:
        request.in_progress = False
        request.deadline = now + self._rto
        response_seq = (self._peer_request_seq - 1) & _MASK32  # §4.1: the last one we saw
        value = struct.pack("!III", request.request_seq, response_seq, request.last_tsn)
        value += b"".join(_U16.pack(stream) for stream in request.streams)
        self._control.append(_chunk(_CT_RE_CONFIG, 0, _param(_PT_OUTGOING_RESET, value)))

    def _receive_reset_response(self, response: _ReconfigResponse, now: float) -> None:
        request = self._reset_request
        if request is None or response.response_seq != request.request_seq:
            self.ignored_chunks += 1
            return
        if response.result == _RESULT_IN_PROGRESS:
            # The peer waits for our data: ask again after an RTO with the same sequence number
            # (RFC 6525 §5.2.7; dcsctp, usrsctp and aiortc all re-evaluate a repeated request).
            request.in_progress = True
            request.deadline = now + self._rto
            return
        if response.result not in (_RESULT_PERFORMED, _RESULT_NOTHING_TO_DO):
            logger.warning(
                "SCTP stream reset %s refused: result %d", request.streams, response.result
            )
        self._reset_request = None
        self._errors = 0
        for stream in request.streams:
            self._ssn.pop(stream, None)  # RFC 6525 §5.2.2: the stream restarts at SSN 0
        self._events.append(SctpStreamReset(request.streams, "outgoing"))

    def _forget_reset_requests(self) -> None:
        """Shutting down closes every stream: our pending resets no longer matter."""
        self._reset_pending.clear()
        self._reset_request = None

    def _reset_timer_expired(self, request: _ResetRequest, now: float) -> None:
        if not request.in_progress:
            # RFC 6525 §5.1.1: unanswered, so count it against the association and back off.
            self._errors += 1
            if self._errors > MAX_ASSOCIATION_RETRANSMITS:
                self._timeout("stream reset request unanswered")
                return
            self._rto = min(self._rto * 2, RTO_MAX)
        self._send_reset_request(request, now)  # the same request, the same sequence number

    # -- sending ------------------------------------------------------------------------------

    def _transmit(self, now: float) -> list[bytes]:
        """DATA chunks to send now: retransmissions first, then new data (RFC 9260 §6.1)."""
        chunks: list[bytes] = []
        # §7.2.4 3: the first packet of fast retransmissions ignores the congestion window.
        budget = self._max_packet - _HEADER_LENGTH
        for chunk in self._sent:
            if chunk.retransmit and chunk.fast_retransmitted and chunk.sent_count == 1:
                encoded = chunk.encode()
                if len(encoded) > budget:
                    break
                budget -= len(encoded)
                self._retransmit(chunk, chunks, encoded, now)
        # §6.1 B: the window caps outstanding bytes; Max.Burst caps what one drain adds.
        cwnd = min(self._cwnd, self._flight + _MAX_BURST * self._max_fragment)
        for chunk in self._sent:
            if self._flight >= cwnd:
                return chunks
            if chunk.retransmit:
                self._retransmit(chunk, chunks, chunk.encode(), now)
        while self._unsent and self._flight < cwnd:
            chunk = self._unsent[0]
            # §6.1 A: respect the peer's window, but probe a zero window with one chunk.
            if len(chunk.data) > self._peer_rwnd and self._flight:
                break
            self._unsent.popleft()
            self._sent.append(chunk)
            chunk.sent_count = 1
            self._enter_flight(chunk)
            self._peer_rwnd = max(0, self._peer_rwnd - len(chunk.data))
            if self._timed is None:
                self._timed = (chunk.tsn, now)  # §6.3.1 C4: one RTT measurement at a time
            chunks.append(chunk.encode())
            if self._t3 is None:
                self._t3 = now + self._rto  # §6.3.2 R1
        return chunks

    def _retransmit(self, chunk: _Outbound, out: list[bytes], encoded: bytes, now: float) -> None:
        chunk.retransmit = False
        chunk.misses = 0
        chunk.sent_count += 1
        self.retransmissions += 1
        self._enter_flight(chunk)
        if self._timed is not None and self._timed[0] == chunk.tsn:
            self._timed = None  # Karn's rule (§6.3.1 C5)
        out.append(encoded)
        if self._t3 is None or chunk is self._sent[0]:
            self._t3 = now + self._rto  # §6.3.2 R1, §7.2.4 4

    def _enter_flight(self, chunk: _Outbound) -> None:
        if not chunk.in_flight:
            chunk.in_flight = True
            self._flight += len(chunk.data)

    def _leave_flight(self, chunk: _Outbound) -> None:
        if chunk.in_flight:
            chunk.in_flight = False
            self._flight -= len(chunk.data)

    def _pack(self, chunks: list[bytes]) -> list[bytes]:
        """Bundle chunks into as few packets as fit `max_packet_size` (RFC 9260 §6.10)."""
        packets = []
        body: list[bytes] = []
        size = _HEADER_LENGTH
        for chunk in chunks:
            assert len(chunk) + _HEADER_LENGTH <= self._max_packet, "chunk exceeds the packet"
            if body and size + len(chunk) > self._max_packet:
                packets.append(self._finish(body))
                body, size = [], _HEADER_LENGTH
            body.append(chunk)
            size += len(chunk)
        if body:
            packets.append(self._finish(body))
        return packets

    def _finish(self, body: list[bytes]) -> bytes:
        return _packet(self._local_port, self._remote_port, self._peer_tag, b"".join(body))

    # -- timers -------------------------------------------------------------------------------

    def _t1_expired(self, now: float) -> None:
        """RFC 9260 §5.1.6, T1-init / T1-cookie: resend INIT or COOKIE-ECHO with backoff."""
        self._t1_count += 1
        if self._t1_count > MAX_INIT_RETRANSMITS:
            self._timeout("association setup unanswered")
            return
        self._rto = min(self._rto * 2, RTO_MAX)
        if self._state is SctpState.COOKIE_WAIT:
            self._packets.append(self._t1_packet)
        else:
            self._control.append(self._t1_packet)
        self._t1 = now + self._rto

    def _t2_expired(self, now: float) -> None:
        """RFC 9260 §9.2, T2-shutdown: resend SHUTDOWN or SHUTDOWN-ACK with backoff."""
        self._t2_count += 1
        if self._t2_count > MAX_ASSOCIATION_RETRANSMITS:
            self._timeout("shutdown unanswered")
            return
        self._rto = min(self._rto * 2, RTO_MAX)
        if self._state is SctpState.SHUTDOWN_SENT:
            self._control.append(_chunk(_CT_SHUTDOWN, 0, _U32.pack(self._cumulative)))
        elif self._state is SctpState.SHUTDOWN_ACK_SENT:
            self._control.append(_chunk(_CT_SHUTDOWN_ACK, 0, b""))
        self._t2 = now + self._rto

    def _t3_expired(self, now: float) -> None:
        """RFC 9260 §6.3.3: back off, collapse the window, resend everything outstanding."""
        self._t3 = None
        self._errors += 1
        if self._errors > MAX_ASSOCIATION_RETRANSMITS:
            self._timeout("data unacknowledged")
            return
        self._rto = min(self._rto * 2, RTO_MAX)  # E2
        self._ssthresh = max(self._cwnd // 2, 4 * self._max_fragment)  # §7.2.3
        self._cwnd = self._max_fragment
        self._partial_bytes_acked = 0
        self._fast_recovery_exit = None
        self._timed = None
        for chunk in self._sent:  # E3
            if not chunk.acked:
                chunk.retransmit = True
                self._leave_flight(chunk)

    # -- lifecycle ----------------------------------------------------------------------------

    def _init_value(self) -> bytes:
        """Our INIT / INIT-ACK fixed fields and extension parameters."""
        fixed = _INIT.pack(
            self._local_tag,
            self._window,
            self._max_streams,
            self._max_streams,
            self._local_initial_tsn,
        )
        # RFC 3758 §3.1 and RFC 5061 §4.2.7: we take FORWARD-TSN and RE-CONFIG (RFC 6525 §3.1).
        extensions = _param(_PT_SUPPORTED_EXTENSIONS, bytes([_CT_RE_CONFIG, _CT_FORWARD_TSN]))
        return fixed + _param(_PT_FORWARD_TSN_SUPPORTED, b"") + extensions

    def _make_cookie(self, init: _Init, now: float) -> bytes:
        features = (_FEATURE_FORWARD_TSN if init.forward_tsn else 0) | (
            _FEATURE_RECONFIG if init.reconfig else 0
        )
        fields = _COOKIE.pack(
            _COOKIE_VERSION,
            now,
            self._local_tag,
            init.initiate_tag,
            self._local_initial_tsn,
            init.initial_tsn,
            init.a_rwnd,
            min(self._max_streams, init.inbound_streams),
            min(self._max_streams, init.outbound_streams),
            features,
        )
        return fields + hmac.new(self._secret, fields, hashlib.sha256).digest()

    def _open_cookie(self, value: bytes) -> _Cookie | None:
        """Check a COOKIE-ECHO's MAC and that it was made for this association."""
        if len(value) != _COOKIE.size + _COOKIE_MAC_LENGTH:
            return None
        fields, mac = value[: _COOKIE.size], value[_COOKIE.size :]
        expected = hmac.new(self._secret, fields, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return None
        (version, created, local_tag, peer_tag, local_itsn, peer_itsn, a_rwnd, out, inb, feat) = (
            _COOKIE.unpack(fields)
        )
        if version != _COOKIE_VERSION or local_tag != self._local_tag:
            return None
        if local_itsn != self._local_initial_tsn:
            return None
        return _Cookie(
            created,
            local_tag,
            peer_tag,
            local_itsn,
            peer_itsn,
            a_rwnd,
            out,
            inb,
            bool(feat & _FEATURE_FORWARD_TSN),
            bool(feat & _FEATURE_RECONFIG),
        )

    def _adopt_peer(
        self,
        tag: int,
        initial_tsn: int,
        a_rwnd: int,
        outbound_streams: int,
        inbound_streams: int,
        forward_tsn: bool,
        reconfig: bool,
    ) -> None:
        self._peer_tag = tag
        self._peer_initial_tsn = initial_tsn
        self._cumulative = (initial_tsn - 1) & _MASK32
        self._peer_request_seq = initial_tsn  # RFC 6525 §5.1.1: the peer's first request
        self._peer_rwnd = a_rwnd
        self._ssthresh = a_rwnd  # RFC 9260 §7.2.1: initially the peer's a_rwnd
        self._outbound_streams = outbound_streams
        self._inbound_streams = inbound_streams
        self._peer_forward_tsn = forward_tsn
        self._peer_reconfig = reconfig

    def _establish(self) -> None:
        self._set_state(SctpState.ESTABLISHED)
        self._t1 = None
        mtu = self._max_fragment
        self._cwnd = min(4 * mtu, max(2 * mtu, 4404))  # RFC 9260 §7.2.1
        self._events.append(SctpConnected())

    def _abort_for(self, cause: int, info: bytes, detail: str) -> None:
        """The peer violated the protocol: ABORT with `cause` (RFC 9260 §9.1) and close."""
        info = info[: self._max_packet - _HEADER_LENGTH - 8 - 3]
        chunk = _chunk(_CT_ABORT, 0, _cause(cause, info))
        self._packets.append(_packet(self._local_port, self._remote_port, self._peer_tag, chunk))
        self._close(SctpCloseReason.PROTOCOL_VIOLATION, detail)

    def _timeout(self, detail: str) -> None:
        # RFC 9260 §8.1: the peer is unreachable; ABORT in case it is only deaf.
        if self._state in _HAS_PEER:
            chunk = _chunk(_CT_ABORT, 0, b"")
            self._packets.append(
                _packet(self._local_port, self._remote_port, self._peer_tag, chunk)
            )
        self._close(SctpCloseReason.TIMEOUT, detail)

    def _close(self, reason: SctpCloseReason, detail: str = "") -> None:
        """Forget everything but the packets already due (ABORT, SHUTDOWN-COMPLETE)."""
        self._set_state(SctpState.CLOSED)
        self._t1 = self._t2 = self._t3 = self._sack_deadline = None
        self._control = []
        self._unsent.clear()
        self._sent.clear()
        self._buffered_out = 0
        self._held.clear()
        self._held_bytes = 0
        self._partial = None
        self._reset_request = None
        self._reset_pending.clear()
        self._deferred_resets.clear()
        self._responses.clear()
        self._events.append(SctpClosed(reason, detail))

    def _set_state(self, state: SctpState) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise LocalError(f"SCTP cannot go from {self._state.value} to {state.value}")
        logger.debug("SCTP %08x: %s -> %s", self._local_tag, self._state.value, state.value)
        self._state = state


def _nonzero_u32(random_bytes: Callable[[int], bytes]) -> int:
    """A verification tag: random and never 0 (RFC 9260 §5.3.1)."""
    for _ in range(16):
        value = int.from_bytes(random_bytes(4))
        if value:
            return value
    raise LocalError("random_bytes keeps returning zeros")
