"""vLLM's ``POST /classify`` of a pooling model.

The simulated classifier has two classes with Hugging Face's default labels. Its logits
are a keyed hash of the input, so the same text always gets the same label and
probabilities; ``use_activation: false`` answers the raw logits, as vLLM does. Each input
is prefill-only work on the engine (:mod:`llmsim.api.openai.prefill`).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Annotated

from aiohttp import web
from pydantic import Field

from llmsim.api.http.jsonio import dumps
from llmsim.api.http.requests import read_json_object
from llmsim.api.openai.embeddings import PoolingInput, count_item, pooled_items
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
from llmsim.api.openai.schemas import INTEGRAL
from llmsim.api.openai.tokenization import validate

LABELS = ("LABEL_0", "LABEL_1")
"""The classes, named as a Hugging Face config without ``id2label`` names them."""
LOGIT_RANGE = 4.0
"""Logits fall in ``[-LOGIT_RANGE, LOGIT_RANGE]``: confident answers and unsure ones."""


class ClassificationRequest(PoolingInput):
    """vLLM's ``ClassificationRequest``: ``input`` (texts or token ids) or ``messages``."""

    truncate_prompt_tokens: Annotated[int, Field(ge=-1), INTEGRAL] | None = None
    use_activation: bool | None = None
    priority: Annotated[int, INTEGRAL] = 0


async def create_classify(request: web.Request) -> web.Response:
    engine = ready_engine(request)
    body: ClassificationRequest = validate(ClassificationRequest, await read_json_object(request))
    target = resolve(engine, body.model)
    limit = engine.settings.max_model_len
    check_truncation(body.truncate_prompt_tokens, limit)
    items = pooled_items(engine, body)
    counts = [
        truncated(count_item(engine, body, item), body.truncate_prompt_tokens, limit)
        for item in items
    ]
    check_lengths(engine, counts, "input")
    rid = request_id("classify-")
    await run_prefill(request, engine, rid, target, counts)
    activate = body.use_activation is not False
    data = []
    for index, item in enumerate(items):
        logits = class_logits(item)
        best = max(range(len(LABELS)), key=lambda k: logits[k])
        data.append(
            {
                "index": index,
                "label": LABELS[best],
                "probs": softmax(logits) if activate else logits,
                "num_classes": len(LABELS),
            }
        )
    answer = {
        "id": rid,
        "object": "list",
        "created": int(time.time()),
        "model": target.name,
        "data": data,
        "usage": usage(sum(counts)),
    }
    return web.Response(body=dumps(answer), content_type="application/json")


def class_logits(item: str | list[int]) -> list[float]:
    """One logit per class, a keyed hash of the input (text or token ids)."""
    key = item if isinstance(item, str) else "ids:" + ",".join(map(str, item))
    digest = hashlib.blake2b(key.encode(), digest_size=8 * len(LABELS), person=b"classify").digest()
    logits = []
    for k in range(len(LABELS)):
        fraction = int.from_bytes(digest[8 * k : 8 * k + 8], "little") / 2**64
        logits.append((2 * fraction - 1) * LOGIT_RANGE)
    return logits


def softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    weights = [math.exp(logit - top) for logit in logits]
    total = sum(weights)
    return [weight / total for weight in weights]
