"""Typed application state (aiohttp ``AppKey``s) shared by the route modules."""

from __future__ import annotations

from aiohttp import web

from llmsim.config import Settings
from llmsim.engine import Engine
from llmsim.faults import FaultInjector
from llmsim.lifecycle import Lifecycle
from llmsim.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
METRICS = web.AppKey("metrics", Metrics)
FAULTS = web.AppKey("faults", FaultInjector)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
OPENAPI = web.AppKey("openapi", bytes)
