"""The gateway's HTTP contract, over real HTTP, against a real in-process transceiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from voicewire.agents.echo import EchoAgent
from voicewire.gateway.app import MAX_OFFER_BYTES, create_app
from voicewire.gateway.keys import KeyStore
from voicewire.gateway.signaling import Signaling
from voicewire.rtc import sdp
from voicewire.transceiver.endpoint import TransceiverEndpoint
from voicewire.wire.routing_token import RoutingKeys

FIXTURES = Path(__file__).resolve().parents[1] / "rtc" / "fixtures"
OFFER = (FIXTURES / "chromium-audio-datachannel.sdp").read_text()
RELAY = ("127.0.0.1", 3478)


@pytest.fixture
async def transceiver():
    endpoint = TransceiverEndpoint(
        keys=RoutingKeys([(1, bytes(32))]), advertise=None, agent_factory=EchoAgent, max_sessions=2
    )
    await endpoint.listen(("127.0.0.1", 0))
    yield endpoint
    endpoint.close()


@pytest.fixture
async def client(transceiver):
    app = create_app(
        Signaling(transceiver, RELAY), lambda: True, [transceiver.metrics.registry], KeyStore(())
    )
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def assert_error(response, status: int, words: str) -> None:
    assert response.status == status
    body = await response.json()
    assert set(body["error"]) >= {"type", "message"}
    assert words in body["error"]["message"]


async def test_offer_gets_an_answer_naming_only_the_relay(client, transceiver):
    response = await client.post(
        "/v1/realtime/calls", data=OFFER, headers={"Content-Type": "application/sdp"}
    )
    assert response.status == 201
    assert response.content_type == "application/sdp"
    call_id = response.headers["Location"].rsplit("/", 1)[1]
    assert response.headers["Location"] == f"/v1/realtime/calls/{call_id}"
    answer = await response.text()
    candidates = [line for line in answer.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(" 127.0.0.1 3478 typ host" in line for line in candidates)
    assert "a=ice-lite" in answer
    ufrag = next(line for line in answer.splitlines() if line.startswith("a=ice-ufrag:"))[12:]
    assert transceiver.keys.verify(ufrag).transceiver[1] > 0  # the routing token
    assert transceiver.session_count == 1

    assert (await client.delete(f"/v1/realtime/calls/{call_id}")).status == 200
    assert transceiver.indexes_empty()
    await assert_error(await client.delete(f"/v1/realtime/calls/{call_id}"), 404, "no such call")


async def test_multipart_offer_with_session_config(client, transceiver):
    form = FormData(default_to_multipart=True)
    form.add_field("sdp", OFFER)
    form.add_field("session", json.dumps({"type": "realtime", "instructions": "be brief"}))
    response = await client.post("/v1/realtime/calls", data=form)
    assert response.status == 201
    sdp.parse_offer(OFFER)  # the fixture itself is fine; the answer must be too
    assert "a=ice-lite" in await response.text()


async def test_whip(client, transceiver):
    response = await client.post("/whip", data=OFFER, headers={"Content-Type": "application/sdp"})
    assert response.status == 201
    location = response.headers["Location"]
    assert location.startswith("/whip/")
    await assert_error(await client.patch(location, data="x"), 405, "trickle")
    options = await client.options("/whip")
    assert options.status == 204 and "application/sdp" in options.headers["Accept-Post"]
    assert (await client.delete(location)).status == 200
    assert transceiver.indexes_empty()


@pytest.mark.parametrize(
    "body, content_type, status, words",
    [
        ("v=0\r\nnonsense", "application/sdp", 400, "malformed or unsupported SDP"),
        (OFFER.replace("opus", "speex"), "application/sdp", 400, "Opus"),
        (OFFER, "text/plain", 415, "application/sdp"),
        ("v=0\r\n" + "a=x\r\n" * (MAX_OFFER_BYTES // 5), "application/sdp", 413, "larger"),
        (b"\xff\xfe", "application/sdp", 400, "UTF-8"),
    ],
    ids=["malformed", "no-opus", "content-type", "too-large", "not-utf8"],
)
async def test_bad_offers_get_clear_json_errors(
    client, transceiver, body, content_type, status, words
):
    response = await client.post(
        "/v1/realtime/calls", data=body, headers={"Content-Type": content_type}
    )
    await assert_error(response, status, words)
    assert transceiver.indexes_empty()


async def test_bad_multipart(client):
    form = FormData()
    form.add_field("session", "{}")
    await assert_error(await client.post("/v1/realtime/calls", data=form), 400, "'sdp'")
    form = FormData()
    form.add_field("sdp", OFFER)
    form.add_field("session", "[1, 2")
    await assert_error(await client.post("/v1/realtime/calls", data=form), 400, "not JSON")
    form = FormData()
    form.add_field("sdp", OFFER)
    form.add_field("session", json.dumps({"audio": {"input": {"turn_detection": "on"}}}))
    await assert_error(
        await client.post("/v1/realtime/calls", data=form),
        400,
        "'session.audio.input.turn_detection' must be an object",
    )


async def test_full_transceiver_answers_503(client, transceiver):
    for _ in range(2):
        ok = await client.post(
            "/v1/realtime/calls", data=OFFER, headers={"Content-Type": "application/sdp"}
        )
        assert ok.status == 201
    response = await client.post(
        "/v1/realtime/calls", data=OFFER, headers={"Content-Type": "application/sdp"}
    )
    await assert_error(response, 503, "capacity")


async def test_health_readiness_metrics_and_page(client):
    assert await (await client.get("/healthz")).text() == "ok\n"
    assert (await client.get("/readyz")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "voicewire_transceiver_sessions" in metrics
    page = await client.get("/")
    assert page.status == 200 and "<html" in (await page.text()).lower()
