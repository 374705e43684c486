"""The transceiver's internal API over real HTTP, against a real endpoint on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from voicewire.agents.echo import EchoAgent
from voicewire.gateway.signaling import Signaling
from voicewire.transceiver import internal_api
from voicewire.transceiver.endpoint import TransceiverEndpoint
from voicewire.wire.routing_token import RoutingKeys

OFFER = (
    Path(__file__).resolve().parents[1] / "rtc" / "fixtures" / "chromium-audio-datachannel.sdp"
).read_text()
SESSIONS = internal_api.SESSIONS


@pytest.fixture
async def api():
    endpoint = TransceiverEndpoint(
        keys=RoutingKeys([(1, bytes(32))]), advertise=None, agent_factory=EchoAgent
    )
    await endpoint.listen(("127.0.0.1", 0))
    changes: list[None] = []
    app = internal_api.create_app(
        Signaling(endpoint, ("127.0.0.1", 3478)),
        lambda: not endpoint.draining,
        [endpoint.metrics.registry],
        changed=lambda: changes.append(None),
    )
    async with TestClient(TestServer(app)) as client:
        yield client, endpoint, changes
    endpoint.close()


async def error(response, status: int) -> str:
    assert response.status == status
    return (await response.json())["error"]["message"]


async def test_an_offer_opens_a_session_and_delete_ends_it(api):
    client, endpoint, changes = api
    response = await client.post(SESSIONS, json={"sdp": OFFER, "session": {"instructions": "x"}})
    assert response.status == 201
    body = await response.json()
    assert body["call_id"].startswith("rtc_") and "a=ice-lite" in body["sdp"]
    assert " 127.0.0.1 3478 typ host" in body["sdp"]
    assert endpoint.session_count == 1 and len(changes) == 1

    assert (await client.delete(f"{SESSIONS}/{body['call_id']}")).status == 204
    assert endpoint.indexes_empty() and len(changes) == 2
    assert "no such call" in await error(await client.delete(f"{SESSIONS}/{body['call_id']}"), 404)


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{", 400, "not JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"session": {}}', 400, "'sdp'"),
        (b'{"sdp": "v=0", "session": []}', 400, "'session'"),
        (b'{"sdp": "v=0\\r\\nnonsense"}', 400, "malformed or unsupported SDP"),
    ],
    ids=["not-json", "not-object", "no-sdp", "bad-session", "bad-sdp"],
)
async def test_bad_requests_are_json_errors(api, body, status, words):
    client, endpoint, changes = api
    response = await client.post(SESSIONS, data=body, headers={"Content-Type": "application/json"})
    assert words in await error(response, status)
    assert endpoint.indexes_empty() and not changes


async def test_a_draining_transceiver_refuses_with_503_and_is_not_ready(api):
    client, endpoint, _ = api
    endpoint.draining = True
    assert "draining" in await error(await client.post(SESSIONS, json={"sdp": OFFER}), 503)
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200
    assert "voicewire_transceiver_sessions" in await (await client.get("/metrics")).text()
