"""An embedding of token ids: a prefill-only sequence on the engine, then its vector.

The sequence takes its place under the scheduler's limits and the latency model's prefill
time, as ``POST /v1/embeddings`` does; the vector is the engine's stable projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmsim.engine import GenerationRequest, PromptInput, RequestGroup
from llmsim.engine.embedding import embed_ids
from llmsim.service.errors import invalid
from llmsim.service.generation import (
    ServiceState,
    check_serving,
    inject_fault,
    pick_engine,
    submit,
)
from llmsim.service.prompts import token_prompt


@dataclass(frozen=True, slots=True)
class Embedding:
    group: RequestGroup
    """Run it (inside ``with group:``) before answering: it takes the prefill's time."""
    vector: list[float]
    prompt_tokens: int


def start_embedding(
    state: ServiceState,
    request_id: str,
    ids: Sequence[int],
    forced_fault: str | None = None,
    rank: int | None = None,
) -> Embedding:
    settings = state.engine.settings
    check_serving(state.lifecycle)
    inject_fault(state.runtime, forced_fault, settings.served_names[0])
    engine = pick_engine(state, rank)
    target = engine.resolve(None)
    prompt = token_prompt(ids, engine.tokenizer, False)
    limit = settings.max_model_len
    if prompt.token_count > limit:
        raise invalid(_too_long(limit, prompt.token_count), "input")
    generation = GenerationRequest(
        request_id, target, [PromptInput(prompt.token_count, "")], n=1, max_tokens=0
    )
    group = submit(engine, generation)
    vector = embed_ids(list(ids), settings.embedding_dimension)
    return Embedding(group, vector, prompt.token_count)


def _too_long(limit: int, count: int) -> str:
    return (
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{count} tokens in the input for embedding generation. Please reduce the length "
        "of the input."
    )
