"""Operational endpoints: liveness, version and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from llmsim import __version__
from llmsim.api.http.errors import error_response
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import LIFECYCLE, METRICS, OPENAPI
from llmsim.observability.metrics import CONTENT_TYPE
from llmsim.service.generation import NOT_SERVING

__all__ = ["NOT_SERVING", "health", "metrics", "openapi", "ready", "version"]


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def ready(request: web.Request) -> web.Response:
    """Readiness: 503 while the simulated model loads and while draining."""
    phase = request.app[LIFECYCLE].phase
    if phase == "ready":
        return web.Response(body=dumps({"status": "ready"}), content_type="application/json")
    return error_response(503, NOT_SERVING[phase])


async def version(request: web.Request) -> web.Response:
    return web.Response(body=dumps({"version": __version__}), content_type="application/json")


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[METRICS].exposition())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
