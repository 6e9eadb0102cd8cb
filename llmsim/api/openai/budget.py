"""The work one request may ask for (``--max-request-work``), checked before it starts.

vLLM bounds each factor on its own (``n``, ``max_tokens`` within ``max_model_len``,
``--max-logprobs``), yet their product is what a request costs: ``n: 128`` answers of 3 000
tokens with 20 logprobs each is 8 million entries, seconds of work and hundreds of megabytes
of JSON. This module counts that product and refuses a request above the limit, before any
work is done.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmsim.api.http.errors import APIError
from llmsim.api.openai.logprobs import OutputPlan
from llmsim.engine import PromptInput

WORK_FLAG = "--max-request-work"


def check_work(
    prompts: Sequence[PromptInput],
    n: int,
    max_tokens: int | None,
    max_model_len: int,
    plan: OutputPlan | None,
    limit: int,
) -> None:
    """A 400 naming the limit when the request asks for more than ``limit`` units of work.

    The common request (one prompt, one choice, no logprobs) is settled by one product.
    """
    if plan is None and n * len(prompts) * max_model_len <= limit:
        return
    work = request_work(prompts, n, max_tokens, max_model_len, plan)
    if work > limit:
        raise APIError(
            400,
            f"This request asks for {work} units of work (token positions x (1 + logprobs) "
            f"over all choices), more than this server's limit of {limit} ({WORK_FLAG}). "
            "Lower n, max_tokens, the number of prompts or the number of logprobs.",
        )


CHARS_PER_UNIT = 4
"""Characters of a chosen answer that count one unit of work (about one token's worth)."""


def check_answer_work(chars: int, limit: int) -> None:
    """A 400 naming the limit when the choices' chosen answers (a structured output or tool
    calls, which each choice tokenizes whole before ``max_tokens`` cuts it) come to more
    than ``limit`` units: ``chars`` is their characters over all choices."""
    work = chars // CHARS_PER_UNIT
    if work > limit:
        raise APIError(
            400,
            f"This request asks for {work} units of work (the characters of its structured "
            f"answers / {CHARS_PER_UNIT}, over all choices), more than this server's limit of "
            f"{limit} ({WORK_FLAG}). Lower n or the number of prompts, or ask for a smaller "
            "structured output.",
        )


def request_work(
    prompts: Sequence[PromptInput],
    n: int,
    max_tokens: int | None,
    max_model_len: int,
    plan: OutputPlan | None,
) -> int:
    """Token positions each choice may make or score, each counted 1 + its logprobs.

    A choice makes up to ``max_tokens`` (the rest of the context when unset); with echo and
    logprobs, or prompt logprobs, it scores its prompt too.
    """
    per_token = 1
    per_prompt_token = 0
    if plan is not None:
        if plan.logprobs is not None:
            per_token += plan.logprobs
            if plan.echo:
                per_prompt_token += 1 + plan.logprobs
        if plan.prompt_logprobs is not None:
            per_prompt_token += 1 + plan.prompt_logprobs
    work = 0
    for prompt in prompts:
        room = max(max_model_len - prompt.token_count, 0)
        tokens = room if max_tokens is None else min(max_tokens, room)
        work += n * (tokens * per_token + prompt.token_count * per_prompt_token)
    return work
