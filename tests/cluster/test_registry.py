"""The registry and the shared ephemeral keys against a real redis-server, in this process."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from tests.cluster.services import free_port
from voicewire.cluster.ephemeral_keys import RedisEphemeralKeys
from voicewire.cluster.redis_client import connect
from voicewire.cluster.registry import (
    RECORD_TTL,
    RegistryUnavailable,
    TransceiverRecord,
    TransceiverRegistry,
)
from voicewire.gateway.cluster_signaling import least_loaded
from voicewire.gateway.keys import KeyStore, KeysUnavailable, Unauthorized


def record(address: str, sessions: int = 0, **changes) -> TransceiverRecord:
    base = TransceiverRecord(
        id=address,
        advertise=address,
        http=f"http://{address.split(':')[0]}:8081",
        cluster_id=0,
        sessions=sessions,
        capacity=10,
        draining=False,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
async def client(redis):
    connection = connect(redis.url)
    yield connection
    await connection.aclose()


async def test_records_round_trip_expire_and_stay_in_their_cluster(client):
    zero, other = TransceiverRegistry(client, 0), TransceiverRegistry(client, 7)
    first, second = record("10.0.0.1:7000", 3), record("10.0.0.2:7000", draining=True)
    await zero.publish(first)
    await zero.publish(second)
    await other.publish(dataclasses.replace(first, cluster_id=7))
    assert sorted(await zero.transceivers(), key=lambda r: r.id) == [first, second]
    assert [r.cluster_id for r in await other.transceivers()] == [7]
    ttl = await client.pttl("voicewire:transceiver:0:10.0.0.1:7000")
    assert 0 < ttl <= RECORD_TTL * 1000

    await zero.withdraw(second.id)
    await client.delete("voicewire:transceiver:0:10.0.0.1:7000")  # as if it had expired
    assert await zero.transceivers() == []
    assert await client.smembers("voicewire:transceivers:0") == set()  # the index is pruned


async def test_a_record_this_version_cannot_read_is_skipped(client):
    registry = TransceiverRegistry(client, 0)
    await registry.publish(record("10.0.0.1:7000"))
    await client.sadd("voicewire:transceivers:0", "odd")
    await client.set("voicewire:transceiver:0:odd", '{"id": "odd", "sessions": "many"}')
    assert [r.id for r in await registry.transceivers()] == ["10.0.0.1:7000"]


async def test_call_owners(client):
    registry = TransceiverRegistry(client, 0)
    await registry.remember_call("rtc_1", "http://10.0.0.1:8081")
    assert await registry.call_owner("rtc_1") == "http://10.0.0.1:8081"
    assert 0 < await client.ttl("voicewire:call:rtc_1") <= 4 * 3600
    await registry.forget_call("rtc_1")
    assert await registry.call_owner("rtc_1") is None


def test_least_loaded_skips_draining_and_full_transceivers():
    records = [
        record("10.0.0.1:7000", 5),
        record("10.0.0.2:7000", 1, draining=True),
        record("10.0.0.3:7000", 10),  # full
        record("10.0.0.4:7000", 2, capacity=4),  # as loaded as 5 of 10: a tie, either order
        record("10.0.0.5:7000", 1),
    ]
    order = [r.id for r in least_loaded(records)]
    assert order[0] == "10.0.0.5:7000"
    assert set(order[1:]) == {"10.0.0.1:7000", "10.0.0.4:7000"}


async def test_ephemeral_keys_are_shared_hashed_and_expire_in_redis(client):
    minted_by = KeyStore(("sk",), RedisEphemeralKeys(client))
    used_by = KeyStore(("sk",), RedisEphemeralKeys(client))  # another replica
    now = time.time()
    key = await minted_by.mint(10, {"instructions": "hi"}, now)
    assert await used_by.authorize_call(f"Bearer {key.value}", now) == {"instructions": "hi"}
    stored = await client.keys("voicewire:ek:*")
    assert len(stored) == 1 and key.value not in stored[0]  # Redis never holds usable keys
    assert 9_000 < await client.pttl(stored[0]) <= 10_000

    brief = await minted_by.mint(10, {}, now - 9.8)  # 0.2 s left
    await asyncio.sleep(0.3)
    with pytest.raises(Unauthorized):
        await used_by.authorize_call(f"Bearer {brief.value}", time.time())


async def test_an_unreachable_redis_fails_fast_with_the_callers_own_error():
    client = connect(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            await TransceiverRegistry(client, 0).transceivers()
        with pytest.raises(KeysUnavailable):
            await KeyStore((), RedisEphemeralKeys(client)).mint(60, {}, time.time())
        assert time.monotonic() - started < 2
    finally:
        await client.aclose()
