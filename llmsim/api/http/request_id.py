"""vLLM's ``--enable-request-id-headers``: every response names its request.

The header is the request's own ``X-Request-Id`` when it sent one, else a new random id
(vLLM's middleware does the same, and its id is not the engine's). Without the flag nothing
is installed, so answers pay nothing for it; generation answers still echo a header the
client sent, as before.
"""

from __future__ import annotations

import uuid

from aiohttp import web

REQUEST_ID_HEADER = "X-Request-Id"


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: name the request on its response (once)."""
    if REQUEST_ID_HEADER not in response.headers:
        asked = request.headers.get(REQUEST_ID_HEADER)
        response.headers[REQUEST_ID_HEADER] = uuid.uuid4().hex if asked is None else asked


def install_request_ids(app: web.Application) -> None:
    app.on_response_prepare.append(add_request_id)
