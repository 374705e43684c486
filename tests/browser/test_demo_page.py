"""The demo page against the real ``voicewire serve``: connect, hear the echo, hang up, fail well.

What a person does by hand — open the page, click Connect, talk, hear themselves, hang up — done
by headless Chromium with a looped speech file as its microphone. Everything runs on loopback.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from playwright.async_api import Response, Route, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Demo

CALLS_PATH = "/v1/realtime/calls"
SILENCE = 0.01  # audioLevel is linear in 0..1 (1 = full scale): 0.01 is -40 dBFS
ECHO_DEADLINE = 3.0  # seconds from connected to hearing the echo

# Reads the inbound audio stream straight from the browser's own stats, not the page's.
INBOUND_AUDIO = """async () => {
  for (const s of (await window.voicewire.pc.getStats()).values()) {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      return {packetsReceived: s.packetsReceived, audioLevel: s.audioLevel || 0};
    }
  }
  return {packetsReceived: 0, audioLevel: 0};
}"""

# How many pixels of the chart canvas have ink on them.
INKED_PIXELS = """() => {
  const canvas = document.getElementById("chart");
  const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i]) inked++;
  return inked;
}"""


def is_call_post(response: Response) -> bool:
    return response.request.method == "POST" and urlsplit(response.url).path == CALLS_PATH


async def connect(demo: Demo) -> tuple[Response, float]:
    """Click Connect; return the signaling response and the moment the page showed connected."""
    async with demo.page.expect_response(is_call_post) as posted:
        await demo.page.click("#connect")
    response = await posted.value
    await expect(demo.page.locator("#state")).to_have_text("connected", timeout=10_000)
    return response, time.monotonic()


async def test_page_loads_without_console_errors(demo: Demo) -> None:
    await demo.open()

    await expect(demo.page).to_have_title("voicewire demo")
    await expect(demo.page.locator("#state")).to_have_text("idle")
    await expect(demo.page.locator("#connect")).to_be_enabled()
    await expect(demo.page.locator("#hangup")).to_be_disabled()
    await expect(demo.page.locator("#error")).to_be_hidden()
    api = await demo.page.evaluate(
        "() => Object.fromEntries(Object.keys(window.voicewire)"
        ".map((k) => [k, typeof window.voicewire[k]]))"
    )
    assert api == {
        "connect": "function",
        "hangup": "function",
        "pc": "object",  # null until the first call
        "stats": "object",
        "events": "object",
        "setupMs": "object",
    }
    assert await demo.page.evaluate(INKED_PIXELS) > 0, "the empty chart has no axes"
    assert demo.problems == []


async def test_connect_hears_the_echo_and_draws_stats(demo: Demo, tmp_path: Path) -> None:
    await demo.open()
    response, connected_at = await connect(demo)

    # The signaling contract the page relies on (DESIGN §6), with a key the page minted.
    authorization = (await response.request.all_headers())["authorization"]
    assert authorization.startswith("Bearer ek_")
    assert response.status == 201
    assert response.headers["content-type"].split(";")[0].strip() == "application/sdp"
    assert re.fullmatch(CALLS_PATH + r"/[^/]+", urlsplit(response.headers["location"]).path)
    answer = await response.text()
    assert "a=ice-lite" in answer
    assert re.search(r"^a=candidate:\S+ 1 udp \d+ \S+ \d+ typ host", answer, re.M | re.I)
    assert "m=application" in answer, "the offer had a data channel: the answer must accept it"

    # Within 3 s of connecting, the echo of the fake microphone comes back, above silence.
    loudest, inbound = 0.0, {}
    while time.monotonic() - connected_at < ECHO_DEADLINE:
        inbound = await demo.page.evaluate(INBOUND_AUDIO)
        loudest = max(loudest, inbound["audioLevel"])
        if inbound["packetsReceived"] > 0 and loudest > SILENCE:
            break
        await demo.page.wait_for_timeout(50)
    assert inbound["packetsReceived"] > 0, "no audio came back"
    assert loudest > SILENCE, f"only silence came back (loudest audioLevel {loudest})"

    # The oai-events data channel opened and the server greeted it (RFC 8831/8832 over DTLS).
    created = await demo.wait_for(
        "() => window.voicewire.events.map((e) => e.data)"
        ".find((d) => d && d.type === 'session.created')",
        timeout=3.0,
    )
    assert created["session"]["id"] == urlsplit(response.headers["location"]).path.split("/")[-1]
    await expect(demo.page.locator("#events")).to_contain_text("session.created")

    # The page's own readout and chart follow.
    stats = await demo.wait_for(
        "() => { const s = window.voicewire.stats;"
        " return s && s.packetsReceived > 0 && s.packetsSent > 0 && s.level > 0 && s; }",
        timeout=3.0,
    )
    assert stats["connectionState"] == "connected"
    await expect(demo.page.locator("#stat-packets-received")).to_have_text(re.compile(r"^\d+$"))
    await expect(demo.page.locator("#stat-level")).to_have_text(re.compile(r"^\d\.\d{3}$"))
    await demo.wait_for("() => Number(document.getElementById('chart').dataset.points) >= 6")
    setup_ms = await demo.page.evaluate("window.voicewire.setupMs")
    assert isinstance(setup_ms, int | float) and setup_ms > 0
    await expect(demo.page.locator("#setup-ms")).to_have_text(f"{setup_ms} ms")

    await demo.page.wait_for_timeout(1500)  # a few more points on the chart for the picture
    screenshot = tmp_path / "demo-connected.png"
    await demo.page.screenshot(path=screenshot, full_page=True)
    print(f"setup {setup_ms} ms; screenshot {screenshot}")
    assert demo.problems == []


async def test_hang_up_deletes_the_call_and_a_new_call_works(demo: Demo) -> None:
    await demo.open()
    for _ in range(2):
        posted, _ = await connect(demo)
        location = urljoin(posted.url, posted.headers["location"])

        async with demo.page.expect_response(
            lambda r: r.request.method == "DELETE", timeout=5_000
        ) as deleted:
            await demo.page.click("#hangup")
        assert (await deleted.value).url == location
        assert 200 <= (await deleted.value).status < 300

        await expect(demo.page.locator("#state")).to_have_text("closed")
        assert await demo.page.evaluate("window.voicewire.pc.connectionState") == "closed"
        await expect(demo.page.locator("#connect")).to_be_enabled()
        await expect(demo.page.locator("#hangup")).to_be_disabled()
    assert demo.problems == []


async def test_refused_call_shows_the_server_message(demo: Demo) -> None:
    refusal = {"error": {"type": "server_error", "message": "no transceiver has room"}}

    async def refuse(route: Route) -> None:
        if route.request.method != "POST":
            await route.fallback()
            return
        await route.fulfill(status=503, content_type="application/json", body=json.dumps(refusal))

    await demo.page.route("**" + CALLS_PATH, refuse)
    await demo.open()
    await demo.page.click("#connect")

    await expect(demo.page.locator("#error")).to_be_visible()
    await expect(demo.page.locator("#error")).to_contain_text("no transceiver has room")
    await expect(demo.page.locator("#error")).to_contain_text("503")
    await expect(demo.page.locator("#state")).to_have_text("idle")
    await expect(demo.page.locator("#connect")).to_be_enabled()
    await expect(demo.page.locator("#hangup")).to_be_disabled()
    assert await demo.page.evaluate("window.voicewire.pc.connectionState") == "closed"


async def test_malformed_offer_is_refused_by_the_server_with_a_json_error(demo: Demo) -> None:
    """The real server's error body reaches the person: the offer is mangled on its way out."""

    async def mangle(route: Route) -> None:
        if route.request.method != "POST":
            await route.fallback()
            return
        await route.continue_(post_data="v=0\r\nthis is not an offer\r\n")

    await demo.page.route("**" + CALLS_PATH, mangle)
    await demo.open()
    async with demo.page.expect_response(is_call_post) as posted:
        await demo.page.click("#connect")
    response = await posted.value

    assert 400 <= response.status < 500
    assert response.headers["content-type"].split(";")[0].strip() == "application/json"
    error = (await response.json())["error"]
    assert error["type"] and error["message"]
    await expect(demo.page.locator("#error")).to_contain_text(error["message"])
    await expect(demo.page.locator("#state")).to_have_text("idle")
