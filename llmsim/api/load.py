"""vLLM's server-load tracking: ``GET /load`` and the in-flight count behind it.

vLLM counts the requests in flight on its model endpoints (chat, completions,
embeddings, pooling) and answers ``{"server_load": N}``; load-aware routers read it.
A stream counts until its last byte is written.
"""

from __future__ import annotations

from aiohttp import web

from llmsim.api.errors import Handler
from llmsim.api.jsonio import dumps
from llmsim.api.keys import SERVER_LOAD


class ServerLoad:
    """Requests in flight on the model endpoints."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def load_aware(handler: Handler) -> Handler:
    """``handler`` counted in ``/load`` while it runs."""

    async def counted(request: web.Request) -> web.StreamResponse:
        load = request.app[SERVER_LOAD]
        load.count += 1
        try:
            return await handler(request)
        finally:
            load.count -= 1

    counted.__name__ = getattr(handler, "__name__", "counted")
    counted.__doc__ = handler.__doc__
    return counted


async def get_load(request: web.Request) -> web.Response:
    return web.Response(
        body=dumps({"server_load": request.app[SERVER_LOAD].count}),
        content_type="application/json",
    )
