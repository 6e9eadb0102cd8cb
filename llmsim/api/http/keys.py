"""Typed application state (aiohttp ``AppKey``s) shared by the route modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from llmsim.answers import Responder
from llmsim.engine import Engine, RequestGroup
from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.observability.live_stats import LiveStats
from llmsim.observability.metrics import Metrics
from llmsim.runtime.adjustable import Runtime
from llmsim.runtime.lifecycle import Lifecycle
from llmsim.settings.model import Settings

if TYPE_CHECKING:
    from llmsim.service.load import ServerLoad

SETTINGS = web.AppKey("settings", Settings)
"""The start-up settings. Runtime-adjustable values (latency, mode, failure injection)
may have changed since: read those from ``RUNTIME``."""
ENGINE = web.AppKey("engine", Engine)
"""The first engine: what every data-parallel engine shares (tokenizer, adapters, settings)."""
ENGINES = web.AppKey("engines", DataParallelEngines)
"""Every engine of the server, in rank order (one, unless it is data-parallel)."""
METRICS = web.AppKey("metrics", Metrics)
RUNTIME = web.AppKey("runtime", Runtime)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
OPENAPI = web.AppKey("openapi", bytes)
RESPONDER = web.AppKey("responder", Responder)
"""Response rules, datasets and replays: answers chosen before generation."""
LIVE_STATS = web.AppKey("live_stats", LiveStats)
"""Only present while the dashboard is on."""

SERVER_LOAD: web.AppKey[ServerLoad] = web.AppKey("server_load")
"""Requests in flight on the model endpoints (``GET /load``)."""

ErrorListener = Callable[[int, str, str, str, str], None]
"""``(status, error type, message, method, path)`` of an error answer."""
ERROR_LISTENER: web.AppKey[ErrorListener] = web.AppKey("error_listener")
"""Only present while the dashboard is on; the error middleware calls it."""

if TYPE_CHECKING or hasattr(web, "RequestKey"):
    GENERATION = web.RequestKey("generation", RequestGroup)
    STARTED = web.RequestKey("started", float)
    STREAMED = web.RequestKey("streamed", int)
    BODY = web.RequestKey("body", bytes)
    LARGE_BODY = web.RequestKey("large_body", bool)
else:  # aiohttp before 3.13 has no typed request keys
    GENERATION = "llmsim.generation"
    STARTED = "llmsim.started"
    STREAMED = "llmsim.streamed"
    BODY = "llmsim.body"
    LARGE_BODY = "llmsim.large_body"
# GENERATION: the inference request's sequences, for the access log's model and tokens.
# STARTED: ``time.perf_counter()`` when the request reached the app, for its duration.
# STREAMED: bytes of tokens written to a stream's connection directly, not through aiohttp.
# BODY: a compressed body once inflated, for a second read (the upstream fallback).
# LARGE_BODY: set when the body is large enough that working on it moves off the event loop.
