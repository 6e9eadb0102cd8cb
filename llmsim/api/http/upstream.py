"""``--upstream URL``: forward inference requests to a real server, simulate when it fails.

The request body goes to the upstream unchanged and its answer comes back unchanged.
When the upstream cannot be reached, answers 5xx or does not answer within
``--upstream-timeout``, the request is simulated as if there were no upstream; both
paths are counted in ``llmsim:upstream_requests_total``.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from llmsim.api.http.bodies import read_body
from llmsim.api.http.errors import Handler
from llmsim.api.http.keys import METRICS, SETTINGS
from llmsim.proxy.forward import UpstreamError, UpstreamTimeout, relay

logger = logging.getLogger("llmsim.upstream")

SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)


def attach_upstream(app: web.Application) -> None:
    """Open one client session for the app's lifetime (only when --upstream is set)."""

    async def open_session(app: web.Application) -> None:
        app[SESSION] = aiohttp.ClientSession()

    async def close_session(app: web.Application) -> None:
        if SESSION in app:
            await app[SESSION].close()

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)


def forwarding(handler: Handler) -> Handler:
    """``handler`` tried only when the upstream does not answer (routes built with --upstream)."""

    async def forwarded_or_simulated(request: web.Request) -> web.StreamResponse:
        answer = await forward(request)
        return answer if answer is not None else await handler(request)

    forwarded_or_simulated.__name__ = getattr(handler, "__name__", "forwarded_or_simulated")
    forwarded_or_simulated.__doc__ = handler.__doc__
    return forwarded_or_simulated


async def forward(request: web.Request) -> web.StreamResponse | None:
    """The upstream's answer, or None to simulate (no upstream, or it failed)."""
    settings = request.app[SETTINGS]
    if settings.upstream is None or SESSION not in request.app:
        return None
    metrics = request.app[METRICS]
    body = await read_body(request, settings.max_request_body_size)
    try:
        response = await relay(
            request,
            request.app[SESSION],
            settings.upstream + request.path_qs,
            body,
            None,
            timeout=settings.upstream_timeout,
            server_errors_fail=True,
        )
    except UpstreamTimeout as exc:
        metrics.upstream_request("fallback_timeout")
        logger.warning("upstream %s timed out (%s): simulating", settings.upstream, exc)
        return None
    except UpstreamError as exc:
        metrics.upstream_request("fallback_error")
        logger.warning("upstream %s failed (%s): simulating", settings.upstream, exc)
        return None
    metrics.upstream_request("upstream")
    return response
