"""Which of a server's data-parallel engines serves a request.

As in vLLM, an ``X-data-parallel-rank`` header sends the request to that rank's engine (a
value that is not a whole number is ignored, one this server does not run is refused);
otherwise the internal balancer picks the least loaded engine. A server with one engine
ignores the header.
"""

from __future__ import annotations

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.engine.data_parallel import DataParallelEngines

DP_RANK_HEADER = "X-data-parallel-rank"


def engine_index(request: web.BaseRequest, engines: DataParallelEngines) -> int:
    """The index in ``engines`` of the engine that takes ``request``."""
    if len(engines.engines) == 1:
        return 0
    asked = request.headers.get(DP_RANK_HEADER)
    if asked is not None:
        try:
            rank = int(asked)
        except ValueError:
            return engines.choose()
        index = engines.index_of(rank)
        if index is None:
            first, last = engines.ranks[0], engines.ranks[-1]
            raise APIError(400, f"data_parallel_rank {rank} is out of range [{first}, {last + 1}).")
        return index
    return engines.choose()
