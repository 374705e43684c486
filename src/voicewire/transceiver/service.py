"""``voicewire transceiver``: one transceiver as a cluster service (DESIGN §5, §8).

One process is one UDP socket and one address in its routing tokens. Relays send it every
datagram of the sessions it owns (and only relays: ``--allow-relays``); gateways ask its internal
HTTP API for answers (``internal_api.py``); with ``--redis`` it keeps its record in the registry
so gateways find it and see its load (``cluster/heartbeat.py``), and writes which client
addresses it owns so a restarted relay finds their flows at once (``cluster/flows.py``).

SIGTERM (or SIGINT) drains it, as Kubernetes expects of a pod being replaced: new sessions get
503, /readyz answers 503, its registry record says ``draining``, and live calls go on until they
end or ``--drain-grace`` passes; then the rest are ended with reason ``drain`` (SCTP ABORT and
DTLS close_notify, so clients learn at once), the record is withdrawn and the process exits 0.
A second signal cuts the grace short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from redis.asyncio import Redis

from voicewire import logs
from voicewire.agents.agent_flags import agent_factory_from, agent_flags
from voicewire.agents.api import Agent
from voicewire.cluster.flow_keys import address_text
from voicewire.cluster.flows import FlowPublisher
from voicewire.cluster.heartbeat import Heartbeat
from voicewire.cluster.redis_client import connect
from voicewire.cluster.registry import TransceiverRecord, TransceiverRegistry
from voicewire.flags import (
    ConfigError,
    cluster_flags,
    drain_grace_flag,
    fail,
    flag,
    host_port,
    http_url,
    is_wildcard,
    log_level_flag,
    routing_keys,
    secrets_file_flag,
)
from voicewire.gateway.signaling import Signaling
from voicewire.http_service import run_service, start_site
from voicewire.relay.allow_list import LOOPBACK, AllowList
from voicewire.relay.sockets import BindError
from voicewire.transceiver import internal_api
from voicewire.transceiver.endpoint import DTLS_ROLES, TransceiverEndpoint
from voicewire.wire.routing_token import RoutingKeys

log = logging.getLogger("voicewire.transceiver")

STOP_TIMEOUT = 2.0  # seconds a background writer gets to finish its Redis command at exit
DRAIN_POLL = 0.05  # seconds between looks at the session count while draining
FLOW_TTL_CONSENTS = 2  # a flow record outlives its last rewrite by two consent timeouts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--udp",
        env="VOICEWIRE_TRANSCEIVER_UDP",
        type=host_port,
        default="0.0.0.0:7000",
        metavar="HOST:PORT",
        help="the internal UDP socket relays send to",
    )
    flag(
        parser,
        "--http",
        env="VOICEWIRE_TRANSCEIVER_HTTP",
        type=host_port,
        default="0.0.0.0:8081",
        metavar="HOST:PORT",
        help="internal HTTP API for gateways, with /healthz, /readyz and /metrics",
    )
    flag(
        parser,
        "--advertise",
        env="VOICEWIRE_ADVERTISE",
        type=host_port,
        metavar="HOST:PORT",
        help="the address relays reach the UDP socket at, written into every routing token "
        "(default: the --udp address; required when --udp is a wildcard, e.g. the pod IP)",
    )
    flag(
        parser,
        "--advertise-http",
        env="VOICEWIRE_ADVERTISE_HTTP",
        type=http_url,
        metavar="URL",
        help="the internal API's base URL for gateways (default: http://ADVERTISE-HOST:HTTP-PORT)",
    )
    flag(
        parser,
        "--relay-public",
        env="VOICEWIRE_RELAY_PUBLIC",
        type=host_port,
        metavar="HOST:PORT",
        help="the relays' public address, the only candidate in every answer (required)",
    )
    flag(
        parser,
        "--allow-relays",
        env="VOICEWIRE_ALLOW_RELAYS",
        default=LOOPBACK,
        metavar="CIDR[,CIDR…]",
        help="CIDRs of the relays' internal addresses; datagrams from anywhere else are dropped",
    )
    flag(
        parser,
        "--dtls-setup",
        env="VOICEWIRE_DTLS_SETUP",
        choices=tuple(DTLS_ROLES),
        default="active",
        help="the answer's a=setup when the offer lets us choose (actpass): active = the "
        "transceiver starts the DTLS handshake (docs/decisions.md)",
    )
    secrets_file_flag(parser)
    agent_flags(parser)
    cluster_flags(parser)
    drain_grace_flag(parser)
    log_level_flag(parser)


def run(args: argparse.Namespace, prog: str) -> int:
    logs.configure(args.log_level)
    if args.relay_public is None:
        fail(prog, "give --relay-public (or VOICEWIRE_RELAY_PUBLIC): the relays' public address")
    if is_wildcard(args.relay_public):
        fail(prog, "--relay-public must be an address clients can send to, not a wildcard")
    if args.advertise is None and is_wildcard(args.udp):
        fail(prog, "--udp listens on all interfaces: give --advertise, the address relays reach")
    if args.advertise is not None and is_wildcard(args.advertise):
        fail(prog, "--advertise must be an address relays can send to, not a wildcard")
    try:
        keys = routing_keys(args.secrets_file)
        factory = agent_factory_from(args)
    except ConfigError as exc:
        fail(prog, str(exc))
    try:
        relays = AllowList.parse(args.allow_relays)
    except ValueError as exc:
        fail(prog, f"--allow-relays: {exc}")
    try:
        redis = None if args.redis is None else connect(args.redis)
    except ValueError as exc:
        fail(prog, f"--redis: {exc}")
    return run_service(prog, _serve(args, keys, factory, relays, redis))


async def _serve(
    args: argparse.Namespace,
    keys: RoutingKeys,
    factory: Callable[[], Agent],
    relays: AllowList,
    redis: Redis | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: (hurry if stop.is_set() else stop).set())
    endpoint = TransceiverEndpoint(
        keys=keys,
        advertise=args.advertise,
        agent_factory=factory,
        max_sessions=args.max_sessions,
        cluster_id=args.cluster_id,
        allow_relays=relays,
        dtls_role=DTLS_ROLES[args.dtls_setup],
    )
    advertise_http = ""  # known once the HTTP port is bound

    def record() -> TransceiverRecord:
        advertise = address_text(endpoint.advertise)
        return TransceiverRecord(
            id=advertise,
            advertise=advertise,
            http=advertise_http,
            cluster_id=args.cluster_id,
            sessions=endpoint.session_count,
            capacity=endpoint.max_sessions,
            draining=endpoint.draining,
        )

    heartbeat = (
        None if redis is None else Heartbeat(TransceiverRegistry(redis, args.cluster_id), record)
    )
    beating: asyncio.Task | None = None
    flows: FlowPublisher | None = None  # made once the UDP address is known
    publishing: asyncio.Task | None = None
    runner = web.AppRunner(
        internal_api.create_app(
            Signaling(endpoint, args.relay_public),
            lambda: not endpoint.draining,
            [endpoint.metrics.registry],
            changed=(lambda: None) if heartbeat is None else heartbeat.poke,
        ),
        access_log=None,
    )
    try:
        udp = await _bind_udp(endpoint, args.udp)
        try:
            keys.issue(endpoint.advertise, args.cluster_id)  # the tokens it will mint are valid
        except ValueError as exc:
            raise ConfigError(f"--advertise {address_text(endpoint.advertise)}: {exc}") from None
        if redis is not None:
            ttl = FLOW_TTL_CONSENTS * endpoint.consent_timeout
            flows = endpoint.flows = FlowPublisher(redis, args.cluster_id, endpoint.advertise, ttl)
            publishing = loop.create_task(flows.run())
        await runner.setup()
        http = await start_site(runner, args.http)
        advertise_http = args.advertise_http or (
            f"http://{address_text((endpoint.advertise[0], http[1]))}"
        )
        if heartbeat is not None:
            beating = loop.create_task(heartbeat.run())
        log.info(
            "transceiver started",
            extra={
                "udp": udp,
                "advertise": endpoint.advertise,
                "http": http,
                "advertise_http": advertise_http,
                "relay_public": args.relay_public,
                "agent": args.agent,
                "cluster_id": args.cluster_id,
                "registry": redis is not None,
                "allow_relays": str(relays),
            },
        )
        await stop.wait()
        endpoint.draining = True
        if heartbeat is not None:
            heartbeat.poke()
        await _drain(endpoint, args.drain_grace, hurry)
    finally:
        endpoint.close()  # ends every session left with CloseReason.DRAIN, then the socket
        if flows is not None and publishing is not None:
            flows.stop()
            await _finish(publishing)
            await flows.close()  # the deletes of the sessions just ended
        if heartbeat is not None and beating is not None:
            heartbeat.stop()  # and wait, so no late heartbeat rewrites the record withdrawn here
            await _finish(beating)
            await heartbeat.withdraw()
        await runner.cleanup()
        if redis is not None:
            await redis.aclose()
    log.info("transceiver stopped")


async def _finish(task: asyncio.Task) -> None:
    """Wait for a stopped background task, briefly; cancel it if it is stuck on Redis."""
    await asyncio.wait({task}, timeout=STOP_TIMEOUT)
    if not task.done():
        task.cancel()


async def _drain(endpoint: TransceiverEndpoint, grace: float, hurry: asyncio.Event) -> None:
    """Let live calls end by themselves within ``grace`` seconds (the caller ends the rest)."""
    loop = asyncio.get_running_loop()
    log.info("draining", extra={"sessions": endpoint.session_count, "grace_s": grace})
    deadline = loop.time() + grace
    while endpoint.session_count and loop.time() < deadline and not hurry.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), DRAIN_POLL)
    log.info("drained", extra={"sessions_left": endpoint.session_count})


async def _bind_udp(endpoint: TransceiverEndpoint, address: tuple[str, int]) -> tuple[str, int]:
    try:
        return await endpoint.listen(address)
    except OSError as exc:
        raise BindError(f"cannot bind UDP {address_text(address)}: {exc.strerror}") from None
