"""``voicewire gateway``: the public HTTP API as a stateless cluster service (DESIGN §6, §8).

The same endpoints as ``voicewire serve`` (``app.py``), but every answer comes from a
transceiver of the cluster (``cluster_signaling.py``), and ephemeral keys live in Redis when
``--redis`` is set, so any number of replicas can sit behind one HTTP load balancer. API keys
come from ``VOICEWIRE_API_KEYS`` exactly as for ``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from voicewire import logs
from voicewire.cluster.ephemeral_keys import RedisEphemeralKeys
from voicewire.cluster.redis_client import connect
from voicewire.cluster.registry import TransceiverRegistry
from voicewire.flags import (
    cluster_flags,
    fail,
    flag,
    host_port,
    http_url,
    log_level_flag,
)
from voicewire.gateway.app import create_app
from voicewire.gateway.cluster_signaling import ClusterSignaling
from voicewire.gateway.keys import KeyStore, api_keys_from_environment
from voicewire.http_service import run_service, start_site

log = logging.getLogger("voicewire.gateway")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--http",
        env="VOICEWIRE_GATEWAY_HTTP",
        type=host_port,
        default="0.0.0.0:8080",
        metavar="HOST:PORT",
        help="HTTP address: signaling, the demo page, health and metrics",
    )
    cluster_flags(parser)
    flag(
        parser,
        "--transceivers",
        env="VOICEWIRE_TRANSCEIVERS",
        type=_url_list,
        metavar="URL[,URL…]",
        help="transceivers' internal API URLs: used without --redis, and when Redis is down",
    )
    log_level_flag(parser)


def run(args: argparse.Namespace, prog: str) -> int:
    logs.configure(args.log_level)
    if args.redis is None and not args.transceivers:
        fail(prog, "give --redis (the transceiver registry), --transceivers URL[,URL…], or both")
    try:
        redis = None if args.redis is None else connect(args.redis)
    except ValueError as exc:
        fail(prog, f"--redis: {exc}")
    return run_service(prog, _serve(args, redis))


async def _serve(args: argparse.Namespace, redis: Redis | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    keys = KeyStore(
        api_keys_from_environment(), None if redis is None else RedisEphemeralKeys(redis)
    )
    registry = None if redis is None else TransceiverRegistry(redis, args.cluster_id)
    async with aiohttp.ClientSession() as http:
        signaling = ClusterSignaling(http, registry, args.transceivers or ())
        # Always ready while up: with Redis down it still answers, with a clear JSON 503.
        runner = web.AppRunner(
            create_app(signaling, lambda: True, [signaling.metrics], keys), access_log=None
        )
        await runner.setup()
        try:
            bound = await start_site(runner, args.http)
            keys.warn_if_open(args.http)
            log.info(
                "gateway started",
                extra={
                    "http": bound,
                    "cluster_id": args.cluster_id,
                    "registry": redis is not None,
                    "transceivers": args.transceivers or [],
                },
            )
            await stop.wait()
        finally:
            await runner.cleanup()
            if redis is not None:
                await redis.aclose()
    log.info("gateway stopped")


def _url_list(text: str) -> tuple[str, ...]:
    return tuple(http_url(item.strip()) for item in text.split(",") if item.strip())
