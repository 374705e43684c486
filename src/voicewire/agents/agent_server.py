"""``voicewire agent-server``: a built-in agent behind OpenAI's Realtime WebSocket protocol.

The model side of a voice call can then run, scale and restart as its own service (DESIGN §7,
§8): transceivers reach it through the ``realtime-bridge`` agent exactly as they would reach
OpenAI, and so does any client written for OpenAI's API, the official SDKs included
(``base_url`` pointed here). Each WebSocket at ``/v1/realtime`` is one call with a fresh agent;
``realtime_socket.py`` is the transport that makes it one.

Server API keys work as for the gateway: with ``VOICEWIRE_API_KEYS`` set the upgrade needs
``Authorization: Bearer <key>``, or, from a browser (whose WebSocket cannot send headers), the
key in a ``openai-insecure-api-key.<key>`` subprotocol beside ``realtime``, as OpenAI takes it;
without keys, the server is open and says so at start. SIGTERM
drains it as Kubernetes expects: /readyz and new sessions get 503, open sessions go on until
they end or ``--drain-grace`` passes, then the rest are closed with 1001 (going away).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import Callable

from aiohttp import web

from voicewire import logs
from voicewire.agents import realtime_events as rt
from voicewire.agents.api import Agent
from voicewire.agents.realtime_socket import RealtimeSocket, SocketMetrics
from voicewire.agents.registry import AGENTS, BRIDGE
from voicewire.flags import drain_grace_flag, flag, host_port, log_level_flag
from voicewire.gateway.errors import error_response, json_errors
from voicewire.gateway.keys import KeyStore, Unauthorized, api_keys_from_environment
from voicewire.http_service import add_ops_routes, run_service, start_site

log = logging.getLogger("voicewire.agent_server")

PATH = "/v1/realtime"
MAX_MESSAGE = 16 << 20
"""Largest client message accepted; a bigger one closes the socket (1009, message too big)."""
HEARTBEAT = 20.0
"""Seconds between pings that find clients which vanished without closing."""
SHUTDOWN_GRACE = 5.0
"""Seconds the sessions left after draining get to close cleanly."""
SERVED_AGENTS = sorted(name for name in AGENTS if name != BRIDGE)
"""The bridge is left out: it needs a Realtime backend, and in front of one it only adds a hop."""

PROTOCOLS = ("realtime",)
"""The subprotocol answered to a browser that offers it (a browser fails the connection if it
offered subprotocols and the server picks none)."""
BROWSER_KEY = "openai-insecure-api-key."
"""Prefix of the subprotocol that carries a browser's key (the name warns: a key in a page is
anyone's; a browser should rather use an ephemeral key through the gateway)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--listen",
        env="VOICEWIRE_AGENT_SERVER_LISTEN",
        type=host_port,
        default="127.0.0.1:8090",
        metavar="HOST:PORT",
        help=f"HTTP address: the Realtime WebSocket at {PATH}, health and metrics",
    )
    flag(
        parser,
        "--agent",
        env="VOICEWIRE_AGENT",
        default="parrot",
        type=_agent_name,
        choices=SERVED_AGENTS,
        help="the agent every WebSocket session talks to",
    )
    drain_grace_flag(parser)
    log_level_flag(parser)


def _agent_name(text: str) -> str:
    """Checked here, not only by ``choices``: argparse does not check an environment default."""
    if text not in SERVED_AGENTS:
        raise argparse.ArgumentTypeError(
            f"unknown agent {text!r}; one of {', '.join(SERVED_AGENTS)}"
        )
    return text


def run(args: argparse.Namespace, prog: str) -> int:
    logs.configure(args.log_level)
    return run_service(prog, _serve(args))


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: (hurry if stop.is_set() else stop).set())
    server = AgentServer(AGENTS[args.agent], KeyStore(api_keys_from_environment()), args.agent)
    runner = server.runner()
    await runner.setup()
    try:
        host, port = await start_site(runner, args.listen)
        if server.keys.open:
            log.warning(
                "agent-server is open: no API keys are set (VOICEWIRE_API_KEYS), so anyone who "
                "can reach the address can start sessions; keep it on a private network",
                extra={"listen": [host, port]},
            )
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "serving",
            extra={
                "listen": [host, port],
                "url": f"ws://{shown}:{port}{PATH}",
                "agent": args.agent,
            },
        )
        await stop.wait()
        await server.drain(args.drain_grace, hurry)
    finally:
        await runner.cleanup()  # runs on_shutdown: every session left is closed with 1001
    log.info("stopped")


