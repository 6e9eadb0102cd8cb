"""Which of a server's data-parallel engines serves a request.

As in vLLM, an ``X-data-parallel-rank`` header sends the request to that rank's engine (a
value that is not a whole number is ignored, one this server does not run is refused);
otherwise the internal balancer picks the least loaded engine. A server with one engine
ignores the header.
"""

from __future__ import annotations

from aiohttp import web

from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.service.generation import engine_index as rank_index

DP_RANK_HEADER = "X-data-parallel-rank"


def engine_index(request: web.BaseRequest, engines: DataParallelEngines) -> int:
    """The index in ``engines`` of the engine that takes ``request``
    (:func:`llmsim.service.generation.engine_index` with the header's value)."""
    if len(engines.engines) == 1:
        return 0
    return rank_index(engines, request.headers.get(DP_RANK_HEADER))
