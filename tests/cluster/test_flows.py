"""Flow records: their address format (read from a shared store, so parsed like network bytes),
and a transceiver's publisher against a real redis-server, in this process."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicewire.cluster.flow_keys import address_text, flow_key, parse_address
from voicewire.cluster.flows import FlowPublisher
from voicewire.cluster.redis_client import connect

OWNER = ("10.0.0.7", 7000)
CLIENT = ("198.51.100.7", 50000)
ports = st.integers(1, 0xFFFF)


@given(st.ip_addresses(), ports)
def test_an_address_reads_back_as_written(address, port):
    host = str(address)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        host = str(address.ipv4_mapped)  # the relay header's view of a mapped client
    assert parse_address(address_text((str(address), port))) == (host, port)


@given(st.text(max_size=60))
def test_any_text_parses_to_an_address_or_none(text):
    parsed = parse_address(text)
    if parsed is not None:
        assert parse_address(address_text(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0.7",
        "10.0.0.7:",
        "10.0.0.7:0",
        "10.0.0.7:65536",
        "10.0.0.7:+80",
        "10.0.0.7:٨٠",  # digits, but not ASCII ones
        "[10.0.0.7]:80",
        "::1:80",  # IPv6 without brackets: which colon ends the host?
        "[fe80::1%eth0]:80",
        "transceiver.local:7000",
        "10.0.0.7:7000\n",
    ],
)
def test_anything_else_is_refused(text):
    assert parse_address(text) is None


def test_keys_name_the_cluster_and_the_client_as_its_relay_header_does():
    assert flow_key(3, CLIENT) == "voicewire:flow:3:198.51.100.7:50000"
    assert flow_key(0, ("2001:db8::1", 443)) == "voicewire:flow:0:[2001:db8::1]:443"


@pytest.fixture
async def client(redis):
    connection = connect(redis.url)
    yield connection
    await connection.aclose()


async def wait_for(check, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not true in time")


async def test_records_are_written_refreshed_and_deleted_in_the_background(client):
    publisher = FlowPublisher(client, 3, OWNER, ttl=0.4)
    writing = asyncio.create_task(publisher.run())
    key = flow_key(3, CLIENT)
    try:
        publisher.announce(CLIENT)
        await wait_for(lambda: _value_is(client, key, "10.0.0.7:7000"))
        assert 0 < await client.pttl(key) <= 400
        await asyncio.sleep(0.6)  # past the ttl: only the refresh (every ttl / 4) keeps it
        assert await client.get(key) == "10.0.0.7:7000"

        publisher.forget(CLIENT)
        await wait_for(lambda: _value_is(client, key, None))
    finally:
        writing.cancel()


async def test_a_record_another_transceiver_took_over_is_not_deleted(client):
    publisher = FlowPublisher(client, 0, OWNER, ttl=30)
    writing = asyncio.create_task(publisher.run())
    key = flow_key(0, CLIENT)
    try:
        publisher.announce(CLIENT)
        await wait_for(lambda: _value_is(client, key, "10.0.0.7:7000"))
        await client.set(key, "10.0.0.8:7000")  # the client's new call, on another transceiver
        publisher.forget(CLIENT)
        await asyncio.sleep(0.1)
        assert await client.get(key) == "10.0.0.8:7000"
    finally:
        writing.cancel()


async def test_without_redis_changes_wait_and_are_written_once_it_is_back(redis, client, caplog):
    publisher = FlowPublisher(client, 0, OWNER, ttl=30)
    redis.stop()
    writing = asyncio.create_task(publisher.run())
    try:
        with caplog.at_level(logging.INFO, "voicewire.cluster"):
            publisher.announce(CLIENT)
            publisher.announce(("198.51.100.8", 1))
            publisher.forget(("198.51.100.8", 1))  # folded: one delete, after the write
            await asyncio.sleep(1.2)  # a failed write, and its retry a second later
            redis.start()
            await wait_for(lambda: _value_is(client, flow_key(0, CLIENT), "10.0.0.7:7000"), 3)
        assert await client.get(flow_key(0, ("198.51.100.8", 1))) is None
        messages = [record.getMessage() for record in caplog.records]
        assert messages.count("flow records unwritable: calls go on, writes keep retrying") == 1
        assert messages.count("flow records writable again") == 1
    finally:
        writing.cancel()


async def test_close_writes_the_last_deletes(client):
    publisher = FlowPublisher(client, 0, OWNER, ttl=30)
    writing = asyncio.create_task(publisher.run())
    publisher.announce(CLIENT)
    await wait_for(lambda: _value_is(client, flow_key(0, CLIENT), "10.0.0.7:7000"))
    publisher.forget(CLIENT)  # the session ends as the transceiver exits
    writing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writing
    await publisher.close()
    assert await client.get(flow_key(0, CLIENT)) is None


async def _value_is(client, key: str, value: str | None) -> bool:
    return await client.get(key) == value
