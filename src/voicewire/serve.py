"""``voicewire serve``: gateway, relay, transceiver and an agent on one machine, one command.

The split stays real: the relay runs its own worker process on the public UDP port and reaches
the transceiver over the relay header on loopback, exactly as across a cluster; only the
routing secret is made fresh at start and shared in memory instead of read from a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import threading

from aiohttp import web

from voicewire import logs
from voicewire.agents.registry import AGENTS
from voicewire.flags import fail, flag, host_port
from voicewire.gateway.app import create_app
from voicewire.gateway.signaling import Signaling
from voicewire.relay.allow_list import AllowList
from voicewire.relay.command import DEFAULT_SOCKET_BUFFER
from voicewire.relay.sockets import BindError
from voicewire.relay.supervisor import RelayConfig, RelaySupervisor
from voicewire.transceiver.endpoint import TransceiverEndpoint
from voicewire.wire.routing_token import RoutingKeys

log = logging.getLogger("voicewire.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--http",
        env="VOICEWIRE_HTTP",
        type=host_port,
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="HTTP address: the demo page, signaling, health and metrics",
    )
    flag(
        parser,
        "--udp",
        env="VOICEWIRE_UDP",
        type=host_port,
        default="127.0.0.1:3478",
        metavar="HOST:PORT",
        help="the one public UDP port (the relay's)",
    )
    flag(
        parser,
        "--public-address",
        env="VOICEWIRE_PUBLIC_ADDRESS",
        type=host_port,
        metavar="HOST:PORT",
        help="the address clients reach the UDP port at, put in every answer's candidate "
        "(default: the --udp address)",
    )
    flag(
        parser,
        "--agent",
        env="VOICEWIRE_AGENT",
        default="echo",
        choices=sorted(AGENTS),
        help="the agent every call talks to",
    )
    flag(
        parser,
        "--max-sessions",
        env="VOICEWIRE_MAX_SESSIONS",
        type=int,
        default=200,
        metavar="N",
        help="calls at once before new ones get 503",
    )
    flag(
        parser,
        "--log-level",
        env="VOICEWIRE_LOG_LEVEL",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity",
    )


def run(args: argparse.Namespace, prog: str) -> int:
    logs.configure(args.log_level)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    public = args.public_address or args.udp
    if public[0] in ("0.0.0.0", "::"):
        fail(prog, "--udp listens on all interfaces: give --public-address for the candidate")
    keys = RoutingKeys([(1, os.urandom(32))])
    try:
        relay = RelaySupervisor(
            RelayConfig(
                listen=args.udp,
                internal=("127.0.0.1", 0),
                workers=1,
                allow=AllowList.parse("127.0.0.0/8"),
                keys=keys,
                idle_timeout=30.0,
                metrics=None,
                socket_buffer=DEFAULT_SOCKET_BUFFER,
                log_level=args.log_level,
            )
        )
    except BindError as exc:
        fail(prog, str(exc), status=1)
    try:
        asyncio.run(_serve(args, keys, relay, public))
    except BindError as exc:
        fail(prog, str(exc), status=1)
    return 0


async def _serve(
    args: argparse.Namespace, keys: RoutingKeys, relay: RelaySupervisor, public: tuple[str, int]
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    relay_thread = threading.Thread(target=relay.run, kwargs={"install_signals": False})
    relay_thread.start()
    transceiver = TransceiverEndpoint(
        keys=keys, advertise=None, agent_factory=AGENTS[args.agent], max_sessions=args.max_sessions
    )
    runner: web.AppRunner | None = None
    try:
        await transceiver.listen(("127.0.0.1", 0))
        if public[1] == 0:
            public = (public[0], relay.public_address[1])
        signaling = Signaling(transceiver, public)
        app = create_app(
            signaling,
            lambda: relay.ready() and not transceiver.draining,
            [transceiver.metrics.registry],
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.http[0], args.http[1])
        try:
            await site.start()
        except OSError as exc:
            raise BindError(
                f"cannot bind HTTP {args.http[0]}:{args.http[1]}: {exc.strerror}"
            ) from None
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/"
        log.info("serving", extra={"url": url, "udp": public, "agent": args.agent})
        print(
            f"voicewire is serving {url}  (UDP {public[0]}:{public[1]}, agent {args.agent})",
            flush=True,
        )
        await stop.wait()
    finally:
        log.info("stopping")
        transceiver.close()
        if runner is not None:
            await runner.cleanup()
        relay.stop()
        await asyncio.to_thread(relay_thread.join)
