"""The aiohttp application factory: wires settings, engine, metrics and routes."""

from __future__ import annotations

import random

from aiohttp import web
from aiohttp.typedefs import Middleware

from llmsim.api import inference, models, system
from llmsim.api.auth import auth_middleware
from llmsim.api.errors import error_middleware
from llmsim.api.jsonio import dumps
from llmsim.api.keys import ENGINE, FAULTS, LIFECYCLE, METRICS, OPENAPI, SETTINGS
from llmsim.api.openapi import build_openapi
from llmsim.config import Settings
from llmsim.engine import Engine
from llmsim.faults import FaultInjector
from llmsim.lifecycle import Lifecycle
from llmsim.metrics import Metrics


def create_app(
    settings: Settings, lifecycle: Lifecycle | None = None, *, rank: int = 0
) -> web.Application:
    """One simulated vLLM server; ``rank`` is its data-parallel rank (the metrics' engine)."""
    metrics = Metrics(settings, engine=rank)
    engine = Engine(settings, observer=metrics)
    metrics.track(engine.scheduler, settings.kv_cache_size)

    middlewares: list[Middleware] = [error_middleware]
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
