"""vLLM's server-load tracking: ``GET /load`` and the in-flight count behind it.

vLLM counts the requests in flight on its model endpoints (chat, completions,
embeddings, pooling) and answers ``{"server_load": N}``; load-aware routers read it.
A stream counts until its last byte is written. gRPC's ``Generate`` and ``Embed`` calls
count in the same :class:`~llmsim.service.load.ServerLoad`.
"""

from __future__ import annotations

from aiohttp import web

from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import SERVER_LOAD, SETTINGS
from llmsim.service.load import ServerLoad

__all__ = ["COUNTED_PATHS", "ServerLoad", "get_load"]

COUNTED_PATHS = frozenset(
    {
        "/invocations",
        "/score",
        "/v1/score",
        "/rerank",
        "/v1/rerank",
        "/v2/rerank",
        "/classify",
        "/v2/embed",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
        "/pooling",
        "/inference/v1/generate",
    }
)
"""The routes counted in ``/load`` (vLLM's ``load_aware_call`` endpoints and their kin).

:func:`llmsim.api.http.guard.guard` counts them: the wrapper every route already has, so
counting costs no frame of its own."""


async def get_load(request: web.Request) -> web.Response:
    """vLLM's ``/load``: always there, 0 unless the server tracks its load."""
    tracked = request.app[SETTINGS].enable_server_load_tracking
    load = request.app[SERVER_LOAD].count if tracked else 0
    return web.Response(body=dumps({"server_load": load}), content_type="application/json")
