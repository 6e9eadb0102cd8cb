"""The aiohttp application factory: wires settings, engine, metrics and routes."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from llmsim.api import admin, inference, models, system
from llmsim.api.auth import auth_middleware
from llmsim.api.errors import error_middleware
from llmsim.api.jsonio import dumps
from llmsim.api.keys import ENGINE, LIFECYCLE, METRICS, OPENAPI, RUNTIME, SETTINGS
from llmsim.api.openapi import build_openapi
from llmsim.config import Settings
from llmsim.engine import Engine
from llmsim.lifecycle import Lifecycle
from llmsim.metrics import Metrics
from llmsim.runtime import Runtime


def create_app(settings: Settings, lifecycle: Lifecycle | None = None) -> web.Application:
    metrics = Metrics(settings)
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
    app[RUNTIME] = Runtime(settings, engine, metrics)
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
            web.get("/admin/config", admin.get_config),
            web.post("/admin/config", admin.update_config),
            web.get("/admin/metrics", admin.get_metric_overrides),
            web.post("/admin/metrics", admin.set_metric_overrides),
            web.delete("/admin/metrics", admin.clear_metric_overrides),
        ]
    )
    return app
