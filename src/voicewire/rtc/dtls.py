"""DTLS 1.2 for one session: a sans-IO engine over OpenSSL memory BIOs.

Theory of operation
-------------------
OpenSSL runs the protocol; this module feeds it, drains it and reports what happened. Nothing
here encrypts, hashes or parses a handshake message.

In: each datagram goes into OpenSSL's read BIO whole, and OpenSSL is driven at once, before the
next datagram is written: a memory BIO has no datagram boundaries, so OpenSSL reads whatever is
queued as one datagram. Before that, the datagram must be a sequence of whole DTLS records; if not,
`handle_datagram` raises `ParseError` and the caller drops and counts it. Records that are whole
but bogus (bad MAC, wrong epoch, replay) OpenSSL itself discards silently (RFC 6347 §4.1.2.7).
A handshake message OpenSSL rejects, or a fatal alert, fails the association: `DtlsFailed`.

Out: OpenSSL writes records into its write BIO as one byte stream. We read it to empty and cut
it back into datagrams at record boundaries, packing whole records up to `mtu` bytes (RFC 6347
§4.1.1: a record never spans datagrams, several may share one). OpenSSL keeps each handshake
fragment within that MTU itself, because we set it on the connection and forbid it to query the
(absent) socket for another.

Identity: both sides must present a certificate, and the peer's must be the one its SDP offer
named (RFC 8122 §5). A per-connection verify callback decides on the fingerprint alone, since
WebRTC certificates are self-signed; a mismatch makes OpenSSL abort the handshake with an alert,
and no keys are exported.

Keys: after the handshake, the negotiated use_srtp profile (RFC 5764 §4.1.2) tells how much to
export with the RFC 5705 exporter and how to split it (RFC 5764 §4.2); `DtlsConnected` carries
the result already assigned to directions, so SRTP needs nothing else.

Time: see `_update_timer`, the one place OpenSSL's own clock shows.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from OpenSSL import SSL, crypto

from voicewire.rtc.certificate import Certificate, fingerprint_matches
from voicewire.rtc.errors import LocalError, ParseError

logger = logging.getLogger(__name__)

DtlsRole = Literal["client", "server"]
"""`client` sends the ClientHello (SDP `a=setup:active`); `server` answers (`a=setup:passive`)."""

_DTLS_1_2 = 0xFEFD  # RFC 6347 §4.1: DTLS 1.2 is ProtocolVersion {254, 253}
_DTLS_MAJOR_VERSION = 254  # RFC 6347 §4.1: every DTLS version, 1.0's {254, 255} included
_RECORD_HEADER_LENGTH = 13  # RFC 6347 §4.1: type, version, epoch, sequence_number, length
_CONTENT_TYPES = range(20, 24)  # RFC 6347 §4.1: change_cipher_spec, alert, handshake, app data
_MAX_PLAINTEXT = 2**14  # RFC 6347 §4.1 (via RFC 5246 §6.2.1): a record carries at most 2^14 bytes
_EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 §4.2
_MIN_MTU = 256  # OpenSSL's smallest DTLS MTU: below it SSL_set_mtu refuses and handshakes fail
# Our certificate is ECDSA, so only ECDHE-ECDSA suites can be chosen; AES-128-GCM first, as
# Chromium offers it. AEAD suites only: every browser has had them for years.
_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
)


class SrtpProfile(enum.Enum):
    """DTLS-SRTP protection profiles we offer and accept, in our order of preference."""

    AEAD_AES_128_GCM = ("SRTP_AEAD_AES_128_GCM", 16, 12)  # RFC 7714 §14.2
    AES128_CM_SHA1_80 = ("SRTP_AES128_CM_SHA1_80", 16, 14)  # RFC 5764 §4.1.2

    def __init__(self, openssl_name: str, key_length: int, salt_length: int) -> None:
        self.openssl_name = openssl_name
        self.key_length = key_length
        self.salt_length = salt_length


_PROFILES_BY_OPENSSL_NAME = {profile.openssl_name.encode(): profile for profile in SrtpProfile}


class FailureReason(enum.StrEnum):
    """Why an association failed; a short, fixed set, fit for a metrics label."""

    FINGERPRINT_MISMATCH = "fingerprint_mismatch"  # the peer's certificate is not the offered one
    HANDSHAKE_FAILED = "handshake_failed"  # OpenSSL rejected the handshake, or the peer did
    NO_SRTP_PROFILE = "no_srtp_profile"  # the peer negotiated no SRTP profile we support
    TIMEOUT = "timeout"  # OpenSSL gave up retransmitting (RFC 6347 §4.2.4)
    PROTOCOL_ERROR = "protocol_error"  # a fatal error after the handshake, e.g. a fatal alert


@dataclass(frozen=True, slots=True)
class DtlsConnected:
    """The handshake is done, the peer holds the offered certificate, and SRTP keys are ready.

    RFC 5764 §4.2 derives a key and salt per direction; they are assigned here already:
    `local_*` protect what we send, `remote_*` check what the peer sends. Kept out of `repr`
    so that logging an event never logs keys.
    """

    srtp_profile: SrtpProfile
    local_key: bytes = field(repr=False)
    local_salt: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)
    remote_salt: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DtlsApplicationData:
    """One decrypted application_data record (an SCTP packet, RFC 8261 §3)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DtlsFailed:
    """The association is over without a clean close; `detail` is OpenSSL's account, for logs."""

    reason: FailureReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DtlsClosed:
    """The peer sent close_notify; we answered with ours (RFC 5246 §7.2.1)."""


