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
from llmsim.api.keys import ERROR_LISTENER

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

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers


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
    """Turn every failure into vLLM's JSON error shape (and tell the dashboard, if any)."""
    try:
        return await handler(request)
    except APIError as exc:
        _report(request, exc.status, exc.message)
        return error_response(exc.status, exc.message, exc.param, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = _http_message(exc, request)
        _report(request, exc.status, message)
        return error_response(exc.status, message, headers=headers)
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        logger.exception("unhandled error for %s %s", request.method, request.path)
        _report(request, 500, "Internal server error")
        return error_response(500, "Internal server error")


def _report(request: web.Request, status: int, message: str) -> None:
    """Pass an error answer to the listener kept on the app (the dashboard's stats)."""
    listener = request.app.get(ERROR_LISTENER)
    if listener is not None:
        listener(status, error_type(status), message, request.method, request.path)


def _http_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"Not Found: {request.path}"
    if exc.status == 405:
        return f"Method {request.method} not allowed for {request.path}"
    if exc.status == 413:
        return "Request body too large"
    return exc.reason or HTTPStatus(exc.status).phrase
