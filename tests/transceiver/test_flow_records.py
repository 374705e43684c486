"""What the endpoint tells its flow records (``cluster/flows.py``), and whom it takes datagrams
from: in process, with ICE checks built by aioice as a client would send them."""

from __future__ import annotations

import asyncio

from aioice import stun as aioice_stun
from prometheus_client import generate_latest

from voicewire.agents.echo import EchoAgent
from voicewire.relay.allow_list import AllowList
from voicewire.transceiver.endpoint import TransceiverEndpoint
from voicewire.transceiver.session_request import SessionGrant, SessionRequest
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

REQUEST = SessionRequest(
    remote_ufrag="cli1",
    remote_fingerprints=(("sha-256", ":".join(["AB"] * 32)),),
    remote_setup="actpass",
    audio_payload_type=111,
)
CLIENT = ("198.51.100.7", 50000)
RELAY = ("127.0.0.1", 3479)


class RecordedFlows:
    """Stands in for ``FlowPublisher``: the owned addresses, as Redis would end up holding them."""

    def __init__(self) -> None:
        self.owned: set[tuple[str, int]] = set()
        self.forgotten: list[tuple[str, int]] = []

    def announce(self, client: tuple[str, int]) -> None:
        self.owned.add(client)

    def forget(self, client: tuple[str, int]) -> None:
        self.owned.discard(client)
        self.forgotten.append(client)


def check(grant: SessionGrant) -> bytes:
    """The client's authenticated ICE check (RFC 8445 §7.2.2), built like aioice builds it."""
    request = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{grant.ice_ufrag}:{REQUEST.remote_ufrag}"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = 0x1234_5678_9ABC_DEF0
    request.add_message_integrity(grant.ice_pwd.encode())
    return bytes(request)


def test_validated_addresses_are_announced_and_forgotten_only_by_their_owner():
    async def run() -> None:
        endpoint = TransceiverEndpoint(
            keys=RoutingKeys([(1, bytes(32))]), advertise=None, agent_factory=EchoAgent
        )
        await endpoint.listen(("127.0.0.1", 0))
        flows = endpoint.flows = RecordedFlows()  # type: ignore[assignment]
        try:
            first = endpoint.open_session(REQUEST)
            endpoint.datagram_received(relay_header.encode(*CLIENT) + check(first), RELAY)
            assert flows.owned == {CLIENT}
            # The client reuses its port for a new call before the first one ends.
            second = endpoint.open_session(REQUEST)
            endpoint.datagram_received(relay_header.encode(*CLIENT) + check(second), RELAY)
            endpoint.end_session(first.call_id)
            assert flows.owned == {CLIENT} and flows.forgotten == []  # the second call's now
            endpoint.end_session(second.call_id)
            assert flows.owned == set() and flows.forgotten == [CLIENT]
            assert endpoint.indexes_empty()
        finally:
            endpoint.close()

    asyncio.run(run())


def test_datagrams_from_outside_the_relay_networks_are_dropped_first():
    async def run() -> None:
        endpoint = TransceiverEndpoint(
            keys=RoutingKeys([(1, bytes(32))]),
            advertise=None,
            agent_factory=EchoAgent,
            allow_relays=AllowList.parse("10.1.0.0/16"),
        )
        await endpoint.listen(("127.0.0.1", 0))
        flows = endpoint.flows = RecordedFlows()  # type: ignore[assignment]
        try:
            grant = endpoint.open_session(REQUEST)
            for relay in (RELAY, ("::ffff:127.0.0.1", 3479, 0, 0), ("10.2.0.1", 3479)):
                endpoint.datagram_received(relay_header.encode(*CLIENT) + check(grant), relay)
            assert flows.owned == set()  # the check never reached the session
            endpoint.datagram_received(
                relay_header.encode(*CLIENT) + check(grant), ("::ffff:10.1.2.3", 3479, 0, 0)
            )
            assert flows.owned == {CLIENT}
            metrics = generate_latest(endpoint.metrics.registry).decode()
            assert 'voicewire_transceiver_drops_total{reason="not_allowed"} 3.0' in metrics
        finally:
            endpoint.close()

    asyncio.run(run())
