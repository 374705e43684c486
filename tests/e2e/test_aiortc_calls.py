"""Calls from aiortc (an independent ICE/DTLS/SRTP stack) through relay, transceiver and agent."""

from __future__ import annotations

import asyncio
import gc
import re
import time
import weakref

import numpy as np
import pytest

from tests.e2e.aiortc_client import (
    FRAME,
    RATE,
    CallClient,
    decode_opus,
    point_candidate_at,
)
from tests.e2e.transceiver_checks import closed_count, sessions_ended
from tests.e2e.udp_nat import UdpNat
from voicewire.agents.echo import EchoAgent
from voicewire.serve import EmbeddedStack
from voicewire.transceiver.endpoint import DTLS_ROLES


def burst_signal(seconds: float = 3.0, seed: int = 7) -> np.ndarray:
    """Noise bursts switched on and off at random per 20 ms: an envelope nothing else has."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE / FRAME)
    gates = np.repeat(rng.random(frames) < 0.5, FRAME)
    return (rng.normal(0, 6000, frames * FRAME) * gates).clip(-32000, 32000)


def envelope(pcm: np.ndarray) -> np.ndarray:
    """Mean magnitude per millisecond."""
    usable = len(pcm) // 48 * 48
    return np.abs(pcm[:usable]).reshape(-1, 48).mean(axis=1)


def path_delay(client: CallClient, signal: np.ndarray) -> tuple[float, float]:
    """(delay in seconds, correlation) of the signal in what came back, placed by arrival time."""
    start = client.track.signal_sent_at
    assert start is not None
    received = np.zeros(int(5 * RATE))
    packets = [(arrival, payload) for arrival, _, payload in client.received if arrival >= start]
    for (arrival, _), pcm in zip(packets, decode_opus([p for _, p in packets]), strict=True):
        offset = int((arrival - start) * RATE)
        if offset + len(pcm) <= len(received):
            received[offset : offset + len(pcm)] += pcm
    sent, back = envelope(signal), envelope(received)
    scores = [np.corrcoef(sent, back[lag : lag + len(sent)])[0, 1] for lag in range(500)]
    best = int(np.argmax(scores))
    return best / 1000, float(scores[best])


async def connected_client(stack, **kwargs) -> CallClient:
    client = CallClient()
    await client.call(stack.url, **kwargs)
    await client.wait_state("connected")
    return client


async def test_echo_returns_the_signal_within_100_ms(stack):
    client = await connected_client(stack)
    try:
        assert "a=setup:active" in client.pc.remoteDescription.sdp  # the default role
        await asyncio.sleep(0.5)  # let both directions settle
        signal = burst_signal()
        client.track.play(signal)
        await asyncio.sleep(len(signal) / RATE + 1.0)
        delay, correlation = path_delay(client, signal)
        print(f"path delay {delay * 1000:.0f} ms, correlation {correlation:.2f}")
        assert correlation > 0.7, f"the signal did not come back (best correlation {correlation})"
        assert delay < 0.100, f"path delay {delay * 1000:.0f} ms"
        stats = stack.transceiver.call_stats(client.location.rsplit("/", 1)[1])
        assert stats.packets_received > 150 and stats.packets_sent > 150
    finally:
        await client.close()


async def test_as_the_dtls_server_audio_flows_both_ways(stack):
    """``--dtls-setup passive``: aiortc's offer says actpass, so the role is ours to choose."""
    stack.transceiver.dtls_role = DTLS_ROLES["passive"]
    client = await connected_client(stack)
    try:
        assert "a=setup:passive" in client.pc.remoteDescription.sdp
        await asyncio.sleep(1.5)
        stats = stack.transceiver.call_stats(client.location.rsplit("/", 1)[1])
        assert stats.packets_received > 50 and stats.packets_sent > 50, stats
        assert len(client.received) > 50  # the echo reached the client
    finally:
        await client.close()


