"""Flow recovery and the relay allow-list, with real processes on loopback.

Transceivers started with ``--redis`` write which client addresses they own; a relay started
with ``--redis`` reads them for clients it has no flow for (``relay/flow_recovery.py``). Here a
relay is SIGKILLed under a live aiortc call and a new one started on the same ports, with and
without recovery, and the gap in the audio the client receives is measured; then the defences:
a poisoned record is never forwarded to, junk cannot turn into a lookup flood, records are
deleted when calls end, and a transceiver takes datagrams only from its relays.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import redis as redis_py
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.services import ROUTING_KEYS, Transceiver
from tests.cluster.test_cluster_calls import audio_flows, call, wait_until
from tests.e2e.aiortc_client import CallClient
from tests.relay.relay_process import RelayProcess, nothing_arrives, udp
from tests.relay.stun_requests import binding_request
from voicewire.cluster.flow_keys import address_text, flow_key
from voicewire.relay.flow_recovery import HOLD
from voicewire.wire import relay_header

RTP = b"\x80\x6f" + bytes(170)
LEARNED_FROM = ("redis", "stun", "downstream")
WAIT_WITHOUT_RECOVERY = 8.0  # aiortc's consent checks come every 4-6 s (RFC 7675 §5.1)


class Restart(NamedTuple):
    """Seconds from the new relay's readiness, and from its start, to the first audio the
    client received after the kill; and the gap in that audio."""

    after_ready: float
    after_start: float
    gap: float
    relay: RelayProcess

    def __str__(self) -> str:
        return (
            f"audio back {self.after_ready * 1000:.0f} ms after the new relay was ready "
            f"({self.after_start * 1000:.0f} ms after it was started), "
            f"a {self.gap * 1000:.0f} ms gap; flows learned from "
            + ", ".join(f"{source}: {self.learned(source):.0f}" for source in LEARNED_FROM)
        )

    def learned(self, source: str) -> float:
        return self.relay.metric("voicewire_relay_flows_learned_total", source=source)


async def restart_relay_mid_call(start_relay, clusters, *flags: str) -> Restart:
    """A call through a relay that is SIGKILLed and started again on the same ports."""
    relay = start_relay(*flags)
    cluster = clusters(relay)
    await cluster.transceivers(1)
    (gateway,) = await cluster.gateways(1)
    client, _ = await call(gateway.url)
    try:
        assert await audio_flows(client)
        public, internal = address_text(relay.public), address_text(relay.internal[0])
        relay.kill()
        killed = time.monotonic()
        await asyncio.sleep(0.3)  # the call goes on at both ends: consent lasts 30 s
        restarted = await asyncio.to_thread(  # off the loop: the client keeps sending
            start_relay, "--listen", public, "--internal", internal, *flags
        )
        # From the new relay's start: the old worker outlives its supervisor by a moment.
        resumed = await first_audio_after(client, restarted.spawned_at, WAIT_WITHOUT_RECOVERY)
        assert await audio_flows(client)
        before = max(arrival for arrival, *_ in client.received if arrival < killed + 0.1)
        return Restart(
            resumed - restarted.ready_at,
            resumed - restarted.spawned_at,
            resumed - before,
            restarted,
        )
    finally:
        await client.close()


async def first_audio_after(client: CallClient, moment: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        later = [arrival for arrival, *_ in client.received if arrival > moment]
        if later:
            return later[0]
        assert time.monotonic() < deadline, f"no audio {timeout} s after the restart"
        await asyncio.sleep(0.005)


async def test_a_restarted_relay_recovers_the_call_from_redis_at_once(start_relay, clusters, redis):
    restart = await restart_relay_mid_call(start_relay, clusters, "--redis", redis.url)
    print(f"with flow recovery: {restart}")
    assert restart.after_ready < 0.2
    assert restart.relay.metric("voicewire_relay_flow_lookups_total") >= 1
    # Redis taught the flow, no STUN needed; once in a few hundred runs the transceiver's RTCP
    # report (every 2.5-7.5 s) lands in the few milliseconds before the lookup's answer.
    assert (restart.learned("redis"), restart.learned("stun")) == (1, 0) or restart.learned(
        "downstream"
    )


async def test_without_recovery_a_restarted_relay_waits_for_stun_or_downstream(
    start_relay, clusters
):
    restart = await restart_relay_mid_call(start_relay, clusters)
    print(f"without flow recovery: {restart}")
    relay = restart.relay
    assert relay.metric("voicewire_relay_drops_total", reason="unknown_flow") > 0
    assert relay.metric("voicewire_relay_flow_lookups_total") == 0


def records(url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(url, decode_responses=True)


def key_of(client) -> str:
    return flow_key(0, client.getsockname())


def test_a_record_naming_an_address_outside_the_allow_list_is_never_used(start_relay, redis):
    relay = start_relay("--redis", redis.url, "--allow-transceivers", "127.0.0.1/32")
    transceiver, outside = udp("127.0.0.1"), udp("127.0.0.2")
    honest, poisoned, garbled = udp(), udp(), udp()
    store = records(redis.url)
    store.set(key_of(honest), address_text(transceiver.getsockname()))
    store.set(key_of(poisoned), address_text(outside.getsockname()))
    store.set(key_of(garbled), "\xff not an address")

    for client in (honest, poisoned, garbled):
        client.sendto(RTP, relay.public)
    data = transceiver.recv(4096)  # the honest record works: the test is not vacuous
    assert data == relay_header.encode(*honest.getsockname()) + RTP
    relay.wait_metric("voicewire_relay_flow_lookup_results_total", 2, result="refused")
    for _ in range(10):
        poisoned.sendto(RTP, relay.public)
    assert nothing_arrives(outside)
    assert nothing_arrives(transceiver, 0.05)
    relay.wait_metric("voicewire_relay_drops_total", 2, reason="not_allowed")
    relay.wait_metric("voicewire_relay_drops_total", 10, reason="unknown_flow")  # not asked again
    assert relay.metric("voicewire_relay_flow_lookups_total") == 3
    assert relay.metric("voicewire_relay_flows") == 1


def test_junk_from_an_unknown_client_asks_redis_a_handful_of_times(start_relay, redis):
    relay = start_relay("--redis", redis.url)
    store = records(redis.url)
    store.config_resetstat()
    junk = udp()
    for _ in range(1000):
        junk.sendto(RTP, relay.public)
        time.sleep(0.0005)  # half a second of it, at 2000 datagrams a second
    deadline = time.monotonic() + 3
    while (dropped := _dropped(relay)) < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dropped == 1000
    lookups = relay.metric("voicewire_relay_flow_lookups_total")
    mgets = store.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    print(f"1000 junk datagrams: {lookups:.0f} lookups, {mgets} MGETs")
    assert 1 <= lookups <= 3 and 1 <= mgets <= lookups  # answered in batches
    assert relay.metric("voicewire_relay_drops_total", reason="recovering") <= 1000 - HOLD


def _dropped(relay: RelayProcess) -> float:
    return sum(
        relay.metric("voicewire_relay_drops_total", reason=reason)
        for reason in ("unknown_flow", "recovering", "lookup_rate_limited")
    )


async def test_a_calls_flow_records_live_as_long_as_the_call(cluster):
    (transceiver,) = await cluster.transceivers(1)
    (gateway,) = await cluster.gateways(1)
    store = records(cluster.redis.url)
    client, _ = await call(gateway.url)
    try:
        keys = store.keys("voicewire:flow:0:*")
        assert keys, "no flow record for a connected call"
        assert {store.get(key) for key in keys} == {address_text(transceiver.advertise)}
        assert all(0 < store.pttl(key) <= 60_000 for key in keys)
        assert await client.hang_up() == 200
        await wait_until(lambda: _none_left(store), timeout=2)
    finally:
        await client.close()


async def _none_left(store: redis_py.Redis) -> bool:
    return not store.keys("voicewire:flow:*")


async def test_a_transceiver_takes_datagrams_only_from_its_relays(cluster):
    (transceiver,) = await cluster.transceivers(1, "--allow-relays", "127.0.0.1/32", redis=False)
    client = ("198.51.100.7", 50000)
    stun = binding_request(ROUTING_KEYS.issue(transceiver.advertise))
    stranger, relay = udp("127.0.0.2"), udp("127.0.0.1")
    stranger.sendto(relay_header.encode(*client) + stun, transceiver.advertise)
    relay.sendto(relay_header.encode(*client) + stun, transceiver.advertise)
    await wait_until(lambda: _drops_are(transceiver, not_allowed=1, unknown_session=1), 2)
    assert nothing_arrives(stranger, 0.05)


async def _drops_are(transceiver: Transceiver, **expected: float) -> bool:
    _, text = await transceiver.get("/metrics")
    drops = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "voicewire_transceiver_drops_total"
    }
    return all(drops.get(reason) == value for reason, value in expected.items())