DtlsEvent = DtlsConnected | DtlsApplicationData | DtlsFailed | DtlsClosed


class DtlsState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


_TRANSITIONS: dict[DtlsState, frozenset[DtlsState]] = {
    DtlsState.NEW: frozenset({DtlsState.CONNECTING, DtlsState.CLOSED}),
    DtlsState.CONNECTING: frozenset({DtlsState.CONNECTED, DtlsState.FAILED, DtlsState.CLOSED}),
    DtlsState.CONNECTED: frozenset({DtlsState.CLOSED, DtlsState.FAILED}),
    DtlsState.CLOSED: frozenset(),
    DtlsState.FAILED: frozenset(),
}
_TERMINAL = frozenset({DtlsState.CLOSED, DtlsState.FAILED})


class DtlsEndpoint:
    """One session's DTLS association; drive it, then drain `datagrams_to_send`, events, timer.

    `remote_fingerprints` are the offer's `a=fingerprint` values as (hash name, value) pairs.
    `mtu` bounds every datagram we emit (the UDP payload size).
    """

    __slots__ = ("role", "_mtu", "_verifier", "_ssl", "_state", "_events", "_outgoing", "_deadline")

    def __init__(
        self,
        role: DtlsRole,
        certificate: Certificate,
        remote_fingerprints: Sequence[tuple[str, str]],
        mtu: int = 1200,
    ) -> None:
        if role not in ("client", "server"):
            raise LocalError(f"DTLS role must be 'client' or 'server', not {role!r}")
        if mtu < _MIN_MTU:
            raise LocalError(f"DTLS MTU must be at least {_MIN_MTU}, not {mtu}")
        self.role = role
        self._mtu = mtu
        self._verifier = _FingerprintVerifier(remote_fingerprints)
        self._ssl = SSL.Connection(_context(certificate), None)
        # RFC 8122 §5: each side proves the certificate its SDP named, so the server must ask
        # for the client's and refuse a client without one.
        self._ssl.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verifier)
        self._ssl.set_ciphertext_mtu(mtu)
        if role == "client":
            self._ssl.set_connect_state()
        else:
            self._ssl.set_accept_state()
        self._state = DtlsState.NEW
        self._events: deque[DtlsEvent] = deque()
        self._outgoing: list[bytes] = []
        self._deadline: float | None = None

    @property
    def state(self) -> DtlsState:
        return self._state

    @property
    def max_application_data(self) -> int:
        """The largest `send_application_data` payload whose record fits the MTU (once connected).

        It depends on the negotiated cipher's overhead, so SCTP must ask after `DtlsConnected`.
        """
        return self._ssl.get_cleartext_mtu()

    def start(self, now: float) -> None:
        """Begin the handshake: a client sends its ClientHello, a server starts listening."""
        self._set_state(DtlsState.CONNECTING)
        self._advance(now)

    def handle_datagram(self, data: bytes, now: float) -> None:
        """Take one datagram demultiplexed as DTLS (first byte 20–63, RFC 7983 §7).

        Raises `ParseError` if it is not a sequence of whole DTLS records. Datagrams after the
        association ended are ignored: the session is being torn down.
        """
        if self._state is DtlsState.NEW:
            raise LocalError("handle_datagram() before start()")
        if self._state in _TERMINAL:
            return
        if not data:
            raise ParseError("empty DTLS datagram")
        _split_records(data)
        self._ssl.bio_write(data)
        self._advance(now)

    def handle_timer(self, now: float) -> None:
        """Retransmit the last flight if its deadline has passed (RFC 6347 §4.2.4)."""
        if self._deadline is None or now < self._deadline:
            return
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as error:
            self._fail(FailureReason.TIMEOUT, str(error))
        self._advance(now)

    def get_timer(self) -> float | None:
        """The absolute time at which to call `handle_timer`, on the caller's clock, or None."""
        return self._deadline

    def datagrams_to_send(self) -> list[bytes]:
        """Datagrams produced since the last call, each at most `mtu` bytes, in order."""
        datagrams, self._outgoing = self._outgoing, []
        return datagrams

    def next_event(self) -> DtlsEvent | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def send_application_data(self, data: bytes) -> None:
        """Send `data` as one application_data record (one SCTP packet, RFC 8261 §3)."""
        if self._state is not DtlsState.CONNECTED:
            raise LocalError(f"cannot send application data while {self._state.value}")
        if not 0 < len(data) <= self.max_application_data:
            raise LocalError(f"application data of {len(data)} bytes does not fit one record")
        self._ssl.send(data)
        self._flush()

    def close(self) -> None:
        """End the association, with close_notify if it was up (RFC 5246 §7.2.1); idempotent."""
        if self._state in _TERMINAL:
            return
        if self._state is DtlsState.CONNECTED:
            self._ssl.shutdown()
            self._flush()
        self._set_state(DtlsState.CLOSED)
        self._deadline = None

    def _advance(self, now: float) -> None:
        """Let OpenSSL consume what it was given, then collect its output, events and timer."""
        try:
            if self._state is DtlsState.CONNECTING:
                self._handshake()
            if self._state is DtlsState.CONNECTED:
                self._receive_application_data()
        except SSL.Error as error:
            if self._state is DtlsState.CONNECTED:
                reason = FailureReason.PROTOCOL_ERROR
            elif self._verifier.verdict is False:
                reason = FailureReason.FINGERPRINT_MISMATCH
            else:
                reason = FailureReason.HANDSHAKE_FAILED
            self._fail(reason, str(error))
        self._flush()  # after a failure too: it carries OpenSSL's fatal alert to the peer
        self._update_timer(now)

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            return
        profile = _PROFILES_BY_OPENSSL_NAME.get(self._ssl.get_selected_srtp_profile())
        # The verify callback has accepted the leaf, or the handshake would have failed; checking
        # its verdict again guards against OpenSSL finishing without ever asking it.
        if self._verifier.verdict is not True or profile is None:
            # OpenSSL finished, so the peer believes we did too: say we are leaving.
            self._ssl.shutdown()
            self._fail(
                FailureReason.NO_SRTP_PROFILE
                if self._verifier.verdict
                else FailureReason.FINGERPRINT_MISMATCH
            )
            return
        self._set_state(DtlsState.CONNECTED)
        self._events.append(self._export_srtp_keys(profile))

    def _export_srtp_keys(self, profile: SrtpProfile) -> DtlsConnected:
        key, salt = profile.key_length, profile.salt_length
        material = self._ssl.export_keying_material(_EXPORTER_LABEL, 2 * (key + salt))
        # RFC 5764 §4.2: client_write key, server_write key, client_write salt, server_write salt.
        client_key, server_key = material[:key], material[key : 2 * key]
        client_salt, server_salt = material[2 * key : 2 * key + salt], material[2 * key + salt :]
        if self.role == "client":
            return DtlsConnected(profile, client_key, client_salt, server_key, server_salt)
        return DtlsConnected(profile, server_key, server_salt, client_key, client_salt)

    def _receive_application_data(self) -> None:
        while True:
            try:
                data = self._ssl.recv(_MAX_PLAINTEXT)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                # RFC 5246 §7.2.1: answer the peer's close_notify with ours; the association ends.
                self._ssl.shutdown()
                self._set_state(DtlsState.CLOSED)
                self._events.append(DtlsClosed())
                return
            self._events.append(DtlsApplicationData(data))

    def _flush(self) -> None:
        """Cut what OpenSSL wrote into datagrams of whole records, each at most `mtu` bytes."""
        chunks = []
        while True:
            try:
                chunks.append(self._ssl.bio_read(65536))  # any size: we read until empty
            except SSL.WantReadError:
                break
        if not chunks:
            return
        datagram = b""
        for record in _split_records(b"".join(chunks)):
            if datagram and len(datagram) + len(record) > self._mtu:
                self._outgoing.append(datagram)
                datagram = b""
            datagram += record
        self._outgoing.append(datagram)

    def _update_timer(self, now: float) -> None:
        """Turn OpenSSL's retransmission timeout into a deadline on the caller's clock.

        This is the one place OpenSSL's own clock leaks in. OpenSSL starts and checks its DTLS
        timer (RFC 6347 §4.2.4: 1 s at first, doubling per retransmission) on the system clock
        and only reports the time left. Both clocks run at the same rate in production, so
        `now + time left` is the deadline; but `handle_timer` at that deadline retransmits only
        once OpenSSL's clock agrees, otherwise `get_timer` reports the remainder again. Under a
        fake clock in tests, a retransmission therefore still takes real time.
        """
        timeout = None if self._state in _TERMINAL else self._ssl.DTLSv1_get_timeout()
        self._deadline = None if timeout is None else now + timeout

    def _fail(self, reason: FailureReason, detail: str = "") -> None:
        self._set_state(DtlsState.FAILED)
        self._events.append(DtlsFailed(reason, detail))

    def _set_state(self, state: DtlsState) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise LocalError(f"DTLS cannot go from {self._state.value} to {state.value}")
        logger.debug("DTLS %s: %s -> %s", self.role, self._state.value, state.value)
        self._state = state


