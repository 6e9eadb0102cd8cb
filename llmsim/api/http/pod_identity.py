"""Pod identity headers for gateway tests: which pod (and port) answered a request.

The llm-d inference simulator's convention, read from the Kubernetes Downward API:
with ``POD_NAME`` set every response carries ``x-inference-pod`` and ``x-inference-port``
(the port the request arrived on), with ``POD_NAMESPACE`` set ``x-inference-namespace``.
Without either nothing is installed, so the answers pay nothing for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aiohttp import web

POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
POD_HEADER = "x-inference-pod"
NAMESPACE_HEADER = "x-inference-namespace"
PORT_HEADER = "x-inference-port"


def install_pod_identity(app: web.Application, environ: Mapping[str, str] | None = None) -> bool:
    """Add the headers to every response of ``app`` when the pod is named; True if added."""
    environ = os.environ if environ is None else environ
    pod = environ.get(POD_NAME_ENV, "").strip()
    namespace = environ.get(POD_NAMESPACE_ENV, "").strip()
    if not pod and not namespace:
        return False
    fixed: dict[str, str] = {}
    if pod:
        fixed[POD_HEADER] = pod
    if namespace:
        fixed[NAMESPACE_HEADER] = namespace

    async def add_identity(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(fixed)
        if pod:
            port = _local_port(request)
            if port is not None:
                response.headers[PORT_HEADER] = str(port)

    app.on_response_prepare.append(add_identity)
    return True


def _local_port(request: web.Request) -> int | None:
    """The port of the socket the request arrived on (each data-parallel rank has its own)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return int(sockname[1])
    return None
