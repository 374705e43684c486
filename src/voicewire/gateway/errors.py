"""Errors as clients of the OpenAI API expect them: JSON ``{"error": {"type", "message"}}``."""

from __future__ import annotations

import json
import logging

from aiohttp import web

log = logging.getLogger("voicewire.gateway")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    503: "server_error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> web.Response:
    body = {"error": {"type": _TYPES.get(status, "server_error"), "message": message}}
    return web.json_response(body, status=status, dumps=json.dumps)


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error with the right status, never an HTML page."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, f"the body is larger than {exc.max_size} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception:
        log.exception("request failed", extra={"path": request.path})
        return error_response(500, "internal error")
