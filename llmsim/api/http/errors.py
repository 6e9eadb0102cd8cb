"""vLLM's error shape (:mod:`llmsim.api.http.guard` makes every error answer use it).

``{"error": {"message": str, "type": str, "param": str | null, "code": int}}``; no input
produces a traceback in a response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from llmsim.api.http.jsonio import dumps

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
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers
        self.type = type
        """The error type to report; None derives it from the status as vLLM does."""


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")


def error_body(
    status: int, message: str, param: str | None = None, type: str | None = None
) -> bytes:
    kind = type or error_type(status)
    return dumps({"error": {"message": message, "type": kind, "param": param, "code": status}})


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    type: str | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message, param, type),
        content_type="application/json",
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


ANTHROPIC_PREFIX = "/v1/messages"
MESSAGES_RENDER = "/v1/messages/render"
"""A scale-out route under the prefix whose errors vLLM gives in OpenAI's shape."""
"""Errors on the Messages API come in Anthropic's shape, as vLLM answers them."""


def anthropic_error_response(
    status: int, message: str, headers: dict[str, str] | None = None, type: str | None = None
) -> web.Response:
    """``{"type": "error", "error": {"type": ..., "message": ...}}`` with vLLM's error type."""
    kind = type or error_type(status)
    body = dumps({"type": "error", "error": {"type": kind, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def shaped_error_response(
    path: str,
    status: int,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    type: str | None = None,
) -> web.Response:
    """The error answer for a request to ``path``: Anthropic's shape on the Messages API."""
    if path.startswith(ANTHROPIC_PREFIX) and path != MESSAGES_RENDER:
        return anthropic_error_response(status, message, headers, type)
    return error_response(status, message, param, headers, type)
