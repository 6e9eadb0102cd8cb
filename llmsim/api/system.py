"""Operational endpoints: liveness, version and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from llmsim import __version__
from llmsim.api.jsonio import dumps
from llmsim.api.keys import METRICS
from llmsim.metrics import CONTENT_TYPE


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return web.Response(body=dumps({"version": __version__}), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[METRICS].exposition())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
