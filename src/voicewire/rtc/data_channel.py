"""WebRTC data channels over one SCTP association: DCEP (RFC 8832) and the channel registry.

Theory of operation
-------------------
A data channel is a pair of SCTP streams with the same id, one per direction (RFC 8831 §6.1).
It is opened in-band with DCEP (RFC 8832): the opener sends DATA_CHANNEL_OPEN on the stream it
chose, the other side answers DATA_CHANNEL_ACK on the same stream, both as PPID 50, ordered and
reliable (§6). To keep the two sides from choosing the same id, the DTLS client takes even ids
and the DTLS server odd ones (§6). Voice AI clients (OpenAI's Realtime WebRTC interface) open one
channel, `oai-events`, and exchange JSON events on it as UTF-8 strings (PPID 51).

`DataChannels` owns the association and stands in for it: the session drives it exactly like
the other engines (`receive_packet`, `handle_timer`, then drain `packets_to_send(now)`,
`next_event()`, and re-arm at `get_timer()`), and it turns SCTP events into channel events.
Messages map to PPIDs as RFC 8831 §6.6 says: str ↔ 51, bytes ↔ 53, and an empty message, which
SCTP cannot carry, is one zero byte with PPID 56 (str) or 57 (bytes).

Closing (RFC 8831 §6.7): a side closes by resetting its outgoing stream (RFC 6525); the other,
seeing its incoming stream reset, resets its own outgoing one. A channel is closed, and its id
free again, once both directions are reset: only then does `ChannelClosed` come, from either
side's initiative. If the association ends, every channel still registered closes with it.

Index contract: the registry (`channels`) gains an entry on `open_channel` or a peer's OPEN and
loses it on `ChannelClosed`; after `SctpClosed` it is empty.

A malformed DCEP message raises nothing: it is counted in `dcep_errors` and dropped, since the
SCTP packet carrying it was fine and the other channels must go on.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections import deque
from dataclasses import dataclass

from voicewire.rtc.dtls import DtlsRole
from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.sctp import (
    PPID_BINARY,
    PPID_BINARY_EMPTY,
    PPID_DCEP,
    PPID_STRING,
    PPID_STRING_EMPTY,
    SctpAssociation,
    SctpClosed,
    SctpConnected,
    SctpMessage,
    SctpState,
    SctpStreamReset,
)

logger = logging.getLogger(__name__)

# RFC 8832 §8.2.1 message types, §5.1 channel types.
_DATA_CHANNEL_ACK = 0x02
_DATA_CHANNEL_OPEN = 0x03
_OPEN_HEADER = struct.Struct("!BBHIHH")  # type, channel type, priority, reliability, lengths
_CHANNEL_TYPES = frozenset({0x00, 0x01, 0x02, 0x80, 0x81, 0x82})
_UNORDERED = 0x80


# ---------------------------------------------------------------------------------------------
# DCEP messages (RFC 8832 §5)


@dataclass(frozen=True, slots=True)
class DcepOpen:
    """DATA_CHANNEL_OPEN (RFC 8832 §5.1)."""

    channel_type: int
    """0x00 reliable, 0x01/0x02 partially reliable by retransmissions/time; +0x80 unordered."""
    priority: int
    reliability: int
    """Retransmissions or milliseconds for the partially reliable types; otherwise ignored."""
    label: str
    protocol: str

    @property
    def ordered(self) -> bool:
        return not self.channel_type & _UNORDERED

    def encode(self) -> bytes:
        label, protocol = self.label.encode(), self.protocol.encode()
        header = _OPEN_HEADER.pack(
            _DATA_CHANNEL_OPEN,
            self.channel_type,
            self.priority,
            self.reliability,
            len(label),
            len(protocol),
        )
        return header + label + protocol


@dataclass(frozen=True, slots=True)
class DcepAck:
    """DATA_CHANNEL_ACK (RFC 8832 §5.2): one byte."""

    def encode(self) -> bytes:
        return bytes([_DATA_CHANNEL_ACK])


def parse_dcep(data: bytes) -> DcepOpen | DcepAck:
    """Read one DCEP message; `ParseError` for anything RFC 8832 §5 does not allow."""
    if not data:
        raise ParseError("empty DCEP message")
    if data[0] == _DATA_CHANNEL_ACK:
        if len(data) != 1:
            raise ParseError("DATA_CHANNEL_ACK longer than one byte")
        return DcepAck()
    if data[0] != _DATA_CHANNEL_OPEN:
        raise ParseError(f"unknown DCEP message type {data[0]}")
    if len(data) < _OPEN_HEADER.size:
        raise ParseError("DATA_CHANNEL_OPEN shorter than its header")
    _, channel_type, priority, reliability, label_length, protocol_length = (
        _OPEN_HEADER.unpack_from(data)
    )
    if channel_type not in _CHANNEL_TYPES:
        raise ParseError(f"unknown DCEP channel type {channel_type:#04x}")
    if len(data) != _OPEN_HEADER.size + label_length + protocol_length:
        raise ParseError("DATA_CHANNEL_OPEN length disagrees with its label and protocol")
    label_end = _OPEN_HEADER.size + label_length
    try:
        # RFC 8832 §5.1: label and protocol are UTF-8.
        label = data[_OPEN_HEADER.size : label_end].decode()
        protocol = data[label_end:].decode()
    except UnicodeDecodeError as error:
        raise ParseError("DATA_CHANNEL_OPEN label or protocol is not UTF-8") from error
    return DcepOpen(channel_type, priority, reliability, label, protocol)


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """A channel is open: the peer opened it (we answered ACK), or acknowledged ours."""

    channel_id: int
    label: str
    protocol: str


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One message: `str` for PPIDs 51 and 56, `bytes` for 53 and 57."""

    channel_id: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """Both directions of the channel are reset, or the association ended; its id is free."""

    channel_id: int


