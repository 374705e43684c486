"""The transceiver's datagram boundary: anything a relay (or a stranger) sends is dropped and
counted, never raised, and never leaves state behind."""

from __future__ import annotations

import asyncio
import gc
import weakref

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicewire.agents.echo import EchoAgent
from voicewire.transceiver.endpoint import TransceiverEndpoint
from voicewire.transceiver.session_request import SessionRequest
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

REQUEST = SessionRequest(
    remote_ufrag="cli1",
    remote_fingerprints=(("sha-256", ":".join(["AB"] * 32)),),
    remote_setup="actpass",
    audio_payload_type=111,
)
payloads = st.binary(max_size=300)
headers = st.sampled_from(
    [b"", relay_header.encode("198.51.100.7", 5000), relay_header.encode("2001:db8::1", 5000)]
)


@settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    max_examples=300,
)
@given(datagrams=st.lists(st.tuples(headers, payloads), max_size=8))
def test_any_datagram_is_dropped_or_handled_never_raised(datagrams):
    async def run() -> None:
        endpoint = TransceiverEndpoint(
            keys=RoutingKeys([(1, bytes(32))]), advertise=None, agent_factory=EchoAgent
        )
        await endpoint.listen(("127.0.0.1", 0))
        try:
            grant = endpoint.open_session(REQUEST)
            for header, payload in datagrams:
                endpoint.datagram_received(header + payload, ("127.0.0.1", 3479))
            assert endpoint.session_count == 1
            assert endpoint.end_session(grant.call_id)
            assert endpoint.indexes_empty()
        finally:
            endpoint.close()

    asyncio.run(run())


def test_an_ended_session_is_freed_by_reference_counting_alone():
    """Nothing keeps a closed call's state, not even a reference cycle: that would leave its
    codec states, OpenSSL connection and buffers to the cyclic collector's rare full pass."""

    async def run() -> None:
        agents: weakref.WeakSet[EchoAgent] = weakref.WeakSet()

        def agent_factory() -> EchoAgent:
            agent = EchoAgent()
            agents.add(agent)
            return agent

        endpoint = TransceiverEndpoint(
            keys=RoutingKeys([(1, bytes(32))]), advertise=None, agent_factory=agent_factory
        )
        await endpoint.listen(("127.0.0.1", 0))
        try:
            grant = endpoint.open_session(REQUEST)
            assert len(agents) == 1
            gc.disable()
            try:
                assert endpoint.end_session(grant.call_id)
                assert len(agents) == 0, "the ended call's state is still referenced"
            finally:
                gc.enable()
        finally:
            endpoint.close()

    asyncio.run(run())
