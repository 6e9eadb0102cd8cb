"""vLLM's error shape, and the middleware that guarantees every error uses it.

``{"error": {"message": str, "type": str, "param": str | null, "code": int}}``; no input
produces a traceback in a response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from llmsim.api.jsonio import dumps

logger = logging.getLogger("llmsim.api")

ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "BadRequestError",
    413: "BadRequestError",
    415: "BadRequestError",
    422: "BadRequestError",
    429: "RateLimitError",
}


class APIError(Exception):
    """An error answered to the client in vLLM's shape."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    return dumps(
        {"error": {"message": message, "type": error_type(status), "param": param, "code": status}}
    )


def error_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message, param),
        content_type="application/json",
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into vLLM's JSON error shape."""
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, exc.message, exc.param)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _http_message(exc, request), headers=headers)
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        logger.exception("unhandled error for %s %s", request.method, request.path)
        return error_response(500, "Internal server error")


def _http_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"Not Found: {request.path}"
    if exc.status == 405:
        return f"Method {request.method} not allowed for {request.path}"
    if exc.status == 413:
        return "Request body too large"
    return exc.reason or HTTPStatus(exc.status).phrase
