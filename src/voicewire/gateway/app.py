"""The gateway's HTTP surface: OpenAI Realtime calls, WHIP, the demo page, health and metrics.

``POST /v1/realtime/calls`` follows OpenAI's WebRTC convention: the offer as ``application/sdp``,
or as ``multipart/form-data`` with fields ``sdp`` and ``session`` (JSON). ``POST /whip`` is the
same session through WHIP (RFC 9725). Both answer ``201`` with the SDP answer and a ``Location``
whose ``DELETE`` hangs up. Errors are JSON with the right status (``errors.py``).

Where answers come from is behind ``CallSignaling``: a transceiver in this process
(``voicewire serve``) or one picked from the cluster's registry (``voicewire gateway``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from voicewire.agents import realtime_events as rt
from voicewire.gateway.errors import ApiError, json_errors
from voicewire.gateway.keys import DEFAULT_TTL, KeyStore, KeysUnavailable, Unauthorized
from voicewire.gateway.signaling import CallSignaling
from voicewire.http_service import add_ops_routes

MAX_OFFER_BYTES = 64 * 1024
STATIC = Path(__file__).with_name("static")
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location",
}

SIGNALING = web.AppKey("signaling", CallSignaling)
KEYS = web.AppKey("keys", KeyStore)


def create_app(
    signaling: CallSignaling,
    ready: Callable[[], bool],
    registries: list[CollectorRegistry],
    keys: KeyStore,
) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_OFFER_BYTES + 4096)
    app[SIGNALING] = signaling
    app[KEYS] = keys
    app.router.add_post("/v1/realtime/client_secrets", post_client_secret)
    app.router.add_post("/v1/realtime/calls", post_call)
    app.router.add_delete("/v1/realtime/calls/{call_id}", delete_call)
    app.router.add_post("/whip", post_call)
    app.router.add_delete("/whip/{call_id}", delete_call)
    app.router.add_patch("/whip/{call_id}", patch_whip)
    for path in ("/v1/realtime/calls", "/v1/realtime/calls/{call_id}", "/whip", "/whip/{call_id}"):
        app.router.add_route("OPTIONS", path, preflight)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    add_ops_routes(app, ready, registries)
    return app


async def post_client_secret(request: web.Request) -> web.Response:
    """Mint an ``ek_`` key for a browser (OpenAI's client secrets convention)."""
    keys = request.app[KEYS]
    with _key_errors():
        keys.check_api_key(request.headers.get("Authorization"))
    body = await read_json_object(request)
    expires = body.get("expires_after") or {}
    session = body.get("session") or {}
    if not isinstance(expires, dict) or expires.get("anchor", "created_at") != "created_at":
        raise ApiError(400, "expires_after must be {'anchor': 'created_at', 'seconds': N}")
    _check_session(session, "session")
    seconds = expires.get("seconds", DEFAULT_TTL)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise ApiError(400, "expires_after.seconds must be an integer")
    try:
        with _key_errors():
            key = await keys.mint(seconds, session, time.time())
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    except OverflowError as exc:
        raise ApiError(503, str(exc)) from None
    return web.json_response(
        {"value": key.value, "expires_at": int(key.expires_at), "session": key.session}
    )


async def post_call(request: web.Request) -> web.Response:
    keys = request.app[KEYS]
    with _key_errors():
        bound = await keys.authorize_call(request.headers.get("Authorization"), time.time())
    offer, session = await _read_offer(request)
    config = rt.merge_session(session, bound)  # the key's binding wins over the request
    call_id, answer = await request.app[SIGNALING].answer(offer, config)
    base = "/whip" if request.path.startswith("/whip") else "/v1/realtime/calls"
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"{base}/{call_id}", **_CORS},
    )


async def delete_call(request: web.Request) -> web.Response:
    if not await request.app[SIGNALING].hang_up(request.match_info["call_id"]):
        raise ApiError(404, "no such call")
    return web.Response(status=200, headers=_CORS)


async def patch_whip(request: web.Request) -> web.Response:
    # RFC 9725 §4.3.1: a server without trickle ICE or ICE restarts answers PATCH with 405. We
    # are ICE-lite with one candidate, so the client's candidates are never needed.
    raise ApiError(405, "trickle ICE and ICE restarts are not supported; send a new offer")


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={**_CORS, "Accept-Post": "application/sdp"})


@contextlib.contextmanager
def _key_errors() -> Iterator[None]:
    try:
        yield
    except Unauthorized as exc:
        raise ApiError(401, str(exc)) from None
    except KeysUnavailable as exc:
        raise ApiError(503, str(exc)) from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty); ApiError 400 for anything else."""
    if not await request.read():
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


async def _read_offer(request: web.Request) -> tuple[str, dict[str, Any]]:
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        raise ApiError(413, f"the offer is larger than {MAX_OFFER_BYTES} bytes")
    if request.content_type == "application/sdp":
        return await _text(request), {}
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        sdp, session = form.get("sdp"), form.get("session")
        if sdp is None:
            raise ApiError(400, "multipart form without an 'sdp' field")
        return _field_text(sdp), _session_config(session)
    raise ApiError(
        415,
        f"send the offer as application/sdp or multipart/form-data, not {request.content_type}",
    )


async def _text(request: web.Request) -> str:
    return _utf8(await request.read(), "the offer")


def _field_text(value: Any) -> str:
    return (
        value if isinstance(value, str) else _utf8(value.file.read(MAX_OFFER_BYTES + 1), "a field")
    )


def _utf8(data: bytes, what: str) -> str:
    if len(data) > MAX_OFFER_BYTES:
        raise ApiError(413, f"{what} is larger than {MAX_OFFER_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"{what} is not UTF-8 text") from None


def _session_config(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        config = json.loads(_field_text(value))
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the 'session' field is not JSON: {exc}") from None
    _check_session(config, "session")
    return config


def _check_session(session: Any, name: str) -> None:
    """A session config, checked against the same schema as ``session.update`` (docs/events.md)."""
    try:
        rt.validate_session(session, name)
    except rt.EventError as exc:
        raise ApiError(400, f"invalid session config: {exc.message}") from None


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")
