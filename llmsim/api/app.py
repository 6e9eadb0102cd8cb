"""The aiohttp application factory: wires settings, engine, metrics and routes."""

from __future__ import annotations

import random

from aiohttp import web
from aiohttp.typedefs import Middleware

from llmsim.api import inference, models, system
from llmsim.api.access_log import timing_middleware
from llmsim.api.auth import auth_middleware
from llmsim.api.errors import error_middleware
from llmsim.api.jsonio import dumps
from llmsim.api.keys import (
    ENGINE,
    ERROR_LISTENER,
    FAULTS,
    LIFECYCLE,
    LIVE_STATS,
    METRICS,
    OPENAPI,
    SETTINGS,
)
from llmsim.api.openapi import build_openapi
from llmsim.config import Settings
from llmsim.engine import Engine, EngineObserver, FanOutObserver
from llmsim.faults import FaultInjector
from llmsim.lifecycle import Lifecycle
from llmsim.live_stats import LiveStats
from llmsim.metrics import Metrics


def create_app(settings: Settings, lifecycle: Lifecycle | None = None) -> web.Application:
    metrics = Metrics(settings)
    # The dashboard's stats are attached only when it is on, so they cost nothing otherwise.
    stats = LiveStats() if settings.dashboard else None
    observer: EngineObserver = metrics if stats is None else FanOutObserver(metrics, stats)
    engine = Engine(settings, observer=observer)
    metrics.track(engine.scheduler, settings.kv_cache_size)

    middlewares: list[Middleware] = [error_middleware]
    if settings.access_log_enabled:
        middlewares.insert(0, timing_middleware)
    if settings.api_key is not None:
        middlewares.append(auth_middleware(settings.api_key.get_secret_value()))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.max_request_body_size,
    )
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[METRICS] = metrics
    app[LIFECYCLE] = lifecycle or Lifecycle(settings.startup_duration)
    app[OPENAPI] = dumps(build_openapi())
    if stats is not None:
        app[LIVE_STATS] = stats
        app[ERROR_LISTENER] = stats.record_error
    app[FAULTS] = FaultInjector(
        rate_percent=settings.failure_injection_rate,
        types=settings.failure_types,
        stream_cut_percent=settings.stream_cut_rate,
        max_model_len=settings.max_model_len,
        rng=random.Random(None if settings.seed is None else settings.seed + 2),
        on_inject=metrics.injected_failure,
    )
    app.add_routes(
        [
            web.post("/v1/chat/completions", inference.create_chat_completion),
            web.post("/v1/completions", inference.create_completion),
            web.get("/v1/models", models.list_models),
            web.post("/v1/load_lora_adapter", models.load_lora_adapter),
            web.post("/v1/unload_lora_adapter", models.unload_lora_adapter),
            web.get("/health", system.health),
            web.get("/health/ready", system.ready),
            web.get("/ready", system.ready),
            web.get("/version", system.version),
            web.get("/metrics", system.metrics),
            web.get("/openapi.json", system.openapi),
        ]
    )
    return app
