"""``POST /v1/embeddings`` and vLLM's ``POST /pooling``.

Each input is scheduled through the engine as prefill-only work (a sequence that
produces no tokens): it waits for a slot like any request, counts in running and
waiting, and takes the latency model's time to first token for its prompt length.
The vectors come from :mod:`llmsim.engine.embedding`.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import time
from functools import partial
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field, model_validator

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import ENGINE, ENGINES, GENERATION, LIFECYCLE
from llmsim.api.http.requests import is_large, read_json_object
from llmsim.api.http.routing import engine_index
from llmsim.api.openai.prompts import check_request_template, render_messages
from llmsim.api.openai.schemas import INTEGRAL, MAX_PROMPTS, ChatMessage, TokenIds, _Body
from llmsim.api.openai.tokenization import check_model, validate
from llmsim.engine import (
    AdmissionError,
    ContextLengthError,
    Engine,
    GenerationRequest,
    PromptInput,
    QueueFullError,
    RequestGroup,
    Target,
)
from llmsim.engine.embedding import embed_ids, embed_text, normalize
from llmsim.service.generation import NOT_SERVING
from llmsim.service.prompts import check_vocabulary

OFF_LOOP_FLOATS = 65_536
"""Floats an answer may hold to be made on the event loop (16 vectors of 4096); a larger
one is made and encoded in a worker thread, as are the token counts of a large body."""

EmbeddingInput = (
    str
    | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
)


class PoolingInput(_Body):
    """What every pooling request carries: ``input``, or ``messages`` (chat form)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("input", "messages")
            ]
        }
    )

    model: str | None = None
    input: EmbeddingInput | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special_tokens: bool = True
    user: str | None = None

    @model_validator(mode="after")
    def _one_input(self) -> PoolingInput:
        if (self.input is None) == (self.messages is None):
            raise ValueError("exactly one of 'input' or 'messages' must be given")
        return self


class EmbeddingRequest(PoolingInput):
    """vLLM's embedding (and pooling) request."""

    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1, le=2**31), INTEGRAL] | None = None


async def create_embedding(request: web.Request) -> web.Response:
    return await _pool(request, "embd-", "embedding", "embedding")


async def create_pooling(request: web.Request) -> web.Response:
    return await _pool(request, "pool-", "pooling", "data")


async def _pool(request: web.Request, prefix: str, kind: str, field: str) -> web.Response:
    engine = request.app[ENGINE]
    phase = request.app[LIFECYCLE].phase
    if phase != "ready":
        raise APIError(503, NOT_SERVING[phase])
    body: EmbeddingRequest = validate(EmbeddingRequest, await read_json_object(request))
    check_model(engine, body.model)
    target = engine.resolve(body.model)
    dimension = engine.settings.embedding_dimension
    if body.dimensions is not None and body.dimensions > dimension:
        raise APIError(
            400,
            f"dimensions must be at most the model's embedding size ({dimension}), "
            f"got {body.dimensions}.",
            "dimensions",
        )
    items = pooled_items(engine, body)
    count = partial(_counts, engine, body, items)
    counts = await asyncio.to_thread(count) if is_large(request) else count()
    limit = engine.settings.max_model_len
    for tokens in counts:
        if tokens > limit:
            raise APIError(400, too_long(limit, tokens), "input")
    request_id = prefix + f"{random.getrandbits(128):032x}"
    engines = request.app[ENGINES]
    group = submit_prefill(
        engines.engines[engine_index(request, engines)], request_id, target, counts
    )
    request[GENERATION] = group
    with group:
        await group.run()
    size = body.dimensions or dimension
    shape = (request_id, target.name, kind, field)
    make = partial(_answer, shape, body, items, counts, (size, dimension))
    payload = await asyncio.to_thread(make) if len(items) * size > OFF_LOOP_FLOATS else make()
    return web.Response(body=payload, content_type="application/json")


def _counts(engine: Engine, body: PoolingInput, items: list[str | list[int]]) -> list[int]:
    return [count_item(engine, body, item) for item in items]


def _answer(
    shape: tuple[str, str, str, str],
    body: EmbeddingRequest,
    items: list[str | list[int]],
    counts: list[int],
    sizes: tuple[int, int],
) -> bytes:
    """The answer's JSON: ``shape`` is its id, model, object kind and vector field."""
    request_id, model, kind, field = shape
    size, dimension = sizes
    data = [
        {"index": index, "object": kind, field: _encode(_vector(item, size, dimension), body)}
        for index, item in enumerate(items)
    ]
    total = sum(counts)
    answer: dict[str, Any] = {
        "id": request_id,
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {
            "prompt_tokens": total,
            "total_tokens": total,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }
    return dumps(answer)


def pooled_items(engine: Engine, body: PoolingInput) -> list[str | list[int]]:
    if body.messages is not None:
        asked = body.__pydantic_extra__ or {}
        check_request_template(
            engine.settings, asked.get("chat_template"), asked.get("chat_template_kwargs")
        )
        return [render_messages(engine.tokenizer, body.messages)]
    value = body.input
    if isinstance(value, str):
        return [value]
    assert value is not None
    if all(isinstance(item, int) for item in value):
        return [value]  # type: ignore[list-item]
    return list(value)  # type: ignore[arg-type]


def count_item(engine: Engine, body: PoolingInput, item: str | list[int]) -> int:
    if isinstance(item, str):
        add_special = body.add_special_tokens and body.messages is None
        return engine.tokenizer.count(item, add_special)
    check_vocabulary(item, engine.tokenizer, "input")
    return len(item)


def _vector(item: str | list[int], size: int, dimension: int) -> list[float]:
    vector = embed_text(item, dimension) if isinstance(item, str) else embed_ids(item, dimension)
    return vector if size == dimension else normalize(vector[:size])


def _encode(vector: list[float], body: EmbeddingRequest) -> list[float] | str:
    """Floats, or base64 of little-endian float32 as vLLM and the openai SDK use."""
    if body.encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def too_long(limit: int, count: int) -> str:
    return (
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{count} tokens in the input for embedding generation. Please reduce the length "
        "of the input."
    )


def submit_prefill(
    engine: Engine, request_id: str, target: Target, counts: list[int]
) -> RequestGroup:
    """Prefill-only sequences: no output tokens, timed by the latency model."""
    prompts = [PromptInput(count, "") for count in counts]
    generation = GenerationRequest(request_id, target, prompts, n=1, max_tokens=0)
    try:
        return engine.submit(generation)
    except ContextLengthError as exc:
        raise APIError(400, too_long(exc.max_model_len, exc.prompt_tokens), "input") from None
    except AdmissionError as exc:
        raise APIError(503, exc.message, type="Service Unavailable") from None
    except QueueFullError:
        limit = engine.settings.max_waiting_queue_length
        raise APIError(
            429,
            f"The server is overloaded: the waiting queue is full ({limit} sequences). Retry later.",
        ) from None
