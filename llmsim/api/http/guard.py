"""One wrapper around every route: access-log timing, the API key and vLLM's error shape.

These were three aiohttp middlewares. A middleware chain costs each request a coroutine
frame per middleware plus aiohttp's own, 10–20 µs of a 150–190 µs request, so the same
steps now run in one frame that wraps each handler when the routes are added. Requests
that match no route reach :func:`not_routed` through a catch-all route, so a 404 or 405
gets the same treatment. The few requests that no route can be tried for (``OPTIONS *``, a
target with an empty path) are answered by aiohttp itself; :func:`shape_unrouted` gives
those answers the same shape.
"""

from __future__ import annotations

import hmac
import logging
import time
from http import HTTPStatus

from aiohttp import web

from llmsim.api.http.errors import APIError, Handler, error_body, error_type, shaped_error_response
from llmsim.api.http.keys import ERROR_LISTENER, STARTED
from llmsim.service.errors import ServiceError
from llmsim.service.load import ServerLoad

logger = logging.getLogger("llmsim.api")

PROTECTED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere", "/admin/")
"""Paths that need ``Authorization: Bearer <key>`` (or ``x-api-key: <key>``) when the server
has an API key: vLLM's guarded prefixes, and llmsim's admin routes."""
UNAUTHORIZED = "Unauthorized: a valid 'Authorization: Bearer <key>' header is required."


def guard(
    handler: Handler,
    *,
    timing: bool,
    api_key: str | None,
    load: ServerLoad | None = None,
    log_errors: bool = False,
) -> Handler:
    """``handler`` behind the steps every route shares, in this order:

    note the start time (``timing``, for the access log: aiohttp's loop clock under uvloop
    counts whole milliseconds), count the request in ``load`` until its last byte is
    written (``/load``), check the bearer token (``api_key``, compared in constant time,
    never echoed), and turn every failure into vLLM's JSON error (logged with its stack trace
    with ``log_errors``, vLLM's ``--log-error-stack``).
    """
    expected = api_key.encode() if api_key is not None else None

    async def guarded(request: web.Request) -> web.StreamResponse:
        if timing:
            request[STARTED] = time.perf_counter()
        if load is not None:
            load.count += 1
        try:
            if expected is not None and not _authorized(request, expected):
                raise APIError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)
        except APIError as exc:
            _report(request, exc.status, exc.message, log_errors)
            return shaped_error_response(
                request.path, exc.status, exc.message, exc.param, exc.headers, exc.type
            )
        except ServiceError as exc:  # a refusal of the layer every door shares
            _report(request, exc.status, exc.message, log_errors)
            return shaped_error_response(
                request.path, exc.status, exc.message, exc.param, None, exc.type
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            message = _http_message(exc, request)
            _report(request, exc.status, message, log_errors)
            return shaped_error_response(request.path, exc.status, message, headers=headers)
        except ConnectionError:
            raise
        except Exception:
            logger.exception("unhandled error for %s %s", request.method, request.path)
            _report(request, 500, "Internal server error")
            return shaped_error_response(request.path, 500, "Internal server error")
        finally:
            if load is not None:
                load.count -= 1

    guarded.__name__ = getattr(handler, "__name__", "guarded")
    guarded.__doc__ = handler.__doc__
    return guarded


async def not_routed(request: web.Request) -> web.StreamResponse:
    """The catch-all route: a 405 with ``Allow`` if the path exists, else a 404."""
    allowed: set[str] = set()
    this = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is this:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def shape_unrouted(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: aiohttp's own answer to an unroutable request becomes JSON.

    aiohttp answers with the HTTP exception itself; every exception a route raises was
    already turned into a JSON response by :func:`guard`, so only these are left.
    """
    if not isinstance(response, web.HTTPException) or response.status < 400:
        return
    message = _http_message(response, request)
    _report(request, response.status, message)
    body = error_body(response.status, message)
    response.body = body
    response.content_type = "application/json"
    response.charset = None
    if "Content-Length" in response.headers:  # already set, for aiohttp's text
        response.headers["Content-Length"] = str(len(body))


def _authorized(request: web.Request, expected: bytes) -> bool:
    if not request.path.startswith(PROTECTED_PREFIXES):
        return True
    api_key = request.headers.get("x-api-key")  # how Anthropic's clients send it
    if api_key is not None and hmac.compare_digest(_header_bytes(api_key), expected):
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(_header_bytes(token), expected)


def _header_bytes(value: str) -> bytes:
    """A header value as the bytes the client sent (aiohttp keeps bytes that are not UTF-8
    as surrogate escapes, which a plain ``encode`` refuses)."""
    return value.strip().encode("utf-8", "surrogateescape")


def _report(request: web.Request, status: int, message: str, with_stack: bool = False) -> None:
    """Pass an error answer to the listener kept on the app (the dashboard's stats), and log
    it with the stack trace that raised it when asked (``--log-error-stack``)."""
    if with_stack:
        logger.error(
            "error response %d to %s %s: %s",
            status,
            request.method,
            request.path,
            message,
            exc_info=True,
        )
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