DataChannelEvent = ChannelOpened | ChannelMessage | ChannelClosed | SctpConnected | SctpClosed


class ChannelState(enum.Enum):
    OPENING = "opening"  # we sent OPEN, no ACK yet (we may already send, ordered)
    OPEN = "open"
    CLOSING = "closing"  # a stream reset is under way in one direction or both


@dataclass(slots=True)
class Channel:
    """One registry entry; read it, do not change it."""

    channel_id: int
    label: str
    protocol: str
    ordered: bool
    state: ChannelState
    outgoing_reset: bool = False  # the peer performed our reset of our outgoing stream
    incoming_reset: bool = False  # the peer reset its outgoing stream
    reset_requested: bool = False
    held: list[tuple[int, bytes, bool]] | None = None  # (PPID, payload, ordered) until our ACK


# ---------------------------------------------------------------------------------------------
# The registry


class DataChannels:
    """The data channels of one session, over its SCTP association. See the module docstring."""

    def __init__(self, association: SctpAssociation, dtls_role: DtlsRole) -> None:
        """`dtls_role` is this side's DTLS role: it decides our stream-id parity (RFC 8832 §6)."""
        if dtls_role not in ("client", "server"):
            raise LocalError(f"DTLS role must be 'client' or 'server', not {dtls_role!r}")
        self._sctp = association
        self._first_id = 0 if dtls_role == "client" else 1
        self._channels: dict[int, Channel] = {}
        self._events: deque[DataChannelEvent] = deque()
        self.dcep_errors = 0
        """DCEP messages that were malformed or made no sense (a second OPEN, a stray ACK)."""
        self.dropped_messages = 0
        """Messages on no open channel, with an unknown PPID, or not UTF-8 where text is due."""

    @property
    def association(self) -> SctpAssociation:
        return self._sctp

    @property
    def channels(self) -> dict[int, Channel]:
        """The registry, by channel id (= SCTP stream id). A copy: changing it changes nothing."""
        return dict(self._channels)

    # -- the sans-IO contract, delegated ------------------------------------------------------

    def receive_packet(self, data: bytes, now: float) -> None:
        """One SCTP packet; `ParseError` if it is not one (see `SctpAssociation`)."""
        self._sctp.receive_packet(data, now)
        self._pump()

    def handle_timer(self, now: float) -> None:
        self._sctp.handle_timer(now)
        self._pump()

    def get_timer(self) -> float | None:
        return self._sctp.get_timer()

    def packets_to_send(self, now: float) -> list[bytes]:
        return self._sctp.packets_to_send(now)

    def next_event(self) -> DataChannelEvent | None:
        return self._events.popleft() if self._events else None

    def connect(self, now: float) -> None:
        """Send our own SCTP INIT as well (RFC 8841 §9.3 lets both sides); optional."""
        self._sctp.connect(now)

    def shutdown(self) -> None:
        """End the association gracefully after what is queued (RFC 9260 §9.2)."""
        self._sctp.shutdown()
        self._pump()

    def abort(self, detail: str = "") -> None:
        """End the association at once: ABORT, then every channel closes (for drain)."""
        self._sctp.abort(detail)
        self._pump()

    # -- channels -----------------------------------------------------------------------------

    def open_channel(self, label: str, protocol: str = "", *, ordered: bool = True) -> int:
        """Open a reliable channel with DCEP; returns its id. `ChannelOpened` follows the ACK.

        Messages may be sent at once; until the ACK they go ordered (RFC 8832 §6).
        """
        if self._sctp.state is not SctpState.ESTABLISHED:
            raise LocalError(f"cannot open a channel while SCTP is {self._sctp.state.value}")
        limit = min(self._sctp.outbound_streams, self._sctp.inbound_streams)
        channel_id = next(
            (i for i in range(self._first_id, limit, 2) if i not in self._channels), None
        )
        if channel_id is None:
            raise LocalError(f"all {limit} streams are in use")
        message = DcepOpen(0x00 if ordered else _UNORDERED, 0, 0, label, protocol)
        self._sctp.send(channel_id, PPID_DCEP, message.encode())
        self._channels[channel_id] = Channel(
            channel_id, label, protocol, ordered, ChannelState.OPENING
        )
        return channel_id

    def send(self, channel_id: int, data: str | bytes) -> None:
        """Queue one message on an open (or opening) channel."""
        channel = self._channels.get(channel_id)
        if channel is None or channel.state is ChannelState.CLOSING:
            raise LocalError(f"channel {channel_id} is not open")
        if isinstance(data, str):
            ppid, payload = (PPID_STRING, data.encode()) if data else (PPID_STRING_EMPTY, b"\0")
        elif isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            ppid = PPID_BINARY if payload else PPID_BINARY_EMPTY
            payload = payload or b"\0"
        else:
            raise LocalError(f"a message is str or bytes, not {type(data).__name__}")
        ordered = channel.ordered or channel.state is ChannelState.OPENING
        if channel.held is not None:
            channel.held.append((ppid, payload, ordered))  # see `_on_dcep`: the ACK comes first
            return
        self._sctp.send(channel_id, ppid, payload, ordered=ordered)

    def close(self, channel_id: int) -> None:
        """Close a channel by resetting our outgoing stream (RFC 8831 §6.7); idempotent."""
        channel = self._channels.get(channel_id)
        if channel is None or channel.reset_requested:
            return
        channel.state = ChannelState.CLOSING
        self._request_reset(channel)
        self._pump()

    # -- internals ----------------------------------------------------------------------------

    def _request_reset(self, channel: Channel) -> None:
        channel.reset_requested = True
        if self._sctp.state is SctpState.ESTABLISHED and self._sctp.supports_stream_reset:
            self._sctp.reset_streams([channel.channel_id])
        else:
            # No way to tell the peer (it lacks RE-CONFIG, or the association is going): the
            # channel is simply gone on our side.
            channel.outgoing_reset = channel.incoming_reset = True
            self._finish_close(channel)

    def _pump(self) -> None:
        """Turn the association's events into channel events, in order."""
        while (event := self._sctp.next_event()) is not None:
            if isinstance(event, SctpMessage):
                self._on_message(event)
            elif isinstance(event, SctpStreamReset):
                self._on_stream_reset(event)
            elif isinstance(event, SctpConnected):
                self._events.append(event)
            elif isinstance(event, SctpClosed):
                for channel_id in list(self._channels):
                    del self._channels[channel_id]
                    self._events.append(ChannelClosed(channel_id))
                self._events.append(event)

    def _on_message(self, message: SctpMessage) -> None:
        stream_id, ppid = message.stream_id, message.ppid
        if ppid == PPID_DCEP:
            self._on_dcep(stream_id, message.data)
            return
        channel = self._channels.get(stream_id)
        if channel is None or channel.incoming_reset:
            self.dropped_messages += 1
            return
        if channel.state is ChannelState.OPENING:
            self._opened(channel)  # a message before the ACK implies it (RFC 8832 §6)
        if ppid == PPID_STRING:
            try:
                data: str | bytes = message.data.decode()
            except UnicodeDecodeError:
                self.dropped_messages += 1
                return
        elif ppid == PPID_BINARY:
            data = message.data
        elif ppid == PPID_STRING_EMPTY:
            data = ""
        elif ppid == PPID_BINARY_EMPTY:
            data = b""
        else:
            self.dropped_messages += 1  # e.g. the deprecated partial PPIDs 52 and 54
            return
        self._events.append(ChannelMessage(stream_id, data))

    def _on_dcep(self, stream_id: int, data: bytes) -> None:
        try:
            message = parse_dcep(data)
        except ParseError as error:
            self.dcep_errors += 1
            logger.debug("DCEP on stream %d dropped: %s", stream_id, error)
            return
        channel = self._channels.get(stream_id)
        if isinstance(message, DcepAck):
            if channel is None or channel.state is ChannelState.OPEN:
                self.dcep_errors += 1  # an ACK for nothing we opened, or a second one
            elif channel.state is ChannelState.OPENING:
                self._opened(channel)
            return  # CLOSING: we closed it before the ACK came; nothing to open
        if stream_id >= self._sctp.outbound_streams:
            self.dcep_errors += 1  # a stream we cannot answer on: the peer offered fewer
            return
        if channel is not None:
            if not channel.incoming_reset:
                self.dcep_errors += 1  # RFC 8832 §6: the stream is taken; ignore the OPEN
                return
            # The peer reset this stream and has already reused it: it performed our reset
            # too, though its answer has not reached us yet. The old channel is over.
            del self._channels[stream_id]
            self._events.append(ChannelClosed(stream_id))
        channel = Channel(
            stream_id, message.label, message.protocol, message.ordered, ChannelState.OPEN
        )
        self._channels[stream_id] = channel
        if self._sctp.is_resetting(stream_id):
            channel.held = []  # our old reset is in flight: ACK (and send) once it is done
        elif self._sctp.state is SctpState.ESTABLISHED:  # not when an OPEN races our shutdown
            self._sctp.send(stream_id, PPID_DCEP, DcepAck().encode())  # RFC 8832 §6
        self._events.append(ChannelOpened(stream_id, message.label, message.protocol))

    def _opened(self, channel: Channel) -> None:
        channel.state = ChannelState.OPEN
        self._events.append(ChannelOpened(channel.channel_id, channel.label, channel.protocol))

    def _on_stream_reset(self, event: SctpStreamReset) -> None:
        ids = event.stream_ids or tuple(self._channels)  # empty: every stream (RFC 6525 §4.1)
        for stream_id in ids:
            channel = self._channels.get(stream_id)
            if channel is None:
                continue
            if event.direction == "outgoing":
                if channel.held is not None:
                    self._release(channel)  # the reset was the old channel's
                    continue
                channel.outgoing_reset = True
            else:
                channel.incoming_reset = True
                channel.state = ChannelState.CLOSING
                if not channel.reset_requested:
                    self._request_reset(channel)  # RFC 8831 §6.7: reset ours in turn
            self._finish_close(channel)

    def _release(self, channel: Channel) -> None:
        """Send the ACK, then what the user queued, on a stream our old reset was holding."""
        held, channel.held = channel.held or [], None
        if self._sctp.state is not SctpState.ESTABLISHED:
            return
        self._sctp.send(channel.channel_id, PPID_DCEP, DcepAck().encode())
        for ppid, payload, ordered in held:
            self._sctp.send(channel.channel_id, ppid, payload, ordered=ordered)
        if channel.reset_requested:
            self._sctp.reset_streams([channel.channel_id])  # closed while held: now it can go

    def _finish_close(self, channel: Channel) -> None:
        if (
            channel.outgoing_reset
            and channel.incoming_reset
            and self._channels.get(channel.channel_id) is channel
        ):
            del self._channels[channel.channel_id]
            self._events.append(ChannelClosed(channel.channel_id))
