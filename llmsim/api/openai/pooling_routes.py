"""The routes of a pooling model, and SageMaker's ``POST /invocations``.

vLLM registers score, rerank, classify and Cohere's embed only for a model that serves
them; here that is ``runner = pooling`` (``--runner pooling``, ``--convert embed`` or
``classify``, ``--task embed``, ``score``, ...); a generation model answers them 404.
``/invocations`` hands a body to the route its shape belongs to, trying them in vLLM's
order: chat (``messages``) and completions (``prompt``) of a generation model, then
embeddings (``input`` or ``messages``), rerank (``query`` and ``documents``) and score.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.api.http.keys import SETTINGS
from llmsim.api.http.requests import read_json_object
from llmsim.api.openai import classify, cohere_embed, embeddings, inference, scoring
from llmsim.settings.model import Settings

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
Fits = Callable[[dict[str, object]], bool]

SCORING_PATHS = ("/score", "/v1/score")
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank")


def pooling_routes(settings: Settings) -> list[web.RouteDef]:
    """Score, rerank, classify and ``/v2/embed``: only for a pooling model."""
    if settings.runner != "pooling":
        return []
    return [
        *(web.post(path, scoring.create_score) for path in SCORING_PATHS),
        *(web.post(path, scoring.create_rerank) for path in RERANK_PATHS),
        web.post("/classify", classify.create_classify),
        web.post("/v2/embed", cohere_embed.create_cohere_embedding),
    ]


async def invocations(request: web.Request) -> web.StreamResponse:
    data = await read_json_object(request)
    pooling = request.app[SETTINGS].runner == "pooling"
    types = _POOLING_MODEL_TYPES if pooling else _GENERATE_MODEL_TYPES
    for _, fits, route in types:
        if fits(data):
            return await route(request)
    offered = [name for name, _, _ in types]
    raise APIError(400, f"Cannot find suitable handler for request. Expected one of: {offered}")


def _has(*names: str) -> Fits:
    return lambda data: all(data.get(name) is not None for name in names)


def _is_score(data: dict[str, object]) -> bool:
    return any(_has(first, second)(data) for first, second in scoring.PAIR_FIELDS)


def _is_embedding(data: dict[str, object]) -> bool:
    return _has("input")(data) or _has("messages")(data)


_EMBEDDING = ("EmbeddingRequest", _is_embedding, embeddings.create_embedding)
_GENERATE_MODEL_TYPES: tuple[tuple[str, Fits, Route], ...] = (
    ("ChatCompletionRequest", _has("messages"), inference.create_chat_completion),
    ("CompletionRequest", _has("prompt"), inference.create_completion),
    _EMBEDDING,  # llmsim also embeds with a generation model
)
"""Request types in vLLM's order of preference: the first whose fields a body has wins."""
_POOLING_MODEL_TYPES: tuple[tuple[str, Fits, Route], ...] = (
    _EMBEDDING,
    ("RerankRequest", _has("query", "documents"), scoring.create_rerank),
    ("ScoreRequest", _is_score, scoring.create_score),
)
