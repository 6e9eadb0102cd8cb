"""The OpenAPI 3.1 document served at ``/openapi.json``.

Request schemas come from the same pydantic models the handlers validate with, so the
document cannot drift from what the server accepts. Response schemas describe the
bodies the handlers build.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llmsim import __version__
from llmsim.api.anthropic.convert import CountTokensRequest, MessagesRequest
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.openapi_pooling import POOLING_MODELS, pooling_paths
from llmsim.api.openai.embeddings import EmbeddingRequest
from llmsim.api.openai.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadLoraAdapterRequest,
    UnloadLoraAdapterRequest,
)
from llmsim.api.openai.tokenization import (
    DetokenizeRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)
from llmsim.api.responses.routes import ResponsesRequest


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(_Out):
    name: str
    arguments: str


class ToolCall(_Out):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Out):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] = []


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    stop_reason: str | None = None


class ChatCompletionResponse(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(_Out):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    stop_reason: str | None = None


class CompletionResponse(_Out):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    parent: str | None
    max_model_len: int | None


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class TokenizeResponse(_Out):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(_Out):
    prompt: str


class EmbeddingUsage(_Out):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int


class EmbeddingData(_Out):
    index: int
    object: Literal["embedding"]
    embedding: list[float] | str


class EmbeddingResponse(_Out):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[EmbeddingData]
    usage: EmbeddingUsage


class PoolingData(_Out):
    index: int
    object: Literal["pooling"]
    data: list[float] | str


class PoolingResponse(_Out):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[PoolingData]
    usage: EmbeddingUsage


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Version(BaseModel):
    version: str


class ResponseObject(_Out):
    """A Responses API ``response``; ``output`` holds ``message`` and ``function_call`` items."""

    id: str
    object: Literal["response"]
    created_at: int
    model: str
    status: Literal["completed", "incomplete"]
    output: list[dict[str, Any]]
    usage: dict[str, Any]


class AnthropicMessage(_Out):
    """An Anthropic Messages API answer; ``content`` holds ``text`` and ``tool_use`` blocks."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
    stop_sequence: str | None
    usage: dict[str, int]


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"]
    error: AnthropicErrorDetail


class CountTokensResponse(_Out):
    input_tokens: int


_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest,
    CompletionRequest,
    LoadLoraAdapterRequest,
    UnloadLoraAdapterRequest,
    ChatCompletionResponse,
    CompletionResponse,
    ModelList,
    ErrorResponse,
    Version,
    TokenizeCompletionRequest,
    TokenizeChatRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeResponse,
    DetokenizeResponse,
    EmbeddingResponse,
    PoolingResponse,
    ResponsesRequest,
    ResponseObject,
    MessagesRequest,
    CountTokensRequest,
    AnthropicMessage,
    AnthropicErrorResponse,
    CountTokensResponse,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": "Error", "content": _json(ErrorResponse)}
        for status in statuses
    }


def _generation(
    summary: str, request: type[BaseModel], response: type[BaseModel]
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": _json(request)},
            "responses": {
                "200": {
                    "description": "A JSON body, or an SSE stream when `stream` is true.",
                    "content": {
                        **_json(response),
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(400, 401, 404, 413, 415, 429, 503),
            },
        }
    }


def _adapted(
    summary: str,
    request: type[BaseModel],
    response: type[BaseModel],
    error: type[BaseModel] = ErrorResponse,
) -> dict[str, Any]:
    """A Responses or Messages operation: JSON or an event stream, errors in ``error``."""
    operation = _generation(summary, request, response)
    for status, answer in operation["post"]["responses"].items():
        if status != "200":
            answer["content"] = _json(error)
    return operation


def _lora(summary: str, request: type[BaseModel], missing: int) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": _json(request)},
            "responses": {
                "200": {
                    "description": "Success text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(400, 401, missing, 413),
            },
        }
    }


def _post(
    summary: str, request: dict[str, Any], response: type[BaseModel], *errors: int
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": {"description": "OK", "content": _json(response)},
                **_errors(*errors),
            },
        }
    }


