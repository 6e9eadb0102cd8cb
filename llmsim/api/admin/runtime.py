"""``/admin/*``: read and change the runtime settings, pin and clear metric overrides.

Thin handlers: validation and the swap live in :mod:`llmsim.runtime.adjustable` and
:mod:`llmsim.settings.fake_metrics`; errors come back in vLLM's shape with status 400.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import METRICS, RUNTIME
from llmsim.api.http.requests import read_json_object
from llmsim.runtime.adjustable import RUNTIME_FIELDS, Runtime, RuntimeUpdateError, settings_view
from llmsim.settings.fake_metrics import FakeMetricsError, parse_spec
from llmsim.settings.sources import display_value

logger = logging.getLogger("llmsim.admin")


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=dumps(body), content_type="application/json")


def _config_body(runtime: Runtime) -> dict[str, Any]:
    return {"settings": settings_view(runtime.settings), "adjustable": list(RUNTIME_FIELDS)}


async def get_config(request: web.Request) -> web.Response:
    return _json(_config_body(request.app[RUNTIME]))


async def update_config(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    changes = await read_json_object(request)
    try:
        changed = runtime.update(changes)
    except RuntimeUpdateError as exc:
        raise APIError(400, exc.message, exc.param) from None
    if changed:
        settings = runtime.settings
        logger.info(
            "runtime settings changed: %s",
            ", ".join(f"{name}={display_value(name, getattr(settings, name))}" for name in changed),
        )
    return _json({**_config_body(runtime), "changed": changed})


def _overrides_body(request: web.Request) -> dict[str, Any]:
    overrides = request.app[METRICS].overrides
    spec = overrides.spec
    return {
        "active": spec is not None,
        "overrides": None if spec is None else spec.describe(),
        "elapsed_seconds": overrides.elapsed(),
        "current": overrides.current(),
    }


async def get_metric_overrides(request: web.Request) -> web.Response:
    return _json(_overrides_body(request))


async def set_metric_overrides(request: web.Request) -> web.Response:
    data = await read_json_object(request)
    try:
        spec = parse_spec(data)
        request.app[RUNTIME].set_fake_metrics(spec)
    except FakeMetricsError as exc:
        raise APIError(400, exc.message, exc.param) from None
    logger.info("metric overrides set: %s", spec.describe() or "none")
    return _json(_overrides_body(request))


async def clear_metric_overrides(request: web.Request) -> web.Response:
    request.app[RUNTIME].set_fake_metrics(None)
    logger.info("metric overrides cleared")
    return _json(_overrides_body(request))
