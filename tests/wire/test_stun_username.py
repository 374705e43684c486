from __future__ import annotations

import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from tests.relay.stun_requests import binding_request
from voicewire.wire import stun_username


def test_reads_server_ufrag_of_a_binding_request():
    assert stun_username.server_ufrag(binding_request("SERVERUFRAG", "cl")) == b"SERVERUFRAG"


def test_other_stun_messages_are_not_binding_requests():
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    indication = stun.Message(stun.Method.BINDING, stun.Class.INDICATION)
    for message in (response, indication):
        with pytest.raises(stun_username.NotBindingRequest):
            stun_username.server_ufrag(bytes(message))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # length no longer matches
        lambda d: d[:2] + (len(d) - 19).to_bytes(2, "big") + d[4:] + b"\0",  # not a multiple of 4
        lambda d: d[:20] + b"\x00\x06\xff\xff" + d[24:],  # attribute overruns the message
    ],
)
def test_broken_framing_is_malformed(mutate):
    with pytest.raises(stun_username.MalformedStun):
        stun_username.server_ufrag(mutate(binding_request("SERVERUFRAG")))


@pytest.mark.parametrize("username", ["nocolon", ":client", "x" * 600 + ":c"])
def test_unusable_username_is_malformed(username):
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    with pytest.raises(stun_username.MalformedStun):
        stun_username.server_ufrag(bytes(message))


def test_request_without_username_is_malformed():
    with pytest.raises(stun_username.MalformedStun):
        stun_username.server_ufrag(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)))


@given(st.binary(max_size=200))
def test_any_bytes_give_a_ufrag_or_this_modules_errors(data):
    try:
        ufrag = stun_username.server_ufrag(data)
    except (stun_username.NotBindingRequest, stun_username.MalformedStun):
        return
    assert ufrag and b":" not in ufrag


@given(st.data())
def test_mutated_requests_never_raise_anything_else(data):
    request = bytearray(binding_request("SERVERUFRAG"))
    for _ in range(data.draw(st.integers(1, 4))):
        request[data.draw(st.integers(0, len(request) - 1))] = data.draw(st.integers(0, 255))
    try:
        stun_username.server_ufrag(bytes(request))
    except (stun_username.NotBindingRequest, stun_username.MalformedStun):
        pass
