"""Calls through the split services: gateway → transceivers → relay, with a real Redis registry.

Every part is a real process on loopback (``voicewire relay``, ``transceiver``, ``gateway``,
``redis-server``) and the caller is aiortc, an independent WebRTC stack, so these tests see what
a deployment sees: placement by load, a crashed transceiver leaving the pool, a graceful drain,
Redis going away, and hang-ups arriving at any gateway replica.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.cluster.services import Transceiver, owner_of
from tests.e2e.aiortc_client import CallClient
from voicewire.cluster.redis_client import connect
from voicewire.cluster.registry import TransceiverRecord, TransceiverRegistry

OFFER = (
    Path(__file__).resolve().parents[1] / "rtc" / "fixtures" / "chromium-audio-datachannel.sdp"
).read_text()
SDP = {"Content-Type": "application/sdp"}


async def call(gateway_url: str) -> tuple[CallClient, tuple[str, int]]:
    """A connected aiortc call through the gateway, and the transceiver that owns it."""
    client = CallClient()
    try:
        answer = await client.call(gateway_url)
        await client.wait_state("connected")
    except BaseException:
        await client.close()
        raise
    return client, owner_of(answer)


async def audio_flows(client: CallClient, seconds: float = 0.5) -> bool:
    """The echo keeps coming: at least half of the packets due in ``seconds``."""
    before = len(client.received)
    await asyncio.sleep(seconds)
    return len(client.received) - before >= seconds * 50 / 2


async def records(redis_url: str) -> dict[tuple[str, int], TransceiverRecord]:
    client = connect(redis_url)
    try:
        found = await TransceiverRegistry(client, 0).transceivers()
    finally:
        await client.aclose()
    return {_address(record.advertise): record for record in found}


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def post_offer(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """Post the Chromium fixture offer (no media follows): status, answer or parsed JSON
    error, and the Location."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/realtime/calls", data=OFFER, headers={**SDP, **(headers or {})}) as r,
    ):
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body, r.headers.get("Location", "")