async def test_hang_up_frees_every_index_and_stops_the_audio(stack):
    client = await connected_client(stack)
    try:
        await asyncio.sleep(0.5)
        assert stack.transceiver.session_count == 1
        assert await client.hang_up() == 200
        assert stack.transceiver.indexes_empty()
        await asyncio.sleep(0.2)
        count = len(client.received)
        await asyncio.sleep(0.5)
        assert len(client.received) == count, "audio kept coming after the hang-up"
    finally:
        await client.close()


async def test_an_ended_call_is_freed_by_reference_counting_alone():
    """After a hang-up nothing keeps the call's state (agent, Call, session with its codecs,
    DTLS and SRTP) alive, not even a reference cycle waiting for the cyclic collector."""
    agents: weakref.WeakSet[EchoAgent] = weakref.WeakSet()

    def agent_factory() -> EchoAgent:
        agent = EchoAgent()
        agents.add(agent)
        return agent

    async with EmbeddedStack(
        http=("127.0.0.1", 0), udp=("127.0.0.1", 0), agent_factory=agent_factory
    ) as stack:
        client = await connected_client(stack)
        try:
            await asyncio.sleep(0.5)  # audio both ways: the agent, codecs and SRTP all at work
            assert len(agents) == 1
            gc.disable()
            try:
                assert await client.hang_up() == 200
                deadline = time.monotonic() + 5
                while agents and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # the agent's task returns once its call ends
                assert len(agents) == 0, "the ended call's state is still referenced"
            finally:
                gc.enable()
        finally:
            await client.close()


def wrong_fingerprint(offer: str) -> str:
    """Every offered fingerprint replaced by one of the same hash that no certificate has."""
    return re.sub(
        r"^(a=fingerprint:\S+) (\S+)",
        lambda m: f"{m.group(1)} " + ":".join(["AB"] * len(m.group(2).split(":"))),
        offer,
        flags=re.M,
    )


async def test_wrong_dtls_fingerprint_fails_the_session_with_no_media(stack):
    client = CallClient()
    try:
        await client.call(stack.url, edit_offer=wrong_fingerprint)
        await sessions_ended(stack, timeout=10)
        assert stack.transceiver.indexes_empty()
        assert closed_count(stack, "dtls_failed") == 1
        assert client.received == []
    finally:
        await client.close()


@pytest.mark.parametrize("stack", [{"consent_timeout": 2.0}], indirect=True)
async def test_consent_expiry_closes_a_vanished_client(stack):
    nat = await UdpNat.start(stack.public)
    client = CallClient()
    try:
        await client.call(stack.url, edit_answer=point_candidate_at(nat.address))
        await client.wait_state("connected")
        nat.blackhole()  # the client disappears without a goodbye
        waited = await sessions_ended(stack, timeout=6)
        assert stack.transceiver.indexes_empty(), "the session outlived its consent"
        assert 1.0 < waited < 4.0, f"closed after {waited:.1f} s; the consent timeout is 2 s"
        assert closed_count(stack, "consent_lost") == 1
    finally:
        await client.close()
        nat.close()


async def test_client_that_changes_address_keeps_its_audio(stack):
    nat = await UdpNat.start(stack.public)
    client = CallClient()
    try:
        await client.call(stack.url, edit_answer=point_candidate_at(nat.address))
        await client.wait_state("connected")
        await asyncio.sleep(1.0)
        assert len(client.received) > 20, "no echo before the move"
        old_port = nat.upstream_address[1]
        await nat.rebind()  # the client's NAT gives it a new public port mid-call
        assert nat.upstream_address[1] != old_port
        moved_at = time.monotonic()
        deadline = moved_at + 15
        while time.monotonic() < deadline:
            after = [arrival for arrival, _, _ in client.received if arrival > moved_at + 0.1]
            if len(after) >= 50:  # a second of echo from the new address
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the audio never came back after the address change")
        assert stack.transceiver.session_count == 1  # the same call, not a new one
        assert client.pc.connectionState == "connected"
    finally:
        await client.close()
        nat.close()
