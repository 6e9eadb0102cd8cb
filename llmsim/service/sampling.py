"""vLLM's sampling parameters, checked as ``SamplingParams`` checks them, to the engine's request.

A door fills :class:`Sampling` from its wire format (HTTP from its validated body, gRPC from
``SamplingParams``); :func:`check_sampling` refuses what vLLM refuses, with vLLM's messages
(HTTP's schema bounds most fields itself, and asks :func:`check_logprobs_limit` for the
``--max-logprobs`` bound); :func:`generation_request` makes the engine's
:class:`~llmsim.engine.GenerationRequest` from them for every door. The parameters that only
change a real model's numbers (temperature, penalties, ``logit_bias``) are accepted and
change nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmsim.engine import Answer, GenerationRequest, PromptInput, Target
from llmsim.engine.timing import TimingOverride
from llmsim.engine.tokenizer import Tokenizer
from llmsim.service.errors import invalid

LOGIT_BIAS_LIMIT = 100.0
"""vLLM clamps each bias to [-100, 100]."""


@dataclass(slots=True)
class Sampling:
    """What shapes the answer's length and content; None where the client left a default."""

    max_tokens: int | None = None
    min_tokens: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    truncate_prompt_tokens: int | None = None
    priority: int = 0


def check_sampling(
    sampling: Sampling, tokenizer: Tokenizer, max_logprobs: int, max_sequences: int
) -> None:
    """vLLM's 400s for parameters out of range; nothing is changed."""
    if sampling.n < 1:
        raise invalid(f"n must be at least 1, got {sampling.n}.", "n")
    if sampling.n > max_sequences:
        raise invalid(
            f"n must be at most the server's max_num_seqs ({max_sequences}), got {sampling.n}.",
            "n",
        )
    limit = sampling.max_tokens
    if limit is not None and limit < 1:
        raise invalid(f"max_tokens must be at least 1, got {limit}.", "max_tokens")
    if limit is not None and sampling.min_tokens > limit:
        raise invalid(
            f"min_tokens must be less than or equal to max_tokens={limit}, "
            f"got {sampling.min_tokens}.",
            "min_tokens",
        )
    vocab = tokenizer.max_token_id + 1
    _check_logprobs("logprobs", "sample", sampling.logprobs, max_logprobs, vocab)
    _check_logprobs("prompt_logprobs", "prompt", sampling.prompt_logprobs, max_logprobs, vocab)
    unknown = sorted(token for token in sampling.logit_bias if not 0 <= token < vocab)
    if unknown:
        raise invalid(
            f"token_id(s) {unknown} in logit_bias contain out-of-vocab token ids. "
            f"Vocabulary size: {vocab}",
            "logit_bias",
        )


def _check_logprobs(name: str, kind: str, value: int | None, limit: int, vocab: int) -> None:
    if value is None:
        return
    if value < -1:
        raise invalid(f"{name} must be non-negative or -1, got {value}.", name)
    wanted = vocab if value == -1 else value
    if limit != -1:
        check_logprobs_limit(wanted, limit, kind, detail=False)


def check_logprobs_limit(
    value: int | None, limit: int, kind: str = "sample", detail: bool = True
) -> None:
    """vLLM's 400 when a request asks for more logprobs than ``--max-logprobs``.

    vLLM checks its sampling parameters, so chat's ``top_logprobs`` is reported as
    ``logprobs``; its validation error adds the parameter and value to the message
    (``detail``, as HTTP answers it).
    """
    if value is None or value <= limit:
        return
    param = "logprobs" if kind == "sample" else "prompt_logprobs"
    message = f"Requested {kind} logprobs of {value}, which is greater than max allowed: {limit}"
    if detail:
        message += f" (parameter={param}, value={value})"
    raise invalid(message, param)


def generation_request(
    request_id: str,
    target: Target,
    prompts: Sequence[PromptInput],
    sampling: Sampling,
    max_tokens: int | None,
    answer: Answer | None = None,
    timing: TimingOverride | None = None,
    kv_transfer_delay: float | None = None,
    arrival: float | None = None,
) -> GenerationRequest:
    """What the engine is asked for: ``sampling``'s parameters, with ``max_tokens`` as the
    answer source left it (a response rule may set its own) and the chosen ``answer``."""
    return GenerationRequest(
        request_id=request_id,
        target=target,
        prompts=prompts,
        n=sampling.n,
        max_tokens=max_tokens,
        ignore_eos=sampling.ignore_eos,
        stop=sampling.stop,
        seed=sampling.seed,
        answer=answer,
        timing=timing,
        kv_transfer_delay=kv_transfer_delay,
        arrival=arrival,
        priority=sampling.priority,
    )
