"""The OpenAPI entries of a pooling model's routes: score, rerank, classify, ``/v2/embed``.

Request schemas are the models the handlers validate with; responses are described by the
small models below. ``llmsim.api.http.openapi`` merges both into ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llmsim.api.openai.classify import ClassificationRequest
from llmsim.api.openai.cohere_embed import CohereEmbedRequest
from llmsim.api.openai.scoring import RerankRequest, ScoreRequest

POOLING_ONLY = " (a pooling model: --runner pooling)"


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ScoreData(_Out):
    index: int
    object: Literal["score"]
    score: float


class ScoreResponse(_Out):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[ScoreData]
    usage: dict[str, Any]


class RerankResult(_Out):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankResponse(_Out):
    id: str
    model: str
    usage: dict[str, int]
    results: list[RerankResult]


class ClassificationData(_Out):
    index: int
    label: str
    probs: list[float]
    num_classes: int


class ClassificationResponse(_Out):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[ClassificationData]
    usage: dict[str, Any]


class CohereEmbedResponse(_Out):
    id: str
    embeddings: dict[str, list[Any]]
    texts: list[str]
    meta: dict[str, Any]


POOLING_MODELS: tuple[type[BaseModel], ...] = (
    ScoreRequest,
    RerankRequest,
    ClassificationRequest,
    CohereEmbedRequest,
    ScoreResponse,
    RerankResponse,
    ClassificationResponse,
    CohereEmbedResponse,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _post(summary: str, request: type[BaseModel], response: type[BaseModel]) -> dict[str, Any]:
    errors = {
        str(status): {
            "description": "Error",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        }
        for status in (400, 404, 413, 429, 503)
    }
    return {
        "post": {
            "summary": summary + POOLING_ONLY,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": _ref(response)}},
                },
                **errors,
            },
        }
    }


def pooling_paths() -> dict[str, Any]:
    score = _post("Score text pairs", ScoreRequest, ScoreResponse)
    rerank = _post("Rerank documents for a query", RerankRequest, RerankResponse)
    return {
        "/score": score,
        "/v1/score": score,
        "/rerank": rerank,
        "/v1/rerank": rerank,
        "/v2/rerank": rerank,
        "/classify": _post("Classify inputs", ClassificationRequest, ClassificationResponse),
        "/v2/embed": _post("Embed texts (Cohere)", CohereEmbedRequest, CohereEmbedResponse),
    }
