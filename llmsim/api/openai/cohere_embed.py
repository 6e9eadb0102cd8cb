"""vLLM's ``POST /v2/embed``: Cohere's embed API on a pooling model.

``texts`` (or ``inputs`` of text content parts) become the same vectors as
``/v1/embeddings`` gives, in each of the requested ``embedding_types``: ``float``,
``base64`` (little-endian float32), and ``binary`` / ``ubinary`` (one bit per coordinate,
set when it is not negative, packed eight to a byte, signed or not).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.requests import is_large, read_json_object
from llmsim.api.openai.embeddings import OFF_LOOP_FLOATS
from llmsim.api.openai.prefill import check_lengths, ready_engine, request_id, resolve, run_prefill
from llmsim.api.openai.schemas import INTEGRAL, MAX_PROMPTS, _Body
from llmsim.api.openai.tokenization import validate
from llmsim.engine.embedding import embed_text, normalize

EmbeddingType = Literal["float", "binary", "ubinary", "base64"]


class CohereEmbedRequest(_Body):
    """vLLM's ``CohereEmbedRequest``."""

    model: str
    input_type: str | None = None
    texts: Annotated[list[str], Field(max_length=MAX_PROMPTS)] | None = None
    images: list[str] | None = None
    inputs: Annotated[list[dict[str, Any]], Field(max_length=MAX_PROMPTS)] | None = None
    output_dimension: Annotated[int, Field(ge=1, le=2**31), INTEGRAL] | None = None
    embedding_types: Annotated[list[EmbeddingType], Field(min_length=1)] | None = None
    truncate: Literal["NONE", "START", "END"] = "END"
    max_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    priority: Annotated[int, INTEGRAL] = 0


async def create_cohere_embedding(request: web.Request) -> web.Response:
    engine = ready_engine(request)
    body: CohereEmbedRequest = validate(CohereEmbedRequest, await read_json_object(request))
    target = resolve(engine, body.model)
    texts = _texts(body)
    dimension = engine.settings.embedding_dimension
    size = body.output_dimension or dimension
    if size > dimension:
        raise APIError(
            400,
            f"output_dimension must be at most the model's embedding size ({dimension}), "
            f"got {size}.",
            "output_dimension",
        )
    types = body.embedding_types or ["float"]
    if size % 8 and ("binary" in types or "ubinary" in types):
        raise APIError(
            400,
            "Embedding dimension must be a multiple of 8 for binary embedding types, "
            f"but got {size}.",
            "embedding_types",
        )
    count = partial(_counts, texts, engine.tokenizer.count, body, engine.settings.max_model_len)
    counts = await asyncio.to_thread(count) if is_large(request) else count()
    check_lengths(engine, counts, "texts")
    rid = request_id("embd-")
    await run_prefill(request, engine, rid, target, counts)
    make = partial(_answer, rid, texts, counts, (size, dimension), types)
    heavy = len(texts) * size * len(types) > OFF_LOOP_FLOATS
    payload = await asyncio.to_thread(make) if heavy else make()  # the loop stays free
    return web.Response(body=payload, content_type="application/json")


def _counts(
    texts: list[str], count: Callable[[str, bool], int], body: CohereEmbedRequest, limit: int
) -> list[int]:
    return [_count(count(text, True), body, limit) for text in texts]


def _answer(
    rid: str, texts: list[str], counts: list[int], sizes: tuple[int, int], types: Sequence[str]
) -> bytes:
    size, dimension = sizes
    vectors = [embed_text(text, dimension) for text in texts]
    if size != dimension:
        vectors = [normalize(vector[:size]) for vector in vectors]
    answer = {
        "id": rid,
        "embeddings": {kind: _typed(vectors, kind) for kind in dict.fromkeys(types)},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "tokens": {"input_tokens": sum(counts)}},
    }
    return dumps(answer)


def _texts(body: CohereEmbedRequest) -> list[str]:
    if body.images:
        raise APIError(400, "This model does not accept images: send texts.", "images")
    if body.texts is not None:
        return body.texts
    if body.inputs is None:
        raise APIError(400, "One of 'texts' or 'inputs' must be given.", "texts")
    return [_input_text(index, item) for index, item in enumerate(body.inputs)]


def _input_text(index: int, item: dict[str, Any]) -> str:
    """The text parts of one of Cohere's ``inputs``; an image part is refused."""
    content = item.get("content")
    if not isinstance(content, list):
        raise APIError(400, f"inputs[{index}].content must be a list", f"inputs.{index}")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise APIError(
                400, "This model accepts only text content parts.", f"inputs.{index}.content"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise APIError(400, "A text part needs a string 'text'.", f"inputs.{index}.content")
        texts.append(text)
    return "".join(texts)


def _count(count: int, body: CohereEmbedRequest, limit: int) -> int:
    """``max_tokens`` and ``truncate``: START and END cut to fit, NONE leaves it to fail."""
    if body.max_tokens is not None:
        count = min(count, body.max_tokens)
    return count if body.truncate == "NONE" else min(count, limit)


def _typed(vectors: list[list[float]], kind: str) -> list[Any]:
    if kind == "float":
        return vectors
    if kind == "base64":
        return [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    return [_packed_bits(vector, signed=kind == "binary") for vector in vectors]


def _packed_bits(vector: list[float], *, signed: bool) -> list[int]:
    packed = []
    for start in range(0, len(vector), 8):
        byte = 0
        for value in vector[start : start + 8]:
            byte = (byte << 1) | (value >= 0)
        packed.append(byte - 128 if signed else byte)
    return packed
