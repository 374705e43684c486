"""An aiortc echo server behind voicewire's signaling surface: the baseline of ``setup_bench.py``.

    .venv/bin/python benchmarks/aiortc_echo_server.py --http 127.0.0.1:0

This is the usual way to answer a WebRTC call in Python: an aiohttp handler that gives the offer
to an aiortc ``RTCPeerConnection``, sends each received audio track straight back, and returns the
answer. It accepts exactly what voicewire's gateway accepts for the benchmark (DESIGN §6):
``POST /v1/realtime/calls`` with an ``application/sdp`` offer → ``201``, the answer as
``application/sdp`` and a ``Location`` whose ``DELETE`` hangs up. ``GET /`` is a blank page (the
browser runs its snippet from this origin) and ``GET /healthz`` says ok.

It logs like ``voicewire serve`` — one JSON object per line on stderr, ``"msg": "serving"`` with
the ``url`` once listening, and ``session opened`` / ``session connected`` (with ``setup_ms``, POST
received → connection state "connected") per call — so the benchmark reads both the same way.

Loopback only: ICE gathers a single host candidate on 127.0.0.1 (aioice leaves loopback out and
takes every other interface by default) and no STUN server (aiortc would ask Google's). That makes
the baseline faster, never slower, than aiortc out of the box: the ratios stay conservative.
The event loop is uvloop when installed, as in ``voicewire serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sys

import aioice.ice
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from voicewire import logs

BLANK_PAGE = "<!doctype html><meta charset=utf-8><title>aiortc echo</title>\n"
CALLS = "/v1/realtime/calls"
MAX_OFFER_BYTES = 64 * 1024

log = logging.getLogger("aiortc_echo_server")


def loopback_only() -> None:
    """Gather one host candidate, on 127.0.0.1 (aioice skips loopback by default)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def info(msg: str, **fields: object) -> None:
    log.info(msg, extra=fields)


class EchoCalls:
    """The live peer connections, by call id."""

    def __init__(self) -> None:
        self.calls: dict[str, RTCPeerConnection] = {}

    async def post(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        received = loop.time()
        if request.content_type != "application/sdp":
            return _error(415, "send the offer as application/sdp")
        body = await request.read()
        if len(body) > MAX_OFFER_BYTES:
            return _error(413, "offer too large")
        call_id = "rtc_" + secrets.token_hex(12)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.calls[call_id] = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                pc.addTrack(track)  # the echo: the received track is the one we send

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                setup_ms = round(1000 * (loop.time() - received), 1)
                info("session connected", call_id=call_id, setup_ms=setup_ms)
            elif state == "failed":
                info("session failed", call_id=call_id)
                await self.end(call_id)

        info("session opened", call_id=call_id)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # a bad offer: the client's fault
            await self.end(call_id)
            return _error(400, f"offer not accepted: {exc}")
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"{CALLS}/{call_id}"},
        )

    async def delete(self, request: web.Request) -> web.Response:
        if not await self.end(request.match_info["call_id"]):
            return _error(404, "no such call")
        return web.Response(status=200)

    async def end(self, call_id: str) -> bool:
        pc = self.calls.pop(call_id, None)
        if pc is None:
            return False
        await pc.close()
        info("session closed", call_id=call_id)
        return True

    async def close_all(self) -> None:
        for call_id in list(self.calls):
            await self.end(call_id)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"type": "invalid_request_error", "message": message}}, status=status
    )


async def blank(request: web.Request) -> web.Response:
    return web.Response(text=BLANK_PAGE, content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def serve(host: str, port: int) -> None:
    calls = EchoCalls()
    app = web.Application(client_max_size=MAX_OFFER_BYTES + 4096)
    app.router.add_post(CALLS, calls.post)
    app.router.add_delete(CALLS + "/{call_id}", calls.delete)
    app.router.add_get("/", blank)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        info("serving", url=f"http://{bound_host}:{bound_port}/")
        await stop.wait()
    finally:
        info("stopping")
        await calls.close_all()
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.http.rpartition(":")
    logs.configure("warning")  # voicewire's JSON lines, so both servers' logs read alike
    log.setLevel(logging.INFO)
    loopback_only()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(serve(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
