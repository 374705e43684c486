"""The transceiver's DTLS identity, and checking a peer's identity against its SDP fingerprints.

WebRTC endpoints authenticate each other without a PKI: each side signs a throwaway self-signed
certificate and puts its hash in the SDP (`a=fingerprint`, RFC 8122 §5); the DTLS handshake then
proves possession of the key behind that hash. So a certificate carries no trust
of its own, and one can serve every session of a process, as browsers reuse one per
RTCPeerConnection: generating a key and signing costs far more than a session can spare at setup.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from voicewire.rtc.errors import LocalError

# RFC 8122 §5 hash function textual names we can compute, weakest first: when an offer carries
# several, the strongest one present is the one we check (see `fingerprint_matches`).
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-224": hashes.SHA224,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}

# RFC 5280 §4.1.2.5: "99991231235959Z" means the certificate has no well-defined expiration
# date. A process-lifetime certificate must not expire under a long-running transceiver, and
# WebRTC peers trust it through the fingerprint, not through its validity period.
_NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
# Backdate notBefore so a peer whose clock runs behind ours does not see a "future" certificate.
_CLOCK_SKEW = timedelta(days=1)


@dataclass(frozen=True, slots=True, eq=False)
class Certificate:
    """An ECDSA P-256 key and its self-signed certificate, shared by all sessions of a process.

    ECDSA P-256 is what browsers generate by default, so the ECDHE-ECDSA suites they put first
    fit it; its signatures are much cheaper than RSA's at handshake time. pyOpenSSL takes the
    `cryptography` objects as they are, so no conversion is kept here.
    """

    private_key: ec.EllipticCurvePrivateKey
    x509: x509.Certificate
    sdp_fingerprint: str = field(init=False)
    """The value of our `a=fingerprint` attribute: `sha-256 AB:CD:…` (RFC 8122 §5)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sdp_fingerprint", f"sha-256 {fingerprint(self.x509, 'sha-256')}")

    @classmethod
    def generate(cls, now: datetime) -> Certificate:
        """Make a fresh key and certificate; `now` (timezone-aware) dates it.

        The key and serial number come from a CSPRNG (OpenSSL's, the OS's): key material is the
        one kind of randomness that must never be injectable.
        """
        private_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "voicewire")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(_NO_EXPIRY)
            .sign(private_key, hashes.SHA256())
        )
        return cls(private_key, certificate)


def fingerprint(certificate: x509.Certificate, hash_name: str) -> str:
    """The certificate's fingerprint as SDP writes it: uppercase hex pairs joined by colons.

    RFC 8122 §5: the hash is over the DER form of the certificate, as `fingerprint()` computes.
    """
    try:
        algorithm = _HASHES[hash_name.lower()]
    except KeyError:
        raise LocalError(f"unsupported fingerprint hash {hash_name!r}") from None
    return certificate.fingerprint(algorithm()).hex(":").upper()


def fingerprint_matches(certificate: x509.Certificate, offered: Iterable[tuple[str, str]]) -> bool:
    """Whether the peer's certificate is the one its SDP offer named.

    RFC 8122 §5: pick the fingerprints that use our most preferred hash function among those
    offered and require the certificate to match one of them. Checking only the strongest hash
    stops a downgrade where an attacker who can forge a weak hash strips the strong one's
    protection; accepting any one of that set allows an offer listing several certificates.
    Values are compared as bytes in constant time; a malformed value simply never matches.
    """
    offered = [(name.lower(), value) for name, value in offered]
    supported = [name for name, _ in offered if name in _HASHES]
    if not supported:
        return False
    strongest = max(supported, key=list(_HASHES).index)
    actual = certificate.fingerprint(_HASHES[strongest]())
    matched = False
    for name, value in offered:
        if name == strongest:
            matched |= hmac.compare_digest(actual, _decode_fingerprint(value))
    return matched


def _decode_fingerprint(value: str) -> bytes:
    """Bytes of an SDP fingerprint value (RFC 8122 §5: `2UHEX *(":" 2UHEX)`), or b"" if malformed.

    Lowercase hex is accepted too: RFC 8122 asks for uppercase, but some stacks send lowercase.
    """
    pairs = value.strip().split(":")
    if any(len(pair) != 2 for pair in pairs):
        return b""
    try:
        return bytes.fromhex("".join(pairs))
    except ValueError:
        return b""
