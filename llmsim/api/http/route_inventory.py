"""Every route of vLLM's API server, and whether llmsim serves it.

The list follows the routers ``vllm serve`` registers (``vllm/entrypoints/``: the serve,
dev, generate, pooling, speech-to-text and SageMaker routers, and FastAPI's documentation
pages). ``docs/api.md`` shows it as a table (``docs/gen_route_table.py`` renders it) and
``tests/test_route_inventory.py`` checks it against the application's routes both ways, so a
route added to the app or to the list without the other fails the build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Served = Literal["always", "generate", "pooling", "dev", "flag", "no"]
"""Where llmsim serves a route: on every server, with a generation model (the default),
with a pooling model (``--runner pooling``), with ``VLLM_SERVER_DEV_MODE=1``, with the flag
vLLM needs for it, or not at all."""


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    methods: tuple[str, ...]
    vllm: str
    """When vLLM registers it."""
    served: Served
    note: str = ""
    """Why llmsim does not serve it, or what to know when it does."""


ALWAYS = "always"
GENERATE = "generation model"
DEV = "`VLLM_SERVER_DEV_MODE=1`"
SCALE_OUT = "`--enable-scale-out` or `--tokens-only` (else 403)"
_NO_GPU = "there are no GPU workers to reach"
_WEIGHTS = "moves or checks model weights on the GPUs (weight sync for RL); there are no weights"

VLLM_ROUTES: tuple[Route, ...] = (
    Route("/health", ("GET",), ALWAYS, "always"),
    Route("/load", ("GET",), ALWAYS, "always"),
    Route("/version", ("GET",), ALWAYS, "always"),
    Route("/metrics", ("GET",), ALWAYS, "always"),
    Route("/ping", ("GET", "POST"), ALWAYS, "always"),
    Route("/invocations", ("POST",), ALWAYS, "always", "dispatched by the body's shape"),
    Route("/v1/models", ("GET",), ALWAYS, "always"),
    Route("/tokenize", ("POST",), ALWAYS, "always"),
    Route("/detokenize", ("POST",), ALWAYS, "always"),
    Route(
        "/tokenizer_info",
        ("GET",),
        "`--enable-tokenizer-info-endpoint`",
        "flag",
        "the tokenizer's `tokenizer_config.json` and chat template",
    ),
    Route(
        "/v1/load_lora_adapter",
        ("POST",),
        "`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`",
        "always",
        "always on here",
    ),
    Route(
        "/v1/unload_lora_adapter",
        ("POST",),
        "`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`",
        "always",
        "always on here",
    ),
    Route(
        "/start_profile",
        ("POST",),
        "`--profiler-config`",
        "no",
        "profiles GPU kernels and the engine; nothing to profile",
    ),
    Route(
        "/stop_profile",
        ("POST",),
        "`--profiler-config`",
        "no",
        "profiles GPU kernels and the engine; nothing to profile",
    ),
    Route(
        "/openapi.json",
        ("GET",),
        "unless `--disable-fastapi-docs`",
        "always",
        "unless `--disable-fastapi-docs`",
    ),
    *(
        Route(
            path,
            ("GET",),
            "unless `--disable-fastapi-docs`",
            "no",
            "a browser page (Swagger UI, ReDoc) over /openapi.json, which is served",
        )
        for path in ("/docs", "/docs/oauth2-redirect", "/redoc")
    ),
    Route("/v1/chat/completions", ("POST",), GENERATE, "generate"),
    Route(
        "/v1/chat/completions/batch",
        ("POST",),
        GENERATE,
        "no",
        "not simulated yet: several conversations answered in one response",
    ),
    Route("/v1/completions", ("POST",), GENERATE, "generate"),
    Route("/v1/responses", ("POST",), GENERATE, "generate"),
    Route("/v1/responses/{response_id}", ("GET",), GENERATE, "generate"),
    Route(
        "/v1/responses/{response_id}/cancel",
        ("POST",),
        GENERATE,
        "no",
        "cancels a background response; responses are answered in the foreground",
    ),
    Route("/v1/messages", ("POST",), GENERATE, "generate"),
    Route("/v1/messages/count_tokens", ("POST",), GENERATE, "generate"),
    Route(
        "/generative_scoring",
        ("POST",),
        GENERATE,
        "no",
        "not simulated yet: scores items by a generation model's token probabilities",
    ),
    Route("/v1/chat/completions/render", ("POST",), SCALE_OUT, "generate"),
    Route("/v1/completions/render", ("POST",), SCALE_OUT, "generate"),
    *(
        Route(
            path,
            ("POST",),
            SCALE_OUT,
            "generate",
            "`stream: true` too, as vLLM: one call per generate chunk, answered with "
            "`{chunk, stream_state}`",
        )
        for path in ("/v1/chat/completions/derender", "/v1/completions/derender")
    ),
    Route("/inference/v1/generate", ("POST",), SCALE_OUT, "generate"),
    *(
        Route(path, ("POST",), SCALE_OUT, "generate", "rendered through its chat translation")
        for path in ("/v1/messages/render", "/v1/responses/render")
    ),
    Route(
        "/inference/v1/abort_requests",
        ("POST",),
        SCALE_OUT,
        "generate",
        "ends the named requests on every engine with the tokens they have",
    ),
    *(
        Route(path, ("POST",), GENERATE, "no", "resizes expert-parallel GPU workers; " + _NO_GPU)
        for path in ("/scale_elastic_ep", "/is_scaling_elastic_ep")
    ),
    *(
        Route(path, ("POST",), "speech-to-text model", "no", "llmsim simulates text models")
        for path in ("/v1/audio/transcriptions", "/v1/audio/translations")
    ),
    Route(
        "/v1/realtime",
        ("GET",),
        "realtime speech model",
        "no",
        "a WebSocket for streamed audio; llmsim simulates text models",
    ),
    Route("/pooling", ("POST",), "pooling model", "always", "also with a generation model"),
    Route("/v1/embeddings", ("POST",), "embedding model", "always", "also with a generation model"),
    Route("/v2/embed", ("POST",), "embedding model", "pooling", "Cohere's embed API"),
    Route("/classify", ("POST",), "classification model", "pooling"),
    *(
        Route(path, ("POST",), "scoring model", "pooling")
        for path in ("/score", "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank")
    ),
    Route(
        "/server_info",
        ("GET",),
        DEV,
        "dev",
        "llmsim's configuration and the `VLLM_*` environment, without keys",
    ),
    Route("/reset_prefix_cache", ("POST",), DEV, "dev", "empties the step model's prefix cache"),
    *(
        Route(path, ("POST",), DEV, "dev", "200: nothing is cached")
        for path in ("/reset_mm_cache", "/reset_encoder_cache")
    ),
    Route("/collective_rpc", ("POST",), DEV, "no", "calls a method on every worker; " + _NO_GPU),
    Route("/sleep", ("POST",), DEV, "dev", "sleeping needs `--enable-sleep-mode`"),
    Route("/wake_up", ("POST",), DEV, "dev", "waking needs `--enable-sleep-mode`"),
    Route("/is_sleeping", ("GET",), DEV, "dev"),
    *(
        Route(path, methods, DEV, "dev", "drive the engine's scheduler as vLLM's do")
        for path, methods in (
            ("/pause", ("POST",)),
            ("/resume", ("POST",)),
            ("/is_paused", ("GET",)),
            ("/abort_requests", ("POST",)),
        )
    ),
    *(
        Route(path, methods, DEV, "no", _WEIGHTS)
        for path, methods in (
            ("/init_weight_transfer_engine", ("POST",)),
            ("/start_weight_update", ("POST",)),
            ("/update_weights", ("POST",)),
            ("/finish_weight_update", ("POST",)),
            ("/update_weight_version", ("POST",)),
            ("/weight_info", ("GET",)),
            ("/weight_checker", ("POST",)),
        )
    ),
    Route("/get_world_size", ("GET",), DEV, "no", "the GPU world size; " + _NO_GPU),
)
"""vLLM's routes, grouped as its routers register them."""

