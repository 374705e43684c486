"""SRTP and SRTCP for one session, through libsrtp, keyed by the DTLS handshake (RFC 5764 §4.2).

A thin shell: libsrtp does the cryptography, replay protection and rollover counting; this
module only builds its two sessions (one per direction) and turns its errors into ours. RTP and
RTCP share one session per direction, as libsrtp keeps their contexts apart within a stream.
"""

from __future__ import annotations

from collections.abc import Callable

import pylibsrtp

from voicewire.rtc.dtls import DtlsConnected, SrtpProfile
from voicewire.rtc.errors import LocalError, ParseError, RtcError

_LIBSRTP_PROFILES = {
    SrtpProfile.AEAD_AES_128_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    SrtpProfile.AES128_CM_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}


class SrtpSession:
    """Protects what we send and checks what the peer sends, with the keys from `DtlsConnected`.

    Any SSRC is accepted in each direction (libsrtp's wildcard policies): the session carries
    one audio stream each way whose SSRCs the SDP layer, not this one, keeps track of.
    """

    __slots__ = ("_outbound", "_inbound")

    def __init__(self, connected: DtlsConnected) -> None:
        profile = _LIBSRTP_PROFILES[connected.srtp_profile]
        # libsrtp takes the master key and master salt as one string, key first.
        self._outbound = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=connected.local_key + connected.local_salt,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=profile,
            )
        )
        self._inbound = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=connected.remote_key + connected.remote_salt,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=profile,
            )
        )

    def protect_rtp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one of our RTP packets; `LocalError` if it is not one."""
        return _call(self._outbound.protect, packet, LocalError)

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one of our RTCP compound packets; `LocalError` if not one."""
        return _call(self._outbound.protect_rtcp, packet, LocalError)

    def unprotect_rtp(self, packet: bytes) -> bytes:
        """Check and decrypt a peer's SRTP packet; `ParseError` if forged, replayed, malformed."""
        return _call(self._inbound.unprotect, packet, ParseError)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Check and decrypt a peer's SRTCP packet; `ParseError` if forged, replayed, malformed."""
        return _call(self._inbound.unprotect_rtcp, packet, ParseError)


def _call(operation: Callable[[bytes], bytes], packet: bytes, error: type[RtcError]) -> bytes:
    """Run a libsrtp operation, blaming a failure on whoever supplied the packet.

    pylibsrtp raises `Error` for libsrtp's status codes and `ValueError` for a packet longer
    than its 1500-byte buffer allows.
    """
    try:
        return operation(packet)
    except (pylibsrtp.Error, ValueError) as failure:
        raise error(f"SRTP: {failure}") from failure
