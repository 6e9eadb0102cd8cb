"""vLLM's protobuf messages to the service layer's plain requests, and answers back.

Token ids travel as ``uint32``: a real tokenizer's ids fit, the built-in tokenizer's word
ids (computed from the text, up to 49 bits) are folded to their low 32 bits on the way out.

proto3 cannot tell an unset scalar from its zero, so vLLM reads ``n: 0`` as one sample
and ``min_tokens: 0`` as none; fields declared ``optional`` (``max_tokens``, ``seed``,
``logprobs``...) are read only when present.
"""

from __future__ import annotations

import random

from llmsim.api.grpc.generated import vllm_engine_pb2 as pb
from llmsim.engine import RequestGroup, Sequence
from llmsim.service.constraints import Constraint
from llmsim.service.errors import invalid
from llmsim.service.generation import TokenRequest
from llmsim.service.sampling import Sampling


def token_request(request: pb.GenerateRequest, forced_fault: str | None) -> TokenRequest:
    """The service's request for ``request``; a missing prompt is INVALID_ARGUMENT."""
    which = request.WhichOneof("input")
    if which is None:
        raise invalid("The request must give an input: tokenized or text.", "input")
    request_id = request.request_id or f"{random.getrandbits(128):032x}"
    params = request.sampling_params
    tokenized = list(request.tokenized.input_ids) if which == "tokenized" else None
    return TokenRequest(
        request_id=request_id,
        token_ids=tokenized,
        text=request.text if which == "text" else None,
        sampling=sampling(params),
        constraint=constraint(params),
        forced_fault=forced_fault,
    )


def sampling(params: pb.SamplingParams) -> Sampling:
    return Sampling(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        min_tokens=params.min_tokens,
        n=params.n or 1,
        stop=tuple(params.stop),
        stop_token_ids=tuple(params.stop_token_ids),
        ignore_eos=params.ignore_eos,
        seed=params.seed if params.HasField("seed") else None,
        logprobs=params.logprobs if params.HasField("logprobs") else None,
        prompt_logprobs=params.prompt_logprobs if params.HasField("prompt_logprobs") else None,
        logit_bias=dict(params.logit_bias),
        truncate_prompt_tokens=params.truncate_prompt_tokens
        if params.HasField("truncate_prompt_tokens")
        else None,
    )


def constraint(params: pb.SamplingParams) -> Constraint | None:
    kind = params.WhichOneof("constraint")
    if kind is None or (kind == "json_object" and not params.json_object):
        return None
    if kind == "choice":
        return Constraint("choice", tuple(params.choice.choices))
    if kind == "json_object":
        return Constraint("json_object")
    return Constraint(kind, str(getattr(params, kind)))


UINT32_MAX = 2**32 - 1


def wire_ids(ids: list[int]) -> list[int]:
    """``ids`` as ``uint32`` values (unchanged when they fit, as a real tokenizer's do)."""
    if not ids or max(ids) <= UINT32_MAX:
        return ids
    return [token_id & UINT32_MAX for token_id in ids]


def complete(
    group: RequestGroup, sequence: Sequence, ids: list[int], aborted: bool
) -> pb.GenerateResponse:
    """The last message of one sample: all its ids, why it ended and the usage."""
    return pb.GenerateResponse(
        complete=pb.GenerateComplete(
            output_ids=wire_ids(ids),
            finish_reason="abort" if aborted else sequence.api_finish_reason,
            prompt_tokens=group.prompt_tokens,
            completion_tokens=len(ids),
            cached_tokens=sequence.cached_tokens,
        )
    )


def chunk(
    prompt_tokens: int, sequence: Sequence, ids: list[int], generated: int
) -> pb.GenerateResponse:
    """The ids released now; ``completion_tokens`` counts the sample's tokens so far."""
    return pb.GenerateResponse(
        chunk=pb.GenerateStreamChunk(
            token_ids=wire_ids(ids),
            prompt_tokens=prompt_tokens,
            completion_tokens=generated,
            cached_tokens=sequence.cached_tokens,
        )
    )
