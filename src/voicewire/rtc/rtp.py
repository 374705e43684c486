"""RTP packets (RFC 3550 §5.1): reading the peer's headers and writing our own stream.

Every audio packet goes through one of the two functions here, 50 times a second each way per
session, so both are written for the hot path: one precompiled `struct.Struct` call, a few bit
operations, no slicing of the payload (`parse_rtp` reports where the payload lies in the
datagram, the caller slices once).

What the parser honours, so that any standard sender is read right: the CSRC list (§5.1 CC),
a header extension of any profile (§5.3.1; RFC 8285's one- and two-byte forms are both skipped
by their length word, as a receiver that negotiated none of them may, RFC 8285 §4), and padding
(§5.1 P). What it rejects, with `ParseError`: anything shorter than its own header, a version
other than 2, and lengths that overrun the datagram.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from voicewire.rtc.errors import LocalError, ParseError

__all__ = ["RtpHeader", "RtpPacketizer", "parse_rtp"]

_FIXED = struct.Struct("!BBHII")  # RFC 3550 §5.1: V P X CC | M PT | sequence | timestamp | SSRC
_FIXED_SIZE = _FIXED.size
_WORD = struct.Struct("!H")


class RtpHeader(NamedTuple):
    """The fields of a peer's RTP packet the media path needs, and where its payload lies.

    A NamedTuple rather than the frozen dataclass used elsewhere: one is built for every packet
    received, and a 7-field frozen dataclass takes 0.76 µs to construct against 0.25 µs for this.
    """

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload_start: int
    """Offset of the payload in the datagram: after the CSRCs and any header extension."""
    payload_end: int
    """Offset just past the payload: the datagram's end, less any padding."""


def parse_rtp(data: bytes) -> RtpHeader:
    """Read the RTP header of `data` (already SRTP-decrypted), or raise `ParseError`."""
    size = len(data)
    if size < _FIXED_SIZE:
        raise ParseError("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    if first >> 6 != 2:  # RFC 3550 §5.1: version 2
        raise ParseError("not RTP version 2")
    start = _FIXED_SIZE + 4 * (first & 0x0F)  # RFC 3550 §5.1: CC 32-bit CSRC identifiers
    if first & 0x10:  # RFC 3550 §5.3.1: 16-bit profile word, 16-bit length in 32-bit words
        if size < start + 4:
            raise ParseError("RTP header extension overruns the packet")
        start += 4 + 4 * _WORD.unpack_from(data, start + 2)[0]
    end = size
    if first & 0x20:  # RFC 3550 §5.1: the last octet counts the padding, itself included
        padding = data[-1]
        if padding == 0:
            raise ParseError("RTP padding of zero octets")
        end -= padding
    if start > end:
        raise ParseError("RTP header, extension or padding overruns the packet")
    return RtpHeader(second & 0x7F, second > 0x7F, sequence, timestamp, ssrc, start, end)


class RtpPacketizer:
    """Our outbound RTP stream: one SSRC and payload type, with its sequence and timestamp.

    The caller draws the initial sequence number and timestamp at random (RFC 3550 §5.1 wants
    both random, to make known-plaintext attacks on SRTP harder) and passes them in, as the sans-IO
    core owns no random source. The marker bit is set on the first packet of the stream and on
    the first after `skip` (RFC 3551 §4.1: the first packet of a talkspurt after silence).
    """

    __slots__ = (
        "ssrc",
        "payload_type",
        "_sequence",
        "_timestamp",
        "_marker",
        "packet_count",
        "octet_count",
    )

    def __init__(
        self, ssrc: int, payload_type: int, *, initial_sequence: int, initial_timestamp: int
    ) -> None:
        if not 0 <= payload_type <= 0x7F or not 0 <= ssrc <= 0xFFFFFFFF:
            raise LocalError(f"payload type {payload_type} or SSRC {ssrc} out of range")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self._sequence = initial_sequence & 0xFFFF
        self._timestamp = initial_timestamp & 0xFFFFFFFF
        self._marker = 0x80
        self.packet_count = 0
        """RTP packets sent, for the sender report (RFC 3550 §6.4.1)."""
        self.octet_count = 0
        """Payload octets sent (headers and padding excluded), for the sender report."""

    @property
    def sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def timestamp(self) -> int:
        """The RTP timestamp the next packet will carry."""
        return self._timestamp

    def packet(self, payload: bytes, samples: int) -> bytes:
        """One RTP packet carrying `payload`, which holds `samples` samples of audio."""
        header = _FIXED.pack(
            0x80,  # RFC 3550 §5.1: version 2, no padding, no extension, no CSRCs
            self._marker | self.payload_type,
            self._sequence,
            self._timestamp,
            self.ssrc,
        )
        self._marker = 0
        self._sequence = (self._sequence + 1) & 0xFFFF  # RFC 3550 §5.1: increments by one
        # RFC 3550 §5.1: the timestamp advances by the sampling instants the packet covers.
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        self.packet_count += 1
        self.octet_count += len(payload)
        return header + payload

    def skip(self, samples: int) -> None:
        """Account for `samples` of silence that are not sent at all.

        The timestamp keeps advancing with the sampling clock (RFC 3550 §5.1) so the peer's
        playout and jitter estimate stay right across the gap, while the sequence number does
        not (no packet was sent); the next packet starts a talkspurt (RFC 3551 §4.1 marker).
        """
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        self._marker = 0x80
