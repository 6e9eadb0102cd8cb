"""Shared steps of the pooling routes (score, rerank, classify, Cohere embed).

Every input is prefill-only work on the engine, as for embeddings: it waits for a slot,
counts in running and waiting, in the metrics and in ``/load``, and takes the latency
model's time to first token for its length. Only the vectors and the answer differ.
"""

from __future__ import annotations

import random

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.api.http.keys import ENGINE, ENGINES, GENERATION, LIFECYCLE
from llmsim.api.http.routing import engine_index
from llmsim.api.openai.embeddings import submit_prefill, too_long
from llmsim.api.openai.tokenization import check_model
from llmsim.engine import Engine, Target
from llmsim.service.generation import NOT_SERVING


def ready_engine(request: web.Request) -> Engine:
    """The engine, or 503 while the server is loading or draining."""
    phase = request.app[LIFECYCLE].phase
    if phase != "ready":
        raise APIError(503, NOT_SERVING[phase])
    return request.app[ENGINE]


def resolve(engine: Engine, model: str | None) -> Target:
    """The model a request names; 404 in vLLM's words for an unknown one."""
    check_model(engine, model)
    return engine.resolve(model)


def request_id(prefix: str) -> str:
    return prefix + f"{random.getrandbits(128):032x}"


def truncated(count: int, truncate_prompt_tokens: int | None, limit: int) -> int:
    """vLLM's ``truncate_prompt_tokens``: keep the last N tokens (-1: the model's limit)."""
    if truncate_prompt_tokens is None:
        return count
    keep = limit if truncate_prompt_tokens < 0 else truncate_prompt_tokens
    return min(count, keep)


def check_truncation(truncate_prompt_tokens: int | None, limit: int) -> None:
    if truncate_prompt_tokens is not None and truncate_prompt_tokens > limit:
        raise APIError(
            400,
            f"truncate_prompt_tokens value ({truncate_prompt_tokens}) is greater than "
            f"max_model_len ({limit}). Please, select a smaller truncation size.",
            "truncate_prompt_tokens",
        )


def check_lengths(engine: Engine, counts: list[int], param: str) -> None:
    limit = engine.settings.max_model_len
    for count in counts:
        if count > limit:
            raise APIError(400, too_long(limit, count), param)


async def run_prefill(
    request: web.Request, engine: Engine, rid: str, target: Target, counts: list[int]
) -> None:
    """Schedule one prefill-only sequence per count and wait until all are done (on the
    data-parallel engine the balancer picks, when there are several)."""
    engines = request.app[ENGINES]
    if len(engines.engines) > 1:
        engine = engines.engines[engine_index(request, engines)]
    group = submit_prefill(engine, rid, target, counts)
    request[GENERATION] = group
    with group:
        await group.run()


def usage(total: int) -> dict[str, object]:
    """vLLM's ``UsageInfo`` for pooling work: no completion tokens."""
    return {
        "prompt_tokens": total,
        "total_tokens": total,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }
