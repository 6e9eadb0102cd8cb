"""Forwarding one request to the upstream server and passing its answer on unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from llmsim.proxy.capture import Capture

FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept", "X-Request-Id")
RETURNED_HEADERS = ("Content-Type", "X-Request-Id", "Retry-After", "WWW-Authenticate")
"""The client session decompresses answers (so they can be read), hence no Content-Encoding."""
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time."""


def upstream_headers(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}


def error_json(status: int, message: str) -> bytes:
    """vLLM's error shape, for failures of the proxy itself (the upstream is unreachable)."""
    kind = "InternalServerError" if status >= 500 else "BadRequestError"
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return json.dumps(body).encode()


def is_stream(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, Mapping) and parsed.get("stream") is True


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the timeout."""


async def relay(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    capture: Capture | None,
    timeout: float | None = None,
    server_errors_fail: bool = False,
) -> web.StreamResponse:
    """Send ``body`` to ``url`` and stream the answer back unchanged (read by ``capture``).

    ``timeout`` bounds the wait for the answer (a whole JSON answer, or the start of a
    stream and each read of it); with ``server_errors_fail`` a 5xx answer counts as a
    failure. Raises :class:`UpstreamError` only before anything was sent to the client,
    so a caller can still answer another way; a failure mid-stream ends the client's stream.
    """
    try:
        upstream = await asyncio.wait_for(
            session.request(
                request.method,
                url,
                data=body or None,
                headers=upstream_headers(request),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout),
            ),
            timeout,
        )
    except (TimeoutError, asyncio.TimeoutError):
        raise UpstreamTimeout(f"no answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(str(exc) or type(exc).__name__) from None
    async with upstream:
        if server_errors_fail and upstream.status >= 500:
            raise UpstreamError(f"answered {upstream.status}")
        headers = {
            name: upstream.headers[name] for name in RETURNED_HEADERS if name in upstream.headers
        }
        streamed = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
        if not streamed:
            try:
                data = await upstream.read()
            except (TimeoutError, asyncio.TimeoutError):
                raise UpstreamTimeout(f"no answer within {timeout:g} s") from None
            except aiohttp.ClientError as exc:
                raise UpstreamError(str(exc) or type(exc).__name__) from None
            if capture is not None:
                capture.whole(data)
            return web.Response(status=upstream.status, body=data, headers=headers)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        try:
            async for data in upstream.content.iter_any():
                if capture is not None:
                    capture.feed(data)
                await response.write(data)
        except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError):
            pass  # the upstream broke off: so does the client's stream
        await response.write_eof()
        return response


def parsed_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")
