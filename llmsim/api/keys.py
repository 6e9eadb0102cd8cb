"""Typed application state (aiohttp ``AppKey``s) shared by the route modules."""

from __future__ import annotations

from aiohttp import web

from llmsim.config import Settings
from llmsim.engine import Engine
from llmsim.lifecycle import Lifecycle
from llmsim.metrics import Metrics
from llmsim.runtime import Runtime

SETTINGS = web.AppKey("settings", Settings)
"""The start-up settings. Runtime-adjustable values (latency, mode, failure injection)
may have changed since: read those from ``RUNTIME``."""
ENGINE = web.AppKey("engine", Engine)
METRICS = web.AppKey("metrics", Metrics)
RUNTIME = web.AppKey("runtime", Runtime)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
OPENAPI = web.AppKey("openapi", bytes)
