"""vLLM's development endpoints for sleep mode: ``/sleep``, ``/wake_up``, ``/is_sleeping``.

As in vLLM they exist only with ``VLLM_SERVER_DEV_MODE=1`` (otherwise they are unknown
paths, 404); sleeping and waking also need ``--enable-sleep-mode``. ``POST /sleep`` takes
``level`` (0, 1, 2; default 1) and ``mode`` (abort, wait, keep; default abort) and answers
once the scheduler is paused: see :mod:`llmsim.runtime.sleep`. Inference is never refused
while asleep: requests queue until ``/wake_up``.
"""

from __future__ import annotations

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.runtime.sleep import (
    SCHEDULING_TAG,
    WAKE_TAGS,
    SleepArgumentError,
    SleepController,
    SleepModeDisabledError,
)

SLEEP: web.AppKey[SleepController] = web.AppKey("sleep", SleepController)


def sleep_routes() -> list[web.RouteDef]:
    """Served with the other development endpoints (:mod:`llmsim.api.admin.dev_mode`)."""
    return [
        web.post("/sleep", sleep),
        web.post("/wake_up", wake_up),
        web.get("/is_sleeping", is_sleeping),
    ]


async def sleep(request: web.Request) -> web.Response:
    raw = request.query.get("level", "1")
    try:
        level = int(raw)
    except ValueError:
        raise APIError(400, f"sleep level must be 0, 1 or 2, not {raw!r}", "level") from None
    mode = request.query.get("mode", "abort")
    try:
        await request.app[SLEEP].sleep(level, mode)
    except SleepArgumentError as exc:
        raise APIError(400, str(exc), exc.param) from None
    except SleepModeDisabledError as exc:
        raise APIError(500, str(exc)) from None
    return web.Response(status=200)


async def wake_up(request: web.Request) -> web.Response:
    tags = request.query.getall("tags", [])
    known = (*WAKE_TAGS, SCHEDULING_TAG)
    unknown = sorted(set(tags) - set(known))
    if unknown:
        raise APIError(400, f"unknown tags {', '.join(unknown)}: use {', '.join(known)}", "tags")
    try:
        request.app[SLEEP].wake_up(tags or None)
    except SleepModeDisabledError as exc:
        raise APIError(500, str(exc)) from None
    return web.Response(status=200)


async def is_sleeping(request: web.Request) -> web.Response:
    body = {"is_sleeping": request.app[SLEEP].is_sleeping}
    return web.Response(body=dumps(body), content_type="application/json")
