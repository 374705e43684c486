"""API keys and ephemeral ``ek_`` keys, as OpenAI Realtime clients use them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from voicewire.agents.echo import EchoAgent
from voicewire.gateway.app import create_app
from voicewire.gateway.keys import KeyStore, Unauthorized
from voicewire.gateway.signaling import Signaling
from voicewire.transceiver.endpoint import TransceiverEndpoint
from voicewire.wire.routing_token import RoutingKeys

OFFER = (
    Path(__file__).resolve().parents[1] / "rtc" / "fixtures" / "chromium-audio-datachannel.sdp"
).read_text()
API_KEY = "sk-test-0123456789"
SDP = {"Content-Type": "application/sdp"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keyed():
    transceiver = TransceiverEndpoint(
        keys=RoutingKeys([(1, bytes(32))]), advertise=None, agent_factory=EchoAgent
    )
    await transceiver.listen(("127.0.0.1", 0))
    app = create_app(
        Signaling(transceiver, ("127.0.0.1", 3478)),
        lambda: True,
        [transceiver.metrics.registry],
        KeyStore((API_KEY,)),
    )
    async with TestClient(TestServer(app)) as client:
        yield client, transceiver
    transceiver.close()


async def error(response, status: int) -> str:
    assert response.status == status
    return (await response.json())["error"]["message"]


async def test_minting_needs_the_api_key(keyed):
    client, _ = keyed
    for headers in ({}, bearer("wrong"), {"Authorization": API_KEY}):
        await error(await client.post("/v1/realtime/client_secrets", headers=headers), 401)
    response = await client.post(
        "/v1/realtime/client_secrets",
        json={
            "expires_after": {"anchor": "created_at", "seconds": 60},
            "session": {"instructions": "x"},
        },
        headers=bearer(API_KEY),
    )
    assert response.status == 200
    minted = await response.json()
    assert minted["value"].startswith("ek_")
    assert abs(minted["expires_at"] - (time.time() + 60)) < 5
    assert minted["session"] == {"instructions": "x"}


@pytest.mark.parametrize(
    "body, words",
    [
        ({"expires_after": {"seconds": 5}}, "10..7200"),
        ({"expires_after": {"seconds": 7201}}, "10..7200"),
        ({"expires_after": {"seconds": "60"}}, "integer"),
        ({"expires_after": {"anchor": "later", "seconds": 60}}, "anchor"),
        ({"session": [1]}, "session"),
        ({"session": {"x": 1}}, "unknown parameter 'session.x'"),
    ],
)
async def test_bad_mint_requests(keyed, body, words):
    client, _ = keyed
    response = await client.post("/v1/realtime/client_secrets", json=body, headers=bearer(API_KEY))
    assert words in await error(response, 400)


async def test_calls_need_an_api_key_or_a_live_ephemeral_key(keyed):
    client, transceiver = keyed
    for headers in ({}, bearer("wrong"), bearer("ek_forged")):
        response = await client.post("/v1/realtime/calls", data=OFFER, headers={**SDP, **headers})
        await error(response, 401)
    assert transceiver.session_count == 0

    direct = await client.post("/v1/realtime/calls", data=OFFER, headers={**SDP, **bearer(API_KEY)})
    assert direct.status == 201

    minted = await (
        await client.post(
            "/v1/realtime/client_secrets",
            json={"session": {"instructions": "from the key"}},
            headers=bearer(API_KEY),
        )
    ).json()
    response = await client.post(
        "/v1/realtime/calls", data=OFFER, headers={**SDP, **bearer(minted["value"])}
    )
    assert response.status == 201
    call_id = response.headers["Location"].rsplit("/", 1)[1]
    assert transceiver._calls[call_id].call.session["instructions"] == "from the key"


async def test_an_ephemeral_key_works_until_it_expires_and_not_after():
    keys = KeyStore((API_KEY,))
    key = await keys.mint(10, {"a": 1}, now=1000.0)
    assert await keys.authorize_call(f"Bearer {key.value}", now=1009.9) == {"a": 1}
    with pytest.raises(Unauthorized):
        await keys.authorize_call(f"Bearer {key.value}", now=1010.0)
    await keys.mint(10, {}, now=2000.0)  # minting forgets expired keys
    with pytest.raises(Unauthorized):
        await keys.authorize_call(f"Bearer {key.value}", now=1005.0)


async def test_an_ephemeral_key_cannot_mint():
    keys = KeyStore((API_KEY,))
    key = await keys.mint(60, {}, now=0.0)
    with pytest.raises(Unauthorized):
        keys.check_api_key(f"Bearer {key.value}")


async def test_open_mode_allows_everything_but_still_honours_ephemeral_keys():
    keys = KeyStore(())
    assert keys.open
    keys.check_api_key(None)
    assert await keys.authorize_call(None, now=0.0) == {}
    key = await keys.mint(60, {"s": 1}, now=0.0)
    assert await keys.authorize_call(f"Bearer {key.value}", now=1.0) == {"s": 1}
    with pytest.raises(Unauthorized):
        await keys.authorize_call(f"Bearer {key.value}", now=61.0)
