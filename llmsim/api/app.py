"""The aiohttp application factory: wires settings, engine, metrics and routes."""

from __future__ import annotations

from aiohttp import web

from llmsim.api import inference, models, system
from llmsim.api.errors import error_middleware
from llmsim.api.keys import ENGINE, METRICS, SETTINGS
from llmsim.config import Settings
from llmsim.engine import Engine
from llmsim.metrics import Metrics

MAX_REQUEST_BODY = 4 * 1024 * 1024


def create_app(settings: Settings) -> web.Application:
    metrics = Metrics(settings)
    engine = Engine(settings, observer=metrics)
    metrics.track(engine.scheduler, settings.kv_cache_size)

    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_REQUEST_BODY)
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[METRICS] = metrics
    app.add_routes(
        [
            web.post("/v1/chat/completions", inference.create_chat_completion),
            web.post("/v1/completions", inference.create_completion),
            web.get("/v1/models", models.list_models),
            web.post("/v1/load_lora_adapter", models.load_lora_adapter),
            web.post("/v1/unload_lora_adapter", models.unload_lora_adapter),
            web.get("/health", system.health),
            web.get("/version", system.version),
            web.get("/metrics", system.metrics),
        ]
    )
    return app
