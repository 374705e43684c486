"""The STUN adapter: one error type out of aioice's codec, and signed responses it can verify."""

import struct

import pytest
from aioice import stun as aioice_stun
from hypothesis import given
from hypothesis import strategies as st

from voicewire.rtc import stun
from voicewire.rtc.errors import ParseError

KEY = b"server-ice-pwd-0123456789"
TRANSACTION_ID = bytes(range(12))


def binding_request(**attributes: object) -> aioice_stun.Message:
    request = aioice_stun.Message(
        aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST, TRANSACTION_ID, dict(attributes)
    )
    request.add_message_integrity(KEY)
    return request


def header(first_two_bytes: bytes, length: int, cookie: int = aioice_stun.COOKIE) -> bytes:
    return first_two_bytes + struct.pack("!HI", length, cookie) + TRANSACTION_ID


@pytest.mark.parametrize(
    ("first_byte", "expected"),
    [(0, True), (3, True), (4, False), (20, False), (63, False), (128, False), (255, False)],
)
def test_is_stun_follows_rfc_7983_ranges(first_byte: int, expected: bool) -> None:
    assert stun.is_stun(first_byte) is expected


def test_parse_reads_what_aioice_writes() -> None:
    message = stun.parse(
        bytes(binding_request(USERNAME="srv:cli", PRIORITY=1, **{"USE-CANDIDATE": None}))
    )

    assert stun.is_binding_request(message)
    assert message.transaction_id == TRANSACTION_ID
    assert message.attributes["USERNAME"] == "srv:cli"
    assert "USE-CANDIDATE" in message.attributes
    assert message.check_message_integrity(KEY)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(header(b"\x00\x01", 0)[:19], id="short-header"),
        pytest.param(header(b"\x40\x01", 0), id="first-byte-not-stun"),
        pytest.param(header(b"\x00\x01", 0, cookie=0), id="rfc-3489-no-cookie"),
        pytest.param(header(b"\x00\x01", 2) + b"\x00\x00", id="length-not-4-aligned"),
        pytest.param(header(b"\x00\x01", 8), id="length-beyond-datagram"),
        pytest.param(header(b"\x00\x05", 0), id="unknown-method"),
        pytest.param(
            header(b"\x00\x01", 8) + b"\x80\x28\x00\x02\x00\x00\x00\x00", id="short-fingerprint"
        ),
        pytest.param(
            header(b"\x00\x01", 8) + b"\x00\x06\x00\x02\xff\xfe\x00\x00", id="username-not-utf8"
        ),
    ],
)
def test_parse_raises_only_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        stun.parse(data)


def test_parse_rejects_a_wrong_fingerprint_as_not_stun() -> None:
    data = bytearray(bytes(binding_request(USERNAME="srv:cli")))
    data[-1] ^= 1  # the last byte of FINGERPRINT

    with pytest.raises(ParseError):
        stun.parse(bytes(data))


def test_is_binding_request_rejects_other_classes_and_methods() -> None:
    indication = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.INDICATION)
    allocate = aioice_stun.Message(aioice_stun.Method.ALLOCATE, aioice_stun.Class.REQUEST)

    assert not stun.is_binding_request(indication)
    assert not stun.is_binding_request(allocate)


@pytest.mark.parametrize("mapped", [("203.0.113.7", 54321), ("2001:db8::1", 443)])
def test_binding_success_is_signed_fingerprinted_and_mapped(mapped: stun.Address) -> None:
    request = binding_request(USERNAME="srv:cli")

    response = aioice_stun.parse_message(stun.binding_success(request, mapped, KEY))

    assert response.message_method == aioice_stun.Method.BINDING
    assert response.message_class == aioice_stun.Class.RESPONSE
    assert response.transaction_id == TRANSACTION_ID
    assert response.attributes["XOR-MAPPED-ADDRESS"] == mapped
    assert response.check_message_integrity(KEY)
    assert "FINGERPRINT" in response.attributes  # parse_message has verified it


def test_binding_error_is_signed_and_fingerprinted() -> None:
    request = binding_request(USERNAME="srv:cli")

    response = aioice_stun.parse_message(stun.binding_error(request, 487, "Role Conflict", KEY))

    assert response.message_class == aioice_stun.Class.ERROR
    assert response.transaction_id == TRANSACTION_ID
    assert response.attributes["ERROR-CODE"] == (487, "Role Conflict")
    assert response.check_message_integrity(KEY)
    assert "FINGERPRINT" in response.attributes


attribute = st.tuples(
    st.sampled_from(
        [0x0001, 0x0006, 0x0008, 0x0009, 0x0020, 0x0024, 0x0025, 0x8028, 0x8029, 0x802A]
    )
    | st.integers(0, 0xFFFF),
    st.binary(max_size=40),
    st.integers(0, 0xFFFF) | st.none(),  # a declared length that may lie
)


@st.composite
def stun_like(draw: st.DrawFn) -> bytes:
    """Datagrams with a plausible header, so the fuzzing reaches the attribute decoders."""
    body = b"".join(
        struct.pack("!HH", kind, len(value) if declared is None else declared) + value
        for kind, value, declared in draw(st.lists(attribute, max_size=6))
    )
    message_type = draw(st.sampled_from([0x0001, 0x0011, 0x0101, 0x0111]) | st.integers(0, 0x3FFF))
    return (
        struct.pack(
            "!HHI12s",
            message_type,
            len(body),
            aioice_stun.COOKIE,
            draw(st.binary(min_size=12, max_size=12)),
        )
        + body
    )


@given(st.binary() | stun_like())
def test_parse_raises_nothing_but_parse_error(data: bytes) -> None:
    try:
        stun.parse(data)
    except ParseError:
        pass