LLMSIM_ROUTES: tuple[Route, ...] = (
    Route("/health/ready", ("GET",), "", "always", "readiness: 503 while loading or draining"),
    Route("/ready", ("GET",), "", "always", "the same as /health/ready"),
    Route("/admin/config", ("GET", "POST"), "", "always", "runtime control"),
    Route("/admin/metrics", ("GET", "POST", "DELETE"), "", "always", "metric overrides"),
    Route("/admin/responses", ("GET", "POST"), "", "always", "response rules"),
)
"""Routes llmsim has and vLLM does not."""


def expected_routes(*, pooling: bool, dev: bool) -> set[tuple[str, str]]:
    """``(method, path)`` of every route a server started so has, vLLM's and llmsim's own."""
    wanted: set[Served] = {"always", "pooling" if pooling else "generate"}
    if dev:
        wanted.add("dev")
    return {
        (method, route.path)
        for route in VLLM_ROUTES + LLMSIM_ROUTES
        if route.served in wanted
        for method in route.methods
    }


_SERVED_TEXT: dict[Served, str] = {
    "always": "yes",
    "generate": "yes, generation model",
    "pooling": "yes, `--runner pooling`",
    "dev": "yes, `VLLM_SERVER_DEV_MODE=1`",
    "flag": "yes, with vLLM's flag",
    "no": "no",
}


def markdown_table() -> str:
    """The table of vLLM's routes for ``docs/api.md``."""
    lines = [
        "| route | methods | vLLM has it | llmsim serves it | why not, or note |",
        "|---|---|---|---|---|",
    ]
    for route in VLLM_ROUTES:
        methods = ", ".join(route.methods)
        served = _SERVED_TEXT[route.served]
        lines.append(f"| `{route.path}` | {methods} | {route.vllm} | {served} | {route.note} |")
    return "\n".join(lines) + "\n"
