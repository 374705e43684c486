"""The transceiver's certificate and the RFC 8122 §5 fingerprint check."""

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from voicewire.rtc.certificate import Certificate, fingerprint, fingerprint_matches
from voicewire.rtc.errors import LocalError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CERTIFICATE = Certificate.generate(NOW)
OTHER = Certificate.generate(NOW)


def test_generated_certificate_is_self_signed_ecdsa_p256():
    cert = CERTIFICATE.x509
    assert isinstance(CERTIFICATE.private_key.curve, ec.SECP256R1)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == CERTIFICATE.private_key.public_key()
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc


def test_sdp_fingerprint_is_uppercase_sha256_pairs():
    name, value = CERTIFICATE.sdp_fingerprint.split(" ")
    assert name == "sha-256"
    assert value == CERTIFICATE.x509.fingerprint(hashes.SHA256()).hex(":").upper()
    assert len(value.split(":")) == 32


@pytest.mark.parametrize(
    ("name", "length"),
    [("sha-1", 20), ("sha-224", 28), ("sha-256", 32), ("sha-384", 48), ("SHA-512", 64)],
)
def test_fingerprint_for_every_supported_hash(name, length):
    value = fingerprint(CERTIFICATE.x509, name)
    assert len(bytes.fromhex(value.replace(":", ""))) == length
    assert value == value.upper()


def test_fingerprint_rejects_unknown_hash():
    with pytest.raises(LocalError):
        fingerprint(CERTIFICATE.x509, "md5")


def offer(certificate, *names):
    return [(name, fingerprint(certificate.x509, name)) for name in names]


def test_matches_offered_fingerprint():
    assert fingerprint_matches(CERTIFICATE.x509, offer(CERTIFICATE, "sha-256"))
    assert not fingerprint_matches(CERTIFICATE.x509, offer(OTHER, "sha-256"))


def test_matches_lowercase_value_and_hash_name():
    [(name, value)] = offer(CERTIFICATE, "sha-384")
    assert fingerprint_matches(CERTIFICATE.x509, [(name.upper(), value.lower())])


def test_any_certificate_of_the_strongest_set_matches():
    offered = offer(OTHER, "sha-256") + offer(CERTIFICATE, "sha-256")
    assert fingerprint_matches(CERTIFICATE.x509, offered)


def test_only_the_strongest_offered_hash_counts():
    """A right weak hash must not rescue a wrong strong one (no downgrade)."""
    offered = offer(CERTIFICATE, "sha-1") + offer(OTHER, "sha-512")
    assert not fingerprint_matches(CERTIFICATE.x509, offered)


@pytest.mark.parametrize(
    "offered",
    [[], [("md5", "AB:CD")], [("sha-256", "")], [("sha-256", "not hex at all")]],
)
def test_unusable_offers_never_match(offered):
    assert not fingerprint_matches(CERTIFICATE.x509, offered)


def test_value_without_colons_does_not_match():
    [(name, value)] = offer(CERTIFICATE, "sha-256")
    assert not fingerprint_matches(CERTIFICATE.x509, [(name, value.replace(":", ""))])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["sha-1", "sha-256", "sha-512", "md5", ""]) | st.text(), st.text()
        )
    )
)
def test_arbitrary_offers_never_raise_and_never_match(offered):
    assert fingerprint_matches(CERTIFICATE.x509, offered) is False
