"""A transceiver's internal HTTP API: gateways ask it for answers and hang-ups, as JSON.

The transceiver writes the SDP answer itself (``Signaling``: parse the offer, open the session,
answer with the relay's public address) because only it knows its certificate and mints its
routing tokens; the gateway only chooses which transceiver to ask. Only gateways should reach
this API (a NetworkPolicy on Kubernetes, DESIGN §8): it has no authentication of its own.

    POST   /internal/v1/sessions            {"sdp": offer, "session": {...}}
                                            → 201 {"call_id", "sdp": answer}; 400, 503 as JSON
    DELETE /internal/v1/sessions/{call_id}  → 204, or 404 when no such call
    GET    /healthz /readyz /metrics
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from voicewire.gateway.app import MAX_OFFER_BYTES, read_json_object
from voicewire.gateway.errors import ApiError, json_errors
from voicewire.gateway.signaling import Signaling
from voicewire.http_service import add_ops_routes

SESSIONS = "/internal/v1/sessions"
SIGNALING = web.AppKey("signaling", Signaling)
CHANGED = web.AppKey("changed", Callable[[], None])


def create_app(
    signaling: Signaling,
    ready: Callable[[], bool],
    registries: list[CollectorRegistry],
    changed: Callable[[], None],
) -> web.Application:
    """``changed`` is called after every session opened or ended here (the registry heartbeat)."""
    # An offer escaped into JSON can grow (quotes, \r\n); the session config rides along.
    app = web.Application(middlewares=[json_errors], client_max_size=4 * MAX_OFFER_BYTES)
    app[SIGNALING] = signaling
    app[CHANGED] = changed
    app.router.add_post(SESSIONS, post_session)
    app.router.add_delete(SESSIONS + "/{call_id}", delete_session)
    add_ops_routes(app, ready, registries)
    return app


async def post_session(request: web.Request) -> web.Response:
    offer, session = _offer(await read_json_object(request))
    call_id, answer = await request.app[SIGNALING].answer(offer, session)
    request.app[CHANGED]()
    return web.json_response({"call_id": call_id, "sdp": answer}, status=201)


async def delete_session(request: web.Request) -> web.Response:
    if not await request.app[SIGNALING].hang_up(request.match_info["call_id"]):
        raise ApiError(404, "no such call")
    request.app[CHANGED]()
    return web.Response(status=204)


def _offer(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    offer, session = body.get("sdp"), body.get("session", {})
    if not isinstance(offer, str):
        raise ApiError(400, "'sdp' must be the offer as a string")
    if len(offer) > MAX_OFFER_BYTES:
        raise ApiError(413, f"the offer is larger than {MAX_OFFER_BYTES} bytes")
    if not isinstance(session, dict):
        raise ApiError(400, "'session' must be a JSON object")
    return offer, session