class _FingerprintVerifier:
    """OpenSSL's verify callback: trust the peer's certificate iff the offer named it.

    WebRTC certificates are self-signed, so OpenSSL's own chain verdict (`ok`) is always a
    failure and means nothing here; only the leaf's fingerprint does (RFC 8122 §5). Rejecting
    inside the handshake, rather than after it, makes OpenSSL send a bad_certificate alert and
    never finish. The verdict is kept for the failure reason; keeping it on this object rather
    than the endpoint spares the SSL object a reference cycle back to the endpoint.
    """

    __slots__ = ("_offered", "verdict")

    def __init__(self, offered: Sequence[tuple[str, str]]) -> None:
        self._offered = tuple(offered)
        self.verdict: bool | None = None

    def __call__(
        self, connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int
    ) -> bool:
        if depth > 0:
            return True  # a chain the peer chose to send: only its leaf identifies the peer
        self.verdict = fingerprint_matches(certificate.to_cryptography(), self._offered)
        return self.verdict


@functools.lru_cache(maxsize=4)
def _context(certificate: Certificate) -> SSL.Context:
    """The OpenSSL context shared by every endpoint using `certificate`.

    Building one costs about 0.3 ms, a third of a whole in-memory handshake (both sides, 0.9 ms
    when they share contexts), and nothing in it is per session: the fingerprint check and the
    MTU are set on each connection.
    """
    context = SSL.Context(SSL.DTLS_METHOD)
    context.set_min_proto_version(_DTLS_1_2)
    context.set_max_proto_version(_DTLS_1_2)
    # NO_QUERY_MTU: a memory BIO has no path MTU to ask, so keep the one we set. NO_TICKET: no
    # resumption in WebRTC (every session has new fingerprints), and it keeps the server's last
    # flight small. NO_RENEGOTIATION: WebRTC never renegotiates; refusing it removes attack surface.
    context.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
    context.set_cipher_list(_CIPHERS)
    context.use_certificate(certificate.x509)
    context.use_privatekey(certificate.private_key)
    # RFC 5764 §4.1.1: offer (as client) or select from (as server) these, in this order.
    context.set_tlsext_use_srtp(b":".join(_PROFILES_BY_OPENSSL_NAME))
    return context


def _split_records(data: bytes) -> list[bytes]:
    """Cut `data` into DTLS records; raise `ParseError` unless it is nothing but whole records.

    RFC 6347 §4.1: a record is a 13-byte header whose last two bytes give the fragment length.
    """
    records = []
    offset = 0
    while offset < len(data):
        header = data[offset : offset + _RECORD_HEADER_LENGTH]
        if len(header) < _RECORD_HEADER_LENGTH:
            raise ParseError("truncated DTLS record header")
        if header[0] not in _CONTENT_TYPES or header[1] != _DTLS_MAJOR_VERSION:
            raise ParseError("not a DTLS 1.x record")
        end = offset + _RECORD_HEADER_LENGTH + int.from_bytes(header[11:13])
        if end > len(data):
            raise ParseError("truncated DTLS record")
        records.append(data[offset:end])
        offset = end
    return records