class AgentServer:
    """The aiohttp application: the Realtime WebSocket, health and metrics."""

    def __init__(self, agent_factory: Callable[[], Agent], keys: KeyStore, agent_name: str) -> None:
        self.keys = keys
        self.metrics = SocketMetrics()
        self.sockets: set[RealtimeSocket] = set()
        self._idle = asyncio.Event()  # set while no session is open
        self._idle.set()
        self.stopping = False
        """Draining or shutting down: /readyz and new sessions get 503."""
        self._agent_factory = agent_factory
        self._agent_name = agent_name
        self.app = web.Application(middlewares=[json_errors])
        self.app.router.add_get(PATH, self._realtime)
        add_ops_routes(self.app, lambda: not self.stopping, [self.metrics.registry])
        self.app.on_shutdown.append(self._on_shutdown)

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        try:
            self.keys.check_api_key(_authorization(request))
        except Unauthorized as exc:
            return error_response(401, str(exc))
        if self.stopping:
            return error_response(503, "the agent-server is shutting down")
        model = request.query.get("model")
        config = {} if model is None else {"model": model}
        try:
            rt.validate_session(config, "")
        except rt.EventError as exc:
            return error_response(400, exc.message)
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MESSAGE, heartbeat=HEARTBEAT, compress=False, protocols=PROTOCOLS
        )
        if not ws.can_prepare(request).ok:
            return error_response(400, f"{PATH} is a WebSocket: send an Upgrade request")
        await ws.prepare(request)
        call_id = rt.new_id("sess")
        socket = RealtimeSocket(ws, self._agent_factory(), call_id, config, self.metrics)
        self.sockets.add(socket)
        self._idle.clear()
        self.metrics.sessions.inc()
        started = time.monotonic()
        log.info(
            "session opened",
            extra={"call_id": call_id, "agent": self._agent_name, "model": model},
        )
        try:
            reason = await socket.serve()
        finally:
            self.sockets.discard(socket)
            if not self.sockets:
                self._idle.set()
            self.metrics.sessions.dec()
        self.metrics.closed.labels(reason).inc()
        stats = socket.call.stats()
        log.info(
            "session closed",
            extra={
                "call_id": call_id,
                "reason": reason,
                "seconds": round(time.monotonic() - started, 1),
                "frames_in": stats.packets_received,
                "frames_out": stats.packets_sent,
                "dropped_frames": socket.call.dropped_frames,
            },
        )
        return ws

    def runner(self) -> web.AppRunner:
        """The runner to serve ``app`` with: on cleanup, sessions get ``SHUTDOWN_GRACE``."""
        return web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)

    async def drain(self, grace: float, hurry: asyncio.Event) -> None:
        """Take no new sessions, and let the open ones end by themselves within ``grace``
        seconds (or until ``hurry`` is set: a second signal)."""
        self.stopping = True
        log.info("draining", extra={"sessions": len(self.sockets), "grace_s": grace})
        waits = {asyncio.ensure_future(self._idle.wait()), asyncio.ensure_future(hurry.wait())}
        await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        log.info("drained", extra={"sessions_left": len(self.sockets)})

    async def _on_shutdown(self, app: web.Application) -> None:
        """Close every session with 1001 (going away); the runner waits for them to end."""
        self.stopping = True
        for socket in list(self.sockets):
            socket.stop("shutdown")


def _authorization(request: web.Request) -> str | None:
    """The ``Authorization`` header, or a browser's key from its offered subprotocols."""
    header = request.headers.get("Authorization")
    if header is not None:
        return header
    for offered in request.headers.getall("Sec-WebSocket-Protocol", ()):
        for protocol in offered.split(","):
            protocol = protocol.strip()
            if protocol.startswith(BROWSER_KEY):
                return "Bearer " + protocol.removeprefix(BROWSER_KEY)
    return None
