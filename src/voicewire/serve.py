"""``voicewire serve``: gateway, relay, transceiver and an agent on one machine, one command.

The split stays real: the relay runs its own worker process on the public UDP port and reaches
the transceiver over the relay header on loopback, exactly as across a cluster; only the
routing secret is made fresh at start and shared in memory instead of read from a file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

from aiohttp import web

from voicewire import logs
from voicewire.agents.agent_flags import agent_factory_from, agent_flags
from voicewire.agents.api import Agent
from voicewire.flags import (
    ConfigError,
    fail,
    flag,
    host_port,
    is_wildcard,
    log_level_flag,
)
from voicewire.gateway.app import create_app
from voicewire.gateway.keys import KeyStore, api_keys_from_environment
from voicewire.gateway.signaling import Signaling
from voicewire.http_service import run_service, start_site
from voicewire.relay.allow_list import LOOPBACK, AllowList
from voicewire.relay.command import DEFAULT_SOCKET_BUFFER
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
    agent_flags(parser)
    log_level_flag(parser)


def run(args: argparse.Namespace, prog: str) -> int:
    logs.configure(args.log_level)
    public = args.public_address or args.udp
    if is_wildcard(public):
        fail(prog, "--udp listens on all interfaces: give --public-address for the candidate")
    try:
        factory = agent_factory_from(args)
    except ConfigError as exc:
        fail(prog, str(exc))
    return run_service(prog, _serve(args, public, factory))


async def _serve(
    args: argparse.Namespace, public: tuple[str, int], factory: Callable[[], Agent]
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stack = EmbeddedStack(
        api_keys=api_keys_from_environment(),
        http=args.http,
        udp=args.udp,
        public_address=public,
        agent_factory=factory,
        max_sessions=args.max_sessions,
        log_level=args.log_level,
    )
    async with stack:
        stack.keys.warn_if_open(args.http)
        log.info("serving", extra={"url": stack.url, "udp": stack.public, "agent": args.agent})
        print(
            f"voicewire is serving {stack.url}  (UDP {stack.public[0]}:{stack.public[1]}, "
            f"agent {args.agent})",
            flush=True,
        )
        await stop.wait()
        log.info("stopping")


class EmbeddedStack:
    """Relay (own worker process), transceiver and gateway wired together in this process.

    ``async with EmbeddedStack(...) as stack`` starts everything and stops it all on exit;
    tests use it directly to reach the transceiver's state.
    """

    def __init__(
        self,
        *,
        http: tuple[str, int],
        udp: tuple[str, int],
        public_address: tuple[str, int] | None = None,
        agent_factory: Callable[[], Agent],
        max_sessions: int = 200,
        consent_timeout: float = 30.0,
        api_keys: tuple[str, ...] = (),
        log_level: str = "info",
    ) -> None:
        keys = RoutingKeys([(1, os.urandom(32))])  # fresh each start, shared in memory only
        self._http = http
        self.keys = KeyStore(api_keys)
        self.relay = RelaySupervisor(
            RelayConfig(
                listen=udp,
                internal=("127.0.0.1", 0),
                workers=1,
                allow=AllowList.parse("127.0.0.0/8"),
                keys=keys,
                idle_timeout=30.0,
                metrics=None,
                socket_buffer=DEFAULT_SOCKET_BUFFER,
                log_level=log_level,
            )
        )
        bound = self.relay.public_address
        wanted = public_address or udp
        self.public = (wanted[0], wanted[1] or bound[1])
        self.transceiver = TransceiverEndpoint(
            keys=keys,
            advertise=None,
            agent_factory=agent_factory,
            max_sessions=max_sessions,
            consent_timeout=consent_timeout,
            allow_relays=AllowList.parse(LOOPBACK),  # its relay's worker, on this machine
        )
        self._relay_thread = threading.Thread(
            target=self.relay.run, kwargs={"install_signals": False}, name="relay"
        )
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> EmbeddedStack:
        self._relay_thread.start()
        try:
            await self.transceiver.listen(("127.0.0.1", 0))
            transceiver = self.transceiver
            app = create_app(
                Signaling(transceiver, self.public),
                lambda: self.relay.ready() and not transceiver.draining,
                [transceiver.metrics.registry],
                self.keys,
            )
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            host, port = await start_site(self._runner, self._http)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.transceiver.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.relay.stop()
        await asyncio.to_thread(self._relay_thread.join)