async def delete(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.delete(url) as response:
        return response.status


async def mint(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/realtime/client_secrets", json={}, headers=headers) as response,
    ):
        return response.status, await response.json()


async def wait_until(check, timeout: float, step: float = 0.05) -> None:
    """Poll an async ``check`` until it is true."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"not true after {timeout} s"
        await asyncio.sleep(step)


def by_address(transceivers: list[Transceiver]) -> dict[tuple[str, int], Transceiver]:
    return {t.advertise: t for t in transceivers}


async def test_calls_spread_by_load_and_sigterm_ends_once_the_calls_do(cluster):
    transceivers = await cluster.transceivers(2)
    (gateway,) = await cluster.gateways(1)
    clients = []
    try:
        for _ in range(4):
            client, owner = await call(gateway.url)
            clients.append((client, owner))
        assert Counter(owner for _, owner in clients) == {t.advertise: 2 for t in transceivers}
        assert all([await audio_flows(client) for client, _ in clients])
        registered = await records(cluster.redis.url)
        assert {a: r.sessions for a, r in registered.items()} == {
            t.advertise: 2 for t in transceivers
        }

        # Drain with the default 30 s grace: each process leaves as soon as its calls end.
        for transceiver in transceivers:
            transceiver.send(signal.SIGTERM)
        for client, _ in clients:
            assert await client.hang_up() == 200
        for transceiver in transceivers:
            assert await transceiver.wait_exit(5) == 0
            assert (await transceiver.wait_log("drained"))["sessions_left"] == 0
        assert await records(cluster.redis.url) == {}  # withdrawn, not left to expire
    finally:
        for client, _ in clients:
            await client.close()


async def test_an_idle_transceiver_exits_at_once_on_sigterm(cluster):
    """No calls to wait for: the drain ends in the same loop pass that pokes the heartbeat,
    whose cancel must not be lost (it once was, and the process hung)."""
    (transceiver,) = await cluster.transceivers(1)
    transceiver.send(signal.SIGTERM)
    assert await transceiver.wait_exit(5) == 0
    assert await records(cluster.redis.url) == {}


async def test_a_killed_transceiver_leaves_the_pool_and_calls_go_to_the_other(cluster):
    transceivers = by_address(await cluster.transceivers(2))
    (gateway,) = await cluster.gateways(1)
    client, owner = await call(gateway.url)
    try:
        survivor = transceivers.pop(owner)
        (victim,) = transceivers.values()  # the idle one: the gateway's first choice
        victim.send(signal.SIGKILL)
        killed = time.monotonic()
        # Its record is still there: the gateway picks it, fails, and tries the next one.
        status, answer, _ = await post_offer(gateway.url)
        assert status == 201 and owner_of(answer) == survivor.advertise
        await gateway.wait_log("transceiver failed", transceiver=victim.url)
        await wait_until(lambda: _absent(cluster.redis.url, victim.advertise), timeout=5)
        gone_after = time.monotonic() - killed
        print(f"the killed transceiver left the pool {gone_after:.1f} s after SIGKILL")
        assert gone_after < 5
        for _ in range(2):
            other, where = await call(gateway.url)
            await other.close()
            assert where == survivor.advertise
        assert await audio_flows(client), "the survivor's live call was disturbed"
    finally:
        await client.close()


async def _absent(redis_url: str, address: tuple[str, int]) -> bool:
    return address not in await records(redis_url)


async def test_sigterm_drains_a_transceiver_then_ends_the_last_call_at_the_grace(cluster):
    transceivers = by_address(await cluster.transceivers(2, "--drain-grace", "2"))
    (gateway,) = await cluster.gateways(1)
    client, owner = await call(gateway.url)
    try:
        draining = transceivers.pop(owner)
        (other,) = transceivers.values()
        draining.send(signal.SIGTERM)
        signalled = time.monotonic()
        await wait_until(lambda: _status_is(draining, "/readyz", 503), timeout=2)
        await wait_until(lambda: _draining(cluster.redis.url, owner), timeout=2)
        for _ in range(2):
            newcomer, where = await call(gateway.url)
            await newcomer.close()
            assert where == other.advertise
        assert await audio_flows(client), "the live call lost its audio while draining"

        # The grace runs out: the call is ended (DTLS close_notify reaches the client at once).
        await client.wait_state("closed", timeout=4)
        closed_after = time.monotonic() - signalled
        assert 1.9 < closed_after < 3.5, f"closed {closed_after:.1f} s after SIGTERM"
        assert await draining.wait_exit(3) == 0
        assert (await draining.wait_log("session closed"))["reason"] == "drain"
        assert (await draining.wait_log("drained"))["sessions_left"] == 1
        assert list(await records(cluster.redis.url)) == [other.advertise]
    finally:
        await client.close()


async def _status_is(transceiver: Transceiver, path: str, status: int) -> bool:
    return (await transceiver.get(path))[0] == status


async def _draining(redis_url: str, address: tuple[str, int]) -> bool:
    record = (await records(redis_url)).get(address)
    return record is not None and record.draining


async def test_without_redis_live_calls_go_on_and_new_ones_get_503_or_the_static_list(cluster):
    first, second = await cluster.transceivers(2)
    registry_only, with_fallback = await cluster.gateways(1) + await cluster.gateways(
        1, "--transceivers", f"{first.url},{second.url}"
    )
    client, _ = await call(registry_only.url)
    survivor, _ = await call(registry_only.url)
    try:
        cluster.redis.stop()
        assert await audio_flows(client, 1.0), "the live call lost its audio with Redis"
        status, body, _ = await post_offer(registry_only.url)
        assert status == 503 and "registry is unreachable" in body["error"]["message"]
        status, body = await mint(registry_only.url)
        assert status == 503 and "key store (Redis) is unreachable" in body["error"]["message"]
        status, body, _ = await post_offer(with_fallback.url)
        assert status == 201, body
        # The call's owner is unknown without Redis: the fallback gateway asks every transceiver.
        assert await delete(with_fallback.url + client.location) == 200
        await client.wait_state("closed", timeout=2)
        for transceiver in (first, second):
            await transceiver.wait_log(
                "registry unreachable: live calls go on, heartbeats keep retrying"
            )
            assert transceiver.process.poll() is None

        cluster.redis.start()  # the same port: everything finds it again
        await wait_until(lambda: _registered(cluster.redis.url, 2), timeout=3)
        await first.wait_log("registry reachable again")
        newcomer, _ = await call(registry_only.url)
        await newcomer.close()
        assert await audio_flows(survivor), "a live call lost its audio"
    finally:
        await client.close()
        await survivor.close()


async def _registered(redis_url: str, count: int) -> bool:
    return len(await records(redis_url)) == count


API_KEY = "sk-cluster-test"


async def test_any_gateway_replica_hangs_up_and_honours_keys_minted_by_another(cluster):
    transceivers = by_address(await cluster.transceivers(2))
    first, second = await cluster.gateways(2, env={"VOICEWIRE_API_KEYS": API_KEY})
    status, minted = await mint(first.url, {"Authorization": f"Bearer {API_KEY}"})
    assert status == 200
    status, body, _ = await post_offer(second.url, {"Authorization": "Bearer ek_forged"})
    assert status == 401, body
    status, answer, location = await post_offer(
        second.url, {"Authorization": f"Bearer {minted['value']}"}
    )
    assert status == 201, answer
    owner = transceivers.pop(owner_of(answer))
    (bystander,) = transceivers.values()
    assert (await owner.sessions(), await bystander.sessions()) == (1, 0)

    assert await delete(first.url + location) == 200
    assert await owner.sessions() == 0
    assert await delete(second.url + location) == 404
    assert await delete(second.url + "/v1/realtime/calls/rtc_nonsense") == 404
