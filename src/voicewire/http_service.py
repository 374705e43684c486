"""What every aiohttp service shares: /healthz, /readyz, /metrics, and binding its address.

The gateway's public API and the transceiver's internal API both run on aiohttp and answer
the operations endpoints the way ``ops_http.py`` does for processes without an event loop:
/healthz says the process is alive, /readyz says it should get traffic (503 while starting or
draining). A port that cannot be bound is a one-line ``BindError``, as for the relay; every
service's process runs through ``run_service``, so those errors read the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from voicewire.flags import ConfigError, fail
from voicewire.relay.sockets import BindError

READY = web.AppKey("ready", Callable[[], bool])
REGISTRIES = web.AppKey("registries", list[CollectorRegistry])


def add_ops_routes(
    app: web.Application, ready: Callable[[], bool], registries: list[CollectorRegistry]
) -> None:
    app[READY] = ready
    app[REGISTRIES] = registries
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def start_site(runner: web.AppRunner, address: tuple[str, int]) -> tuple[str, int]:
    """Serve ``runner`` (already set up) on ``address``; returns the bound address."""
    try:
        await web.TCPSite(runner, address[0], address[1]).start()
    except OSError as exc:
        raise BindError(f"cannot bind HTTP {address[0]}:{address[1]}: {exc.strerror}") from None
    return runner.addresses[-1][:2]


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[READY]()
    return web.Response(status=200 if ready else 503, text="ready\n" if ready else "not ready\n")


async def metrics(request: web.Request) -> web.Response:
    body = b"".join(generate_latest(registry) for registry in request.app[REGISTRIES])
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def run_service(prog: str, main: Coroutine[Any, Any, None]) -> int:
    """Run an asyncio service to the end: uvloop when it is there, and a one-line error with a
    non-zero status for what the operator must fix (a port in use, a bad configuration)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(main)
    except ConfigError as exc:
        fail(prog, str(exc))
    except BindError as exc:
        fail(prog, str(exc), status=1)
    return 0
