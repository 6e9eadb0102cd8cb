"""The aiohttp application factory: wires settings, engine, metrics and routes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from aiohttp import web

from llmsim.answers import Responder
from llmsim.answers.dataset import shared_dataset
from llmsim.answers.recording import load_replay
from llmsim.api.admin import answers as answers_admin
from llmsim.api.admin import runtime as admin
from llmsim.api.admin import system
from llmsim.api.admin.dev_mode import dev_routes
from llmsim.api.admin.load import COUNTED_PATHS, get_load
from llmsim.api.anthropic import routes as messages
from llmsim.api.http import upstream
from llmsim.api.http.cors import attach_cors
from llmsim.api.http.errors import Handler
from llmsim.api.http.guard import guard, not_routed, shape_unrouted
from llmsim.api.http.keys import (
    ENGINE,
    ENGINES,
    ERROR_LISTENER,
    LIFECYCLE,
    LIVE_STATS,
    METRICS,
    OPENAPI,
    RESPONDER,
    RUNTIME,
    SERVER_LOAD,
    SETTINGS,
)
from llmsim.api.http.kv_setup import KV_AGENTS, KV_TRANSFER, install_kv_features
from llmsim.api.http.openapi import openapi_document
from llmsim.api.http.pod_identity import install_pod_identity
from llmsim.api.http.request_id import install_request_ids
from llmsim.api.http.requests import OFF_LOOP_BYTES
from llmsim.api.http.sse import fingerprint_tail
from llmsim.api.openai import embeddings, inference, models, render, token_generate, tokenization
from llmsim.api.openai.fingerprint import system_fingerprint
from llmsim.api.openai.pooling_routes import invocations, pooling_routes
from llmsim.api.openai.request_log import RequestLogger
from llmsim.api.responses import routes as responses
from llmsim.api.responses.store import ResponseStore
from llmsim.engine import Engine, EngineObserver, FanOutObserver
from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.observability.live_stats import LiveStats
from llmsim.observability.metrics import Metrics
from llmsim.observability.stats_log import StatsLog
from llmsim.runtime.adjustable import Runtime
from llmsim.runtime.lifecycle import Lifecycle
from llmsim.service.load import ServerLoad
from llmsim.settings.model import Settings


def responder(settings: Settings) -> Responder:
    """The answer sources ``settings`` name: rules, dataset, recording."""
    dataset = None if settings.dataset is None else shared_dataset(settings.dataset)
    replay = None
    if settings.replay is not None:
        replay = load_replay(settings.replay, settings.replay_speed)
    return Responder(
        settings.responses,
        seed=settings.seed,
        dataset=dataset,
        replay=replay,
        strict_replay=settings.replay_strict,
    )


def create_app(
    settings: Settings, lifecycle: Lifecycle | None = None, *, ranks: Sequence[int] = (0,)
) -> web.Application:
    """One simulated vLLM server in front of one engine per data-parallel rank in ``ranks``
    (the ``engine`` labels of their metrics)."""
    # The dashboard's stats are attached only when it is on, so they cost nothing otherwise.
    stats = LiveStats() if settings.dashboard else None
    engines, every_metrics = _engines(settings, ranks, stats)
    metrics = every_metrics[0]
    engine = engines.first
    metrics.set_overrides(settings.fake_metrics)  # every series is registered by now

    app = web.Application(client_max_size=settings.max_request_body_size)
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[ENGINES] = engines
    app[METRICS] = metrics
    app[LIFECYCLE] = lifecycle or Lifecycle(settings.startup_duration)
    app[OPENAPI] = openapi_document()
    app[RUNTIME] = Runtime(settings, engines, metrics)
    app[RESPONDER] = responder(settings)
    install_kv_features(app, settings, engines, metrics)
    fingerprint = system_fingerprint(settings)
    app[inference.INFERENCE] = inference.InferenceState(
        engine,
        app[LIFECYCLE],
        app[RUNTIME],
        app[RESPONDER],
        app[KV_TRANSFER],
        engines if len(ranks) > 1 else None,
        app[KV_AGENTS],
        RequestLogger.from_settings(settings),
        fingerprint,
        b"" if fingerprint is None else fingerprint_tail(fingerprint),
    )
    steps = [engine.step for engine in engines.engines if engine.step is not None]
    if steps:

        async def stop_step_loops(_: web.Application) -> None:
            for step in steps:
                await step.close()

        app.on_cleanup.append(stop_step_loops)
    app[SERVER_LOAD] = ServerLoad()
    app[responses.RESPONSE_STORE] = ResponseStore(
        settings.responses_store_max_entries, settings.responses_store_max_size
    )
    if stats is not None:
        app[LIVE_STATS] = stats
        app[ERROR_LISTENER] = stats.record_error
    # With --upstream the two endpoints forward first; without it they pay nothing for it.
    simulated = upstream.forwarding if settings.upstream is not None else _unchanged
    routes = [
        web.post("/v1/chat/completions", simulated(inference.create_chat_completion)),
        web.post("/v1/completions", simulated(inference.create_completion)),
        web.post("/v1/responses", responses.create_response),
        web.get("/v1/responses/{response_id}", responses.retrieve_response),
        web.post("/v1/messages", messages.create_message),
        web.post("/v1/messages/count_tokens", messages.count_tokens),
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
        web.get("/admin/responses", answers_admin.get_responses),
        web.post("/admin/responses", answers_admin.set_responses),
        # vLLM's small endpoints, tokenization and embeddings
        web.get("/ping", system.health),
        web.post("/ping", system.health),
        web.post("/invocations", invocations),  # SageMaker: dispatched by the body's shape
        *pooling_routes(settings),  # score, rerank, classify, /v2/embed of a pooling model
        web.get("/load", get_load),
        web.post("/tokenize", tokenization.tokenize),
        web.post("/detokenize", tokenization.detokenize),
        web.post("/v1/embeddings", embeddings.create_embedding),
        web.post("/pooling", embeddings.create_pooling),
        # tokens in, tokens out: render, generate, derender
        web.post("/v1/chat/completions/render", render.render_chat),
        web.post("/v1/completions/render", render.render_completion),
        web.post("/v1/chat/completions/derender", render.derender_chat),
        web.post("/v1/completions/derender", render.derender_completion),
        web.post("/inference/v1/generate", token_generate.generate_tokens),
        web.post("/inference/v1/abort_requests", token_generate.abort_requests),
        web.post("/v1/messages/render", messages.render_message),
        web.post("/v1/responses/render", responses.render_response),
    ]
    if settings.runner == "pooling":  # vLLM registers no generating route for such a model
        routes = [route for route in routes if route.path not in GENERATING_PATHS]
        app[OPENAPI] = openapi_document(pooling=True)
    if settings.disable_fastapi_docs:
        routes = [route for route in routes if route.path != "/openapi.json"]
    if not settings.enable_scale_out:  # vLLM 0.34 refuses them unless started to serve them
        routes = [
            web.post(route.path, render.scale_out_disabled)
            if route.path in render.SCALE_OUT_PATHS
            else route
            for route in routes
        ]
    if settings.enable_tokenizer_info_endpoint:
        routes.append(web.get("/tokenizer_info", tokenization.tokenizer_info))
    routes.extend(dev_routes())  # sleep mode, cache resets, pause: VLLM_SERVER_DEV_MODE=1
    if settings.root_path:  # as Starlette with a root path: with and without the prefix
        routes.extend(_prefixed(routes, settings.root_path))
    # A catch-all comes last, for paths and methods that match no route.
    routes.append(web.route("*", r"/{path:[\s\S]*}", not_routed))
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    tracked = COUNTED_PATHS if settings.enable_server_load_tracking else frozenset()

    def guarded(path: str, handler: Handler) -> Handler:
        return guard(
            handler,
            timing=settings.access_log_enabled,
            api_key=api_key,
            load=app[SERVER_LOAD] if path in tracked else None,
            log_errors=settings.log_error_stack,
        )

    app.add_routes(
        web.RouteDef(route.method, route.path, guarded(route.path, route.handler), route.kwargs)
        for route in routes
    )
    chat = "/v1/chat/completions"  # the fast lane's one route (llmsim.server.fast_lane)
    plain_route = simulated is _unchanged and settings.runner != "pooling"
    if settings.fast_lane and inference.PLAIN_CHAT is not None and plain_route:
        app[inference.FAST_CHAT] = inference.FastChat(
            app,
            guarded(chat, inference.create_decoded_chat_completion),
            inference.PLAIN_CHAT,
            min(settings.max_request_body_size, OFF_LOOP_BYTES),
        )
    app.on_response_prepare.append(shape_unrouted)
    if settings.log_stats and not settings.dashboard:  # the dashboard shows the same, live
        install_stats_log(app, zip(ranks, every_metrics, strict=True), settings.log_stats_interval)
    install_pod_identity(app)  # POD_NAME / POD_NAMESPACE, only when set
    if settings.enable_request_id_headers:
        install_request_ids(app)
    attach_cors(app, settings)
    if settings.upstream is not None:
        upstream.attach_upstream(app)
    return app


def _engines(
    settings: Settings, ranks: Sequence[int], stats: LiveStats | None
) -> tuple[DataParallelEngines, list[Metrics]]:
    """An engine per rank, each reporting to its own series of one registry (the first's)."""
    first: Metrics | None = None
    engines = []
    every_metrics = []
    for rank in ranks:
        metrics = Metrics(settings, engine=rank, parent=first)
        every_metrics.append(metrics)
        first = first or metrics
        observer: EngineObserver = metrics if stats is None else FanOutObserver(metrics, stats)
        engine = Engine(settings, observer=observer)
        metrics.track(engine.scheduler, settings.kv_cache_size)
        if engine.step is not None:
            metrics.track_step(engine.step, settings)
        elif engine.blocks is not None:
            metrics.track_blocks(engine.blocks)
        engines.append(engine)
    assert first is not None, "at least one rank"
    return DataParallelEngines(engines, ranks), every_metrics


GENERATING_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/chat/completions/render",
        "/v1/completions/render",
        "/v1/chat/completions/derender",
        "/v1/completions/derender",
        "/inference/v1/generate",
        "/inference/v1/abort_requests",
        "/v1/messages/render",
        "/v1/responses/render",
    }
)
"""Routes an embedding model (``runner = pooling``) does not have."""


def install_stats_log(
    app: web.Application, engines: Iterable[tuple[int, Metrics]], interval: float
) -> None:
    """vLLM's stats line for every engine: one timer for the server, while it runs."""
    stats_log = StatsLog(list(engines))
    tasks: list[asyncio.Task[None]] = []

    async def start(_: web.Application) -> None:
        tasks.append(asyncio.create_task(stats_log.run(interval)))

    async def stop(_: web.Application) -> None:
        for task in tasks:
            task.cancel()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def _prefixed(routes: list[web.RouteDef], prefix: str) -> list[web.RouteDef]:
    return [web.RouteDef(r.method, prefix + r.path, r.handler, r.kwargs) for r in routes]


def _unchanged(handler: Handler) -> Handler:
    return handler
