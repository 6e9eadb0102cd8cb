"""Typed application state (aiohttp ``AppKey``s) shared by the route modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from llmsim.config import Settings
from llmsim.engine import Engine, RequestGroup
from llmsim.faults import FaultInjector
from llmsim.lifecycle import Lifecycle
from llmsim.live_stats import LiveStats
from llmsim.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
METRICS = web.AppKey("metrics", Metrics)
FAULTS = web.AppKey("faults", FaultInjector)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
OPENAPI = web.AppKey("openapi", bytes)
LIVE_STATS = web.AppKey("live_stats", LiveStats)
"""Only present while the dashboard is on."""

ErrorListener = Callable[[int, str, str, str, str], None]
"""``(status, error type, message, method, path)`` of an error answer."""
ERROR_LISTENER: web.AppKey[ErrorListener] = web.AppKey("error_listener")
"""Only present while the dashboard is on; the error middleware calls it."""

if TYPE_CHECKING or hasattr(web, "RequestKey"):
    GENERATION = web.RequestKey("generation", RequestGroup)
    STARTED = web.RequestKey("started", float)
else:  # aiohttp before 3.13 has no typed request keys
    GENERATION = "llmsim.generation"
    STARTED = "llmsim.started"
# GENERATION: the inference request's sequences, for the access log's model and tokens.
# STARTED: ``time.perf_counter()`` when the request reached the app, for its duration.
