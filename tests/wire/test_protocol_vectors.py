"""docs/protocol.md's test vectors, read from the document itself so text and code cannot drift."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest

from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys, TokenError

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def vectors(name: str):
    match = re.search(rf"```json test-vectors:{name}\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/protocol.md has no {name} vectors"
    return json.loads(match.group(1))


TOKENS = vectors("routing-token")
HEADERS = vectors("relay-header")


@pytest.mark.parametrize("vector", TOKENS["tokens"], ids=lambda v: v["ufrag"])
def test_token_vector_is_issued_and_verified(vector):
    keys = RoutingKeys.parse(TOKENS["secrets"])
    issued = keys.issue(
        tuple(vector["transceiver"]), vector["cluster_id"], bytes.fromhex(vector["nonce"])
    )
    assert issued == vector["ufrag"]
    token = keys.verify(vector["ufrag"])
    assert token.key_id == vector["key_id"]
    assert token.cluster_id == vector["cluster_id"]
    assert token.transceiver == tuple(vector["transceiver"])
    assert token.nonce.hex() == vector["nonce"]


@pytest.mark.parametrize("vector", TOKENS["tokens"], ids=lambda v: v["ufrag"])
def test_token_vector_bytes_and_mac_follow_the_documented_layout(vector):
    """Recompute the MAC with plain hmac, independently of the module under test."""
    raw = base64.b64decode(vector["ufrag"] + "==")
    assert raw.hex() == vector["bytes"]
    secrets = dict(item.split(":") for item in TOKENS["secrets"].split(","))
    secret = bytes.fromhex(secrets[str(raw[1])])
    assert raw[-10:] == hmac.new(secret, raw[:-10], hashlib.sha256).digest()[:10]
    assert len(vector["ufrag"]) == (38 if len(raw) == 28 else 54)
    assert re.fullmatch(r"[A-Za-z0-9+/]+", vector["ufrag"])


@pytest.mark.parametrize("vector", TOKENS["rejected"], ids=lambda v: v["why"])
def test_rejected_token_vectors(vector):
    keys = RoutingKeys.parse(vector.get("secrets", TOKENS["secrets"]))
    with pytest.raises(TokenError):
        keys.verify(vector["ufrag"])


@pytest.mark.parametrize("vector", HEADERS, ids=lambda v: v["header"])
def test_relay_header_vectors(vector):
    host, port = vector["client"]
    header = relay_header.encode(host, port)
    assert header.hex() == vector["header"]
    family, decoded_host, decoded_port, offset = relay_header.decode(header + b"payload")
    assert (decoded_host, decoded_port) == tuple(vector.get("decodes_as", vector["client"]))
    assert offset == len(header) == (8 if family == 4 else 20)
