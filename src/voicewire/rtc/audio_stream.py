"""One session's audio, both ways: RTP in → jitter buffer → Opus decode → PCM frames out;
PCM queued by the agent → paced 20 ms frames → Opus encode → RTP out; RTCP reports and stats.

Inbound: each RTP packet of the negotiated Opus payload type updates the reception statistics
(RFC 3550 A.3, A.8) and enters the jitter buffer, which releases frames on a steady 20 ms
schedule; a gap is concealed, or rebuilt from the next packet's in-band FEC when it is already
there (RFC 7587 §3.3 / RFC 6716 §2.1.7). Every 20 ms the agent gets one ``AudioReceived``.

Outbound: the agent queues PCM of any length whenever it likes; frames leave at real-time pace,
the first at once when the stream was idle (no latency added), the rest every 20 ms, and never
two closer than 20 ms apart. A late
timer sends the frames that are due, but never more than ``_MAX_BURST``: beyond that it skips
the schedule forward instead of bursting, because a burst only moves the delay into the
client's jitter buffer. When the queue runs dry nothing is sent (the browser treats the gap as
DTX); the RTP timestamp still advances by the silence, and the next packet carries the marker
(RFC 3551 §4.1) so the receiver can re-anchor its playout.

Barge-in: ``clear_audio`` drops the queue at once and says how much of the current utterance
(since the queue last started from empty, or the previous clear) was actually sent. When the
queue runs dry and stays dry for a frame after its last frame's audio has ended, the stream
reports ``OutputDrained``: an agent that feeds audio as it arrives (an echo, a model streaming
deltas) does not look like a string of separate utterances.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from voicewire.rtc import rtcp
from voicewire.rtc.errors import ParseError
from voicewire.rtc.jitter_buffer import Frame, JitterBuffer
from voicewire.rtc.opus import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder
from voicewire.rtc.rtp import RtpPacketizer, parse_rtp

FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
_MAX_BURST = 3  # frames a late timer may send at once before skipping the schedule forward
_BYTES_PER_MS = FRAME_BYTES / (FRAME_SECONDS * 1000)


@dataclass(frozen=True, slots=True)
class AudioParams:
    payload_type: int
    """The Opus payload type both directions use (the offer's choice)."""
    ssrc: int
    """Our RTP stream's SSRC (RFC 3550 §8), announced in the answer."""
    sequence_start: int
    """First RTP sequence number, random (RFC 3550 §5.1)."""
    timestamp_start: int
    """First RTP timestamp, random (RFC 3550 §5.1)."""
    cname: str
    """Our RTCP CNAME (RFC 7022)."""
    ntp_offset: float
    """Seconds to add to the caller's clock to get Unix time, for sender reports."""
    rtcp_jitter: Callable[[], float]
    """Uniform [0, 1) source that spreads report times (RFC 3550 §6.3.1)."""


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """20 ms of the caller's voice as PCM16 mono 48 kHz; ``concealed`` if it was lost."""

    pcm: bytes
    concealed: bool


@dataclass(frozen=True, slots=True)
class OutputDrained:
    """Everything queued has been sent and played out, and nothing new came for a frame."""


@dataclass(frozen=True, slots=True)
class AudioStats:
    """The stream's health, from our reception statistics and the peer's reports."""

    rtt_ms: float | None
    jitter_ms: float
    packets_received: int
    packets_lost: int
    packets_sent: int
    queued_ms: float


class AudioStream:
    def __init__(self, params: AudioParams, now: float) -> None:
        self.params = params
        self._packetizer = RtpPacketizer(
            params.ssrc,
            params.payload_type,
            initial_sequence=params.sequence_start,
            initial_timestamp=params.timestamp_start,
        )
        self._encoder = OpusEncoder()
        self._decoder = OpusDecoder()
        self._jitter = JitterBuffer()
        self._reporter = rtcp.RtcpReporter(params.ssrc, params.cname)
        self._remote_ssrc: int | None = None
        self._started = False
        self._queue = bytearray()
        self._next_send: float | None = None  # when the next frame is due; None while idle
        self._idle_since = now  # when the last sent frame's audio ended
        self._played_samples = 0
        self._sent_since_report = False
        self._next_report: float | None = None
        self._rtp_out: list[bytes] = []
        self._rtcp_out: list[bytes] = []
        self._drain_at: float | None = None  # when to report OutputDrained if still idle
        self._events: deque[AudioReceived | OutputDrained] = deque()
        self.dropped = 0
        """RTP packets not of our payload type or from a second source: not ours to play."""

    def start(self, now: float) -> None:
        """The session connected: begin reporting and sending whatever is queued."""
        self._started = True
        self._idle_since = now
        self._next_report = now + rtcp.report_interval(self.params.rtcp_jitter(), initial=True)
        if self._queue:
            self._next_send = now

    def handle_rtp(self, packet: bytes, now: float) -> None:
        header = parse_rtp(packet)
        if header.payload_type != self.params.payload_type:
            self.dropped += 1
            return
        if self._remote_ssrc is None:
            self._remote_ssrc = header.ssrc
        elif header.ssrc != self._remote_ssrc:
            self.dropped += 1
            return
        self._reporter.source(header.ssrc).update(header.sequence, header.timestamp, now)
        payload = packet[header.payload_start : header.payload_end]
        self._jitter.push(header.sequence, header.timestamp, payload, now)
        self._play_out(now)

    def handle_rtcp(self, packet: bytes, now: float) -> None:
        self._reporter.handle(rtcp.parse_rtcp(packet), now)

    def handle_timer(self, now: float) -> None:
        self._play_out(now)
        self._send_due(now)
        if self._drain_at is not None and now >= self._drain_at:
            self._drain_at = None
            self._events.append(OutputDrained())
        if self._next_report is not None and now >= self._next_report:
            self._report(now)

    def get_timer(self) -> float | None:
        deadlines = (
            self._jitter.next_deadline(),
            self._next_send,
            self._drain_at,
            self._next_report,
        )
        return min((d for d in deadlines if d is not None), default=None)

    def queue_audio(self, pcm: bytes, now: float) -> None:
        if len(pcm) % 2:
            raise ParseError("PCM16 audio must be a whole number of 2-byte samples")
        starting = not self._queue and self._next_send is None
        if starting:
            self._played_samples = 0  # a new utterance starts
        self._queue += pcm
        self._drain_at = None
        if starting and self._started:
            # The first frame leaves now if the stream was idle, but never sooner than 20 ms
            # after the previous frame: an echo's input arrives as the jitter buffer releases
            # it, sometimes early, and passing that on would hand the client our jitter.
            self._next_send = max(now, self._idle_since)
            self._send_due(now)

    def clear_audio(self) -> float:
        played_ms = 1000 * self._played_samples / SAMPLE_RATE
        self._queue.clear()
        self._played_samples = 0
        self._drain_at = None
        return played_ms

    @property
    def sent_ms(self) -> float:
        """All the audio sent on this stream so far, in milliseconds (every packet is 20 ms)."""
        return self._packetizer.packet_count * FRAME_SECONDS * 1000

    def rtp_to_send(self) -> list[bytes]:
        packets, self._rtp_out = self._rtp_out, []
        return packets

    def rtcp_to_send(self) -> list[bytes]:
        packets, self._rtcp_out = self._rtcp_out, []
        return packets

    def next_event(self) -> AudioReceived | OutputDrained | None:
        return self._events.popleft() if self._events else None

    def stats(self) -> AudioStats:
        source = None if self._remote_ssrc is None else self._reporter.source(self._remote_ssrc)
        rtt = self._reporter.rtt
        return AudioStats(
            rtt_ms=None if rtt is None else 1000 * rtt,
            jitter_ms=0.0 if source is None else source.jitter_ms,
            packets_received=self._jitter.received,
            packets_lost=0 if source is None else max(0, source.cumulative_lost),
            packets_sent=self._packetizer.packet_count,
            queued_ms=len(self._queue) / _BYTES_PER_MS,
        )

    def _play_out(self, now: float) -> None:
        jitter, decoder = self._jitter, self._decoder
        while (item := jitter.pop(now)) is not None:
            if isinstance(item, Frame):
                try:
                    pcm = decoder.decode(item.payload)
                except ParseError:
                    pcm, concealed = decoder.conceal(), True
                else:
                    concealed = False
            else:
                concealed = True
                try:
                    pcm = (
                        decoder.decode_fec(item.next_payload)
                        if item.next_payload is not None
                        else decoder.conceal()
                    )
                except ParseError:
                    pcm = decoder.conceal()
            self._events.append(AudioReceived(pcm, concealed))

    def _send_due(self, now: float) -> None:
        due = self._next_send
        if due is None or now < due:
            return
        if now - due > _MAX_BURST * FRAME_SECONDS:
            due = now  # far behind: skip the schedule forward rather than burst
        queue, packetizer = self._queue, self._packetizer
        if self._idle_since < due:  # silence since the last frame: keep RTP time real (§5.1)
            silent = round((due - self._idle_since) / FRAME_SECONDS) * FRAME_SAMPLES
            if silent:
                packetizer.skip(silent)
        while queue and due <= now:
            frame = bytes(queue[:FRAME_BYTES])
            del queue[:FRAME_BYTES]
            if len(frame) < FRAME_BYTES:
                frame += bytes(FRAME_BYTES - len(frame))  # the utterance's tail, padded
            self._rtp_out.append(packetizer.packet(self._encoder.encode(frame), FRAME_SAMPLES))
            self._played_samples += FRAME_SAMPLES
            self._sent_since_report = True
            due += FRAME_SECONDS
        self._idle_since = due
        self._next_send = due if queue else None
        if not queue:
            self._drain_at = due + FRAME_SECONDS

    def _report(self, now: float) -> None:
        sending = None
        if self._sent_since_report:
            # RFC 3550 §6.4.1: the RTP timestamp of the SR's instant, from the next packet's.
            ahead = 0.0 if self._next_send is None else max(0.0, self._next_send - now)
            sending = rtcp.SenderInfo(
                rtp_timestamp=self._packetizer.timestamp - round(ahead * SAMPLE_RATE),
                packet_count=self._packetizer.packet_count,
                octet_count=self._packetizer.octet_count,
            )
        self._rtcp_out.append(self._reporter.build(now, now + self.params.ntp_offset, sending))
        self._sent_since_report = False
        self._next_report = now + rtcp.report_interval(self.params.rtcp_jitter())
