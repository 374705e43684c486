from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicewire.wire import relay_header


@given(host=st.ip_addresses().map(str), port=st.integers(0, 65535), payload=st.binary())
def test_encode_decode_round_trip(host, port, payload):
    header = relay_header.encode(host, port)
    family, decoded, decoded_port, offset = relay_header.decode(header + payload)
    address = ipaddress.ip_address(host)
    if getattr(address, "ipv4_mapped", None):  # an IPv4 client seen by a dual-stack socket
        address = address.ipv4_mapped
    assert (ipaddress.ip_address(decoded), decoded_port) == (address, port)
    assert len(header) == offset == (8 if family == 4 else 20)
    assert (header + payload)[offset:] == payload


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_header_error(data):
    try:
        family, host, port, offset = relay_header.decode(data)
    except relay_header.HeaderError:
        return
    assert family in (4, 6) and 0 <= port <= 65535 and offset <= len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x04\x00",
        b"\x02\x04\x00\x01\x7f\x00\x00\x01",
        b"\x01\x05" + bytes(6),
        b"\x01\x06" + bytes(10),
    ],
)
def test_malformed_headers(data):
    with pytest.raises(relay_header.HeaderError):
        relay_header.decode(data)