def _model_paths() -> dict[str, Any]:
    """vLLM's tokenization, embedding and pooling endpoints."""
    tokenize = {"anyOf": [_ref(TokenizeCompletionRequest), _ref(TokenizeChatRequest)]}
    return {
        "/tokenize": _post(
            "Tokenize a prompt or messages", tokenize, TokenizeResponse, 400, 404, 413
        ),
        "/detokenize": _post(
            "Turn token IDs into text", _ref(DetokenizeRequest), DetokenizeResponse, 400, 404, 413
        ),
        "/v1/embeddings": _post(
            "Create embeddings",
            _ref(EmbeddingRequest),
            EmbeddingResponse,
            *(400, 401, 404, 413, 429, 503),
        ),
        "/pooling": _post(
            "Pool inputs (vLLM)", _ref(EmbeddingRequest), PoolingResponse, 400, 404, 413, 429, 503
        ),
    }


GENERATING = ("/v1/chat/", "/v1/completions", "/v1/responses", "/v1/messages", "/inference/")
"""Path prefixes of the generating routes, which a pooling model answers 404."""


@functools.cache
def openapi_document(*, pooling: bool = False) -> bytes:
    """The encoded document, built once per process and kind of model: every instance
    serves the same one, and building it costs tens of milliseconds (most of an
    instance's start-up)."""
    return dumps(build_openapi(pooling=pooling))


def build_openapi(*, pooling: bool = False) -> dict[str, Any]:
    """The document; ``pooling`` adds a pooling model's score, rerank and classify routes."""
    schemas: dict[str, Any] = {}
    for model in _MODELS + (POOLING_MODELS if pooling else ()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    plain_ok = {"200": {"description": "OK"}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "llmsim: vLLM-compatible OpenAI API",
            "version": __version__,
            "description": "A simulated vLLM OpenAI-compatible server.",
        },
        "paths": {
            "/v1/chat/completions": _generation(
                "Create a chat completion", ChatCompletionRequest, ChatCompletionResponse
            ),
            "/v1/completions": _generation(
                "Create a text completion", CompletionRequest, CompletionResponse
            ),
            "/v1/responses": _adapted(
                "Create a response (OpenAI Responses API)", ResponsesRequest, ResponseObject
            ),
            "/v1/responses/{response_id}": {
                "get": {
                    "summary": "Retrieve a stored response",
                    "parameters": [
                        {
                            "name": "response_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "The response", "content": _json(ResponseObject)},
                        **_errors(400, 401, 404),
                    },
                }
            },
            "/v1/messages": _adapted(
                "Create a message (Anthropic Messages API)",
                MessagesRequest,
                AnthropicMessage,
                AnthropicErrorResponse,
            ),
            "/v1/messages/count_tokens": {
                "post": {
                    "summary": "Count the input tokens of a message request",
                    "requestBody": {"required": True, "content": _json(CountTokensRequest)},
                    "responses": {
                        "200": {
                            "description": "Token count",
                            "content": _json(CountTokensResponse),
                        },
                        **{
                            str(status): {
                                "description": "Error",
                                "content": _json(AnthropicErrorResponse),
                            }
                            for status in (400, 401, 413)
                        },
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "List the model and its adapters",
                    "responses": {
                        "200": {"description": "Models", "content": _json(ModelList)},
                        **_errors(401),
                    },
                }
            },
            "/v1/load_lora_adapter": _lora("Load a LoRA adapter", LoadLoraAdapterRequest, 400),
            "/v1/unload_lora_adapter": _lora(
                "Unload a LoRA adapter", UnloadLoraAdapterRequest, 404
            ),
            "/health": {"get": {"summary": "Liveness", "responses": plain_ok}},
            "/health/ready": {
                "get": {"summary": "Readiness", "responses": {**plain_ok, **_errors(503)}},
            },
            "/version": {
                "get": {
                    "summary": "Version",
                    "responses": {"200": {"description": "OK", "content": _json(Version)}},
                }
            },
            **_model_paths(),
            **(pooling_paths() if pooling else {}),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": schemas},
    }
    if pooling:  # a pooling model has no generating routes
        paths = document["paths"]
        document["paths"] = {k: v for k, v in paths.items() if not k.startswith(GENERATING)}
    return document
