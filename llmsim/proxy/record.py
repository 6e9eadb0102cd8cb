"""``llmsim record``: a proxy that writes down what a real server answers, and when.

Chat and completions requests are forwarded unchanged, streamed or not, and their
answers returned unchanged; each one adds a JSON line to the output file (see
:mod:`llmsim.answers.recording` for the format) that ``llmsim serve --replay`` reads.
Every other path is forwarded without being recorded, so clients that list models or
check health keep working.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

from llmsim.proxy.capture import Capture
from llmsim.proxy.forward import ENDPOINTS, UpstreamError, error_json, is_stream, parsed_body, relay

logger = logging.getLogger("llmsim.record")

SESSION = web.AppKey("session", aiohttp.ClientSession)
OUT = web.AppKey("out", IO[str])
UPSTREAM = web.AppKey("upstream", str)


def create_record_app(upstream: str, out: Path) -> web.Application:
    """The recording proxy in front of ``upstream``, appending to ``out``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/")

    async def open_and_close(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession()
        app[OUT] = out.open("a", encoding="utf-8")
        yield
        await app[SESSION].close()
        app[OUT].close()

    app.cleanup_ctx.append(open_and_close)
    app.router.add_route("*", r"/{path:[\s\S]*}", _forward)
    return app


async def _forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    url = request.app[UPSTREAM] + request.path_qs
    endpoint = ENDPOINTS.get(request.path) if request.method == "POST" else None
    capture = Capture() if endpoint is not None else None
    try:
        response = await relay(request, request.app[SESSION], url, body, capture)
    except UpstreamError as exc:
        message = f"The upstream server {request.app[UPSTREAM]} did not answer: {exc}"
        response = web.Response(
            status=502, body=error_json(502, message), content_type="application/json"
        )
        if capture is not None:
            capture.whole(response.body if isinstance(response.body, bytes) else b"")
    if endpoint is not None and capture is not None:
        record = capture.record(endpoint, parsed_body(body), response.status, is_stream(body))
        out = request.app[OUT]
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    return response
