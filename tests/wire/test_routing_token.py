from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicewire.wire.routing_token import RoutingKeys, TokenError

SECRET = bytes(range(32))
KEYS = RoutingKeys([(1, SECRET), (2, bytes(range(32, 64)))])

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@given(
    host=ipv4 | ipv6,
    port=st.integers(1, 65535),
    cluster=st.integers(0, 65535),
    nonce=st.binary(min_size=8, max_size=8),
)
def test_issue_then_verify_round_trips(host, port, cluster, nonce):
    ufrag = KEYS.issue((host, port), cluster, nonce)
    assert len(ufrag) <= 64
    assert all(c.isascii() and (c.isalnum() or c in "+/") for c in ufrag)  # RFC 8839 ice-char
    token = KEYS.verify(ufrag)
    assert ipaddress.ip_address(token.transceiver[0]) == ipaddress.ip_address(host)
    assert token.transceiver[1] == port
    assert token.cluster_id == cluster
    assert token.nonce == nonce
    assert token.key_id == 1


@given(st.binary(max_size=80) | st.text(max_size=80))
def test_any_input_verifies_or_raises_token_error(data):
    try:
        KEYS.verify(data)
    except TokenError:
        pass


@given(st.data())
def test_any_single_character_change_is_rejected(data):
    ufrag = KEYS.issue(("10.0.0.1", 3479))
    index = data.draw(st.integers(0, len(ufrag) - 1))
    replacement = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    )
    forged = ufrag[:index] + replacement + ufrag[index + 1 :]
    if forged != ufrag:
        with pytest.raises(TokenError):
            KEYS.verify(forged)


def test_every_token_is_unique():
    assert len({KEYS.issue(("10.0.0.1", 3479)) for _ in range(1000)}) == 1000


def test_rotation_old_key_verifies_new_key_signs():
    old = RoutingKeys([(1, SECRET)])
    both = RoutingKeys([(2, bytes(range(32, 64))), (1, SECRET)])
    assert both.verify(old.issue(("10.0.0.1", 1))).key_id == 1
    assert both.verify(both.issue(("10.0.0.1", 1))).key_id == 2
    with pytest.raises(TokenError):
        old.verify(both.issue(("10.0.0.1", 1)))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "no routing secrets"),
        ("1:00", "at least 16 bytes"),
        ("1:zz", "hex"),
        ("x:" + "00" * 16, "integer"),
        ("300:" + "00" * 16, "0..255"),
        ("1:" + "00" * 16 + ",1:" + "11" * 16, "twice"),
        ("00" * 16, "kid:hex"),
    ],
)
def test_bad_secret_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        RoutingKeys.parse(spec)


def test_secret_spec_allows_comments_and_newlines():
    keys = RoutingKeys.parse("# rotation in progress\n2:" + "22" * 16 + "\n1:" + "11" * 16 + "\n")
    assert keys.key_ids == (2, 1)
    assert keys.signing_key_id == 2
