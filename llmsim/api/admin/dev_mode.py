"""vLLM's development endpoints, served only with ``VLLM_SERVER_DEV_MODE=1``.

Without it they are unknown paths (404), as in vLLM. With it, as far as a simulator can
mean them:

- ``POST /reset_prefix_cache`` empties the step model's prefix cache (KV events publish
  ``AllBlocksCleared``); ``reset_running_requests=true`` preempts running sequences first,
  otherwise, as in vLLM, blocks still in use make it a logged no-op. Always 200.
- ``POST /reset_mm_cache`` and ``POST /reset_encoder_cache``: 200, nothing is cached.
- ``POST /pause`` (``mode`` abort, wait or keep; ``clear_cache``), ``POST /resume``,
  ``GET /is_paused`` and ``POST /abort_requests`` drive the engine's scheduler as vLLM's do.
- ``GET /server_info``: the configuration (``config_format`` text or json) and the
  ``VLLM_*`` environment, without keys.
- ``/sleep``, ``/wake_up``, ``/is_sleeping``: see :mod:`llmsim.api.admin.sleep`.

vLLM's weight-transfer and ``/collective_rpc`` endpoints need a model's workers; a
simulator has none, so they are not served.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from aiohttp import web

from llmsim.api.admin.server_info import server_info
from llmsim.api.admin.sleep import sleep_routes
from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import ENGINE
from llmsim.engine import PAUSE_MODES

logger = logging.getLogger("llmsim.api")

DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"
_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "f", "n"})


def dev_mode(environ: Mapping[str, str] | None = None) -> bool:
    """vLLM's ``VLLM_SERVER_DEV_MODE``: any integer other than 0 turns it on."""
    value = (os.environ if environ is None else environ).get(DEV_MODE_ENV, "0").strip()
    try:
        return int(value) != 0
    except ValueError:
        return False


def dev_routes() -> list[web.RouteDef]:
    if not dev_mode():
        return []
    logger.warning(
        "SECURITY WARNING: Development endpoints are enabled! "
        "This should NOT be used in production!"
    )
    return [
        *sleep_routes(),
        web.post("/reset_prefix_cache", reset_prefix_cache),
        web.post("/reset_mm_cache", reset_nothing),
        web.post("/reset_encoder_cache", reset_nothing),
        web.post("/pause", pause),
        web.post("/resume", resume),
        web.get("/is_paused", is_paused),
        web.post("/abort_requests", abort_requests),
        web.get("/server_info", server_info),
    ]


def query_flag(request: web.Request, name: str, default: bool) -> bool:
    """A boolean query parameter, spelled as FastAPI accepts it (true/false, 1/0, ...)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise APIError(400, f"{name} must be a boolean, not {raw!r}", name)


def _json(body: object) -> web.Response:
    return web.Response(body=dumps(body), content_type="application/json")


async def reset_prefix_cache(request: web.Request) -> web.Response:
    reset_running = query_flag(request, "reset_running_requests", False)
    query_flag(request, "reset_external", False)  # no connector holds a cache here
    logger.info("Resetting prefix cache...")
    await request.app[ENGINE].reset_prefix_cache(reset_running)
    return web.Response(status=200)


async def reset_nothing(request: web.Request) -> web.Response:
    """The multi-modal and encoder caches: a simulator keeps neither."""
    return web.Response(status=200)


async def pause(request: web.Request) -> web.Response:
    mode = request.query.get("mode", "abort")
    if query_flag(request, "wait_for_inflight_requests", False):
        mode = "wait"  # vLLM's older spelling of mode=wait
    if mode not in PAUSE_MODES:
        raise APIError(400, f"Invalid pause mode: {mode}", "mode")
    clear_cache = query_flag(request, "clear_cache", True)
    engine = request.app[ENGINE]
    await engine.pause(mode)
    if clear_cache and mode != "keep":
        await engine.reset_prefix_cache()
    return _json({"status": "paused"})


async def resume(request: web.Request) -> web.Response:
    request.app[ENGINE].resume()
    return _json({"status": "resumed"})


async def is_paused(request: web.Request) -> web.Response:
    return _json({"is_paused": request.app[ENGINE].scheduler.paused})


async def abort_requests(request: web.Request) -> web.Response:
    """End the named requests (every one when none is named) with the tokens they have."""
    try:
        body = json.loads(await request.read() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "Invalid JSON format") from None
    ids = body.get("request_ids") if isinstance(body, dict) else None
    if ids is not None and not (
        isinstance(ids, list) and all(isinstance(item, str) for item in ids)
    ):
        raise APIError(400, "request_ids must be a list of strings", "request_ids")
    engine = request.app[ENGINE]
    if ids:
        engine.abort_in_flight(ids)
        count = len(ids)
    else:
        scheduler = engine.scheduler
        count = len({seq.request_id for seq in (*scheduler.running, *scheduler.waiting)})
        engine.abort_in_flight()
    return _json({"status": "aborted", "aborted": count})
