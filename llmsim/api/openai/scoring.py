"""vLLM's score and rerank routes of a pooling model.

``POST /score`` (and ``/v1/score``) scores text pairs; ``POST /rerank`` (and ``/v1/rerank``,
``/v2/rerank``, the Jina and Cohere shapes) orders documents by their relevance to a query.
As vLLM does for an embedding model, a score is the cosine similarity of the two texts'
vectors (:mod:`llmsim.engine.embedding`): deterministic, 1.0 for a text and itself, higher
for texts that share words. Each pair is prefill-only work on the engine
(:mod:`llmsim.api.openai.prefill`) with the tokens of both texts, which is also what usage counts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, model_validator

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.requests import read_json_object
from llmsim.api.openai.prefill import (
    check_lengths,
    check_truncation,
    ready_engine,
    request_id,
    resolve,
    run_prefill,
    truncated,
    usage,
)
from llmsim.api.openai.schemas import INTEGRAL, MAX_PROMPTS, _Body
from llmsim.api.openai.tokenization import validate
from llmsim.engine import Engine, Target
from llmsim.engine.embedding import embed_text

Texts = str | Annotated[list[str], Field(max_length=MAX_PROMPTS)]
Document = str | dict[str, Any]
"""A rerank document: a string, or an object with a ``text`` (Cohere's older form)."""
PAIR_FIELDS: tuple[tuple[str, str], ...] = (
    ("queries", "documents"),
    ("queries", "items"),
    ("data_1", "data_2"),
    ("text_1", "text_2"),
)
"""The pairs of fields a score request may use, in the order vLLM tries them."""


class _Scoring(_Body):
    model: str | None = None
    truncate_prompt_tokens: Annotated[int, Field(ge=-1), INTEGRAL] | None = None
    use_activation: bool | None = None
    priority: Annotated[int, INTEGRAL] = 0
    user: str | None = None


class ScoreRequest(_Scoring):
    """vLLM's ``ScoreRequest``: one of the pairs of :data:`PAIR_FIELDS`."""

    text_1: Texts | None = None
    text_2: Texts | None = None
    queries: Texts | None = None
    documents: Texts | None = None
    items: Texts | None = None
    data_1: Texts | None = None
    data_2: Texts | None = None

    @model_validator(mode="after")
    def _one_pair(self) -> ScoreRequest:
        if self.pair() is None:
            names = ", ".join(f"{a}/{b}" for a, b in PAIR_FIELDS)
            raise ValueError(f"a score request needs one of the pairs {names}")
        return self

    def pair(self) -> tuple[Texts, Texts] | None:
        for first, second in PAIR_FIELDS:
            left, right = getattr(self, first), getattr(self, second)
            if left is not None and right is not None:
                return left, right
        return None


class RerankRequest(_Scoring):
    """vLLM's ``RerankRequest`` (Jina's and Cohere's shape): a query and its documents."""

    query: str
    documents: str | Annotated[list[Document], Field(max_length=MAX_PROMPTS)]
    top_n: Annotated[int, INTEGRAL] = 0
    return_documents: bool = True


async def create_score(request: web.Request) -> web.Response:
    engine = ready_engine(request)
    body: ScoreRequest = validate(ScoreRequest, await read_json_object(request))
    target = resolve(engine, body.model)
    pair = body.pair()
    assert pair is not None
    pairs = _pairs(_as_list(pair[0]), _as_list(pair[1]))
    rid = request_id("score-")
    scores, total = await _score_pairs(request, engine, rid, target, pairs, body)
    answer = {
        "id": rid,
        "object": "list",
        "created": int(time.time()),
        "model": target.name,
        "data": [
            {"index": index, "object": "score", "score": score}
            for index, score in enumerate(scores)
        ],
        "usage": usage(total),
    }
    return web.Response(body=dumps(answer), content_type="application/json")


async def create_rerank(request: web.Request) -> web.Response:
    engine = ready_engine(request)
    body: RerankRequest = validate(RerankRequest, await read_json_object(request))
    target = resolve(engine, body.model)
    documents = _document_texts(body.documents)
    pairs = _pairs([body.query], documents)
    rid = request_id("rerank-")
    scores, total = await _score_pairs(request, engine, rid, target, pairs, body)
    ranked = sorted(range(len(scores)), key=lambda index: -scores[index])
    top_n = body.top_n if body.top_n > 0 else len(ranked)
    results = []
    for index in ranked[:top_n]:
        result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if body.return_documents:
            result["document"] = {"text": documents[index], "multi_modal": None}
        results.append(result)
    answer = {
        "id": rid,
        "model": target.name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
        "results": results,
    }
    return web.Response(body=dumps(answer), content_type="application/json")


async def _score_pairs(
    request: web.Request,
    engine: Engine,
    rid: str,
    target: Target,
    pairs: list[tuple[str, str]],
    body: _Scoring,
) -> tuple[list[float], int]:
    """Schedule the pairs and score them: the scores and the prompt tokens used."""
    limit = engine.settings.max_model_len
    truncate = body.truncate_prompt_tokens
    check_truncation(truncate, limit)
    counts: dict[str, int] = {}
    for text in {text for pair in pairs for text in pair}:
        counts[text] = truncated(engine.tokenizer.count(text, True), truncate, limit)
    pair_counts = [counts[first] + counts[second] for first, second in pairs]
    check_lengths(engine, pair_counts, "input")
    await run_prefill(request, engine, rid, target, pair_counts)
    # Up to 1024 documents of thousands of coordinates: off the event loop.
    scores = await asyncio.to_thread(_cosines, engine.settings.embedding_dimension, pairs)
    return scores, sum(pair_counts)


def _cosines(dimension: int, pairs: list[tuple[str, str]]) -> list[float]:
    vectors: dict[str, list[float]] = {}
    for text in {text for pair in pairs for text in pair}:
        vectors[text] = embed_text(text, dimension)
    return [_dot(vectors[first], vectors[second]) for first, second in pairs]


def _dot(first: list[float], second: list[float]) -> float:
    return min(1.0, max(-1.0, sum(a * b for a, b in zip(first, second, strict=True))))


def _as_list(texts: Texts) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _pairs(firsts: list[str], seconds: list[str]) -> list[tuple[str, str]]:
    """vLLM's pairing: 1:1, one against each of N, or N:N element by element."""
    if not firsts:
        raise APIError(400, "At least one text element must be given")
    if not seconds:
        raise APIError(400, "At least one text_pair element must be given")
    if len(firsts) > 1 and len(firsts) != len(seconds):
        raise APIError(400, "Input lengths must be either 1:1, 1:N or N:N")
    if len(firsts) == 1:
        firsts = firsts * len(seconds)
    return list(zip(firsts, seconds, strict=True))


def _document_texts(documents: str | list[Document]) -> list[str]:
    if isinstance(documents, str):
        return [documents]
    texts = []
    for index, document in enumerate(documents):
        text = document if isinstance(document, str) else document.get("text")
        if not isinstance(text, str):
            raise APIError(
                400,
                f"documents[{index}] must be a string or an object with a string 'text'",
                f"documents.{index}",
            )
        texts.append(text)
    return texts
