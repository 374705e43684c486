"""A browser reaches ``voicewire agent-server`` as it reaches OpenAI's Realtime WebSocket.

A page's ``WebSocket`` cannot set headers, so OpenAI's browser convention offers the key as a
subprotocol, ``openai-insecure-api-key.<key>``, beside ``realtime``; and Chromium fails a
connection whose server picks none of the subprotocols it offered. Both halves are checked by
the real thing.
"""

from __future__ import annotations

from playwright import async_api as playwright_api

from tests.agents.test_agent_server import serving

CONNECT = """async ([url, key]) => {
  const ws = new WebSocket(url, ["realtime", "openai-insecure-api-key." + key]);
  return await new Promise((resolve) => {
    ws.onmessage = (message) => {
      resolve({protocol: ws.protocol, first: JSON.parse(message.data).type});
      ws.close();
    };
    ws.onclose = (event) => resolve({closed: event.code});
  });
}"""


async def test_a_browser_sends_its_key_as_a_subprotocol(
    browser: playwright_api.BrowserContext,
) -> None:
    async with serving(api_keys=("key-1",)) as running:
        page = browser.pages[0] if browser.pages else await browser.new_page()
        url = running.url.replace("http://", "ws://") + "/v1/realtime"
        accepted = await page.evaluate(CONNECT, [url, "key-1"])
        assert accepted == {"protocol": "realtime", "first": "session.created"}
        refused = await page.evaluate(CONNECT, [url, "key-2"])
        assert refused == {"closed": 1006}  # the upgrade got a 401: no WebSocket at all
