"""``POST /inference/v1/generate``: vLLM's tokens-in, tokens-out endpoint.

Routers and rollout frameworks that tokenize for themselves send ``token_ids`` and vLLM's
``sampling_params`` and read token ids back. The request is checked and run as the
completions request with the same token-id prompt (:func:`as_completion`), so it shares
every limit, metric, fault, P/D and prefix-cache path of the other generation endpoints;
only the answer's shape is this endpoint's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence as Seq
from typing import Annotated, Any, cast

from aiohttp import web
from pydantic import Field

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import ENGINES
from llmsim.api.http.requests import read_json_object, validate_body
from llmsim.api.http.sse import DONE, ResponseMeta, StreamSink, usage
from llmsim.api.openai.inference import INFERENCE, Flavor, generate
from llmsim.api.openai.logprobs import (
    OutputPlan,
    completion_plan,
    prompt_logprobs_json,
)
from llmsim.api.openai.prompts import completion_prompts
from llmsim.api.openai.rendered import RenderedCompletion, marked_ids, markup, read_decisions
from llmsim.api.openai.schemas import INTEGRAL, CompletionRequest, StreamOptions, _Body
from llmsim.engine import RequestGroup, Sequence
from llmsim.engine.tokenizer import Tokenizer
from llmsim.service.generation import output_ids

TokenId = Annotated[int, Field(ge=0, le=2**63 - 1), INTEGRAL]

SAMPLING_KEYS = frozenset(
    {
        "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature",
        "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos",
        "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "logit_bias",
        "structured_outputs", "include_stop_str_in_output", "skip_special_tokens",
        "spaces_between_special_tokens", "allowed_token_ids", "bad_words",
    }
)  # fmt: skip
"""vLLM's ``SamplingParams`` fields that reach the completions request; others are ignored,
as vLLM ignores those that change nothing but the model's numbers."""


class GenerateRequest(_Body):
    """vLLM's ``GenerateRequest`` (``vllm/entrypoints/serve/disagg/protocol.py``)."""

    request_id: str | None = None
    token_ids: Annotated[list[TokenId], Field(min_length=1)]
    sampling_params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    cache_salt: str | None = None
    priority: Annotated[int, Field(ge=-(2**63), le=2**63 - 1), INTEGRAL] = 0
    kv_transfer_params: dict[str, Any] | None = None
    features: dict[str, Any] | None = None


def as_completion(body: GenerateRequest, max_sequences: int) -> CompletionRequest:
    """The completions request that generates what ``body`` asks for.

    Without ``max_tokens`` the answer may fill the context window, as vLLM's endpoint
    defaults it (``SamplingParams``' own default of 16 does not apply here).
    """
    params = body.sampling_params
    n = params.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and n > max_sequences:
        raise APIError(
            400,
            f"sampling_params.n must be at most the server's max_num_seqs ({max_sequences}), "
            f"got {n}.",
            "sampling_params.n",
        )
    data: dict[str, Any] = {key: value for key, value in params.items() if key in SAMPLING_KEYS}
    data.setdefault("max_tokens", None)
    if data.get("stop") is None:
        data.pop("stop", None)
    data["prompt"] = body.token_ids
    data["stream"] = bool(body.stream)
    if body.priority:
        data["priority"] = body.priority
    for key in ("model", "stream_options", "kv_transfer_params"):
        value = getattr(body, key)
        if value is not None:
            data[key] = value if not isinstance(value, StreamOptions) else value.model_dump()
    try:
        return read_decisions(validate_body(RenderedCompletion, data), params)
    except APIError as exc:
        if not exc.param or exc.param not in params:
            raise
        param = f"sampling_params.{exc.param}"
        raise APIError(exc.status, exc.message.replace(exc.param, param, 1), param) from None


def token_logprobs(
    plan: OutputPlan, sequence: Sequence, ids: Seq[int], start: int
) -> dict[str, Any]:
    """vLLM's chat-style logprobs with ``token_id:N`` tokens, as this endpoint answers them."""
    pieces = sequence.output[start : start + len(ids)]
    steps = plan.generated_steps(sequence.index, pieces, start)
    content = []
    for token_id, step in zip(ids, steps, strict=True):
        content.append(
            {
                "token": f"token_id:{token_id}",
                "logprob": step.logprob,
                "bytes": None,
                "top_logprobs": [
                    {"token": f"token_id:{candidate.token_id}", "logprob": logprob, "bytes": None}
                    for candidate, logprob in step.top
                ],
            }
        )
    return {"content": content}


def finish_reason(sequence: Sequence) -> str:
    """A model's reason: tool calls are text to it (chat's parser reports ``tool_calls``)."""
    reason = sequence.api_finish_reason
    return "stop" if reason == "tool_calls" else reason


def _choice(meta: ResponseMeta, sequence: Sequence, tokenizer: Tokenizer) -> dict[str, Any]:
    ids = output_ids(sequence, tokenizer)
    plan = meta.plan
    logprobs = None
    if plan is not None and plan.logprobs is not None:
        logprobs = token_logprobs(plan, sequence, ids, 0)
    return {
        "index": sequence.index,
        "logprobs": logprobs,
        "finish_reason": finish_reason(sequence),
        "token_ids": marked_ids(markup(sequence), tokenizer.encode, ids, 0, True),
    }


def generate_usage(group: RequestGroup) -> dict[str, Any]:
    """The group's usage, the markup written around thoughts and calls counted too: it is
    in the token ids this endpoint answers."""
    body = usage(group)
    encode = group.engine.tokenizer.encode
    extra = sum(len(encode(text)) for sequence in group.sequences for _, text in markup(sequence))
    if extra:
        body["completion_tokens"] += extra
        body["total_tokens"] += extra
    return body


def generate_body(meta: ResponseMeta, group: RequestGroup) -> dict[str, Any]:
    tokenizer = group.engine.tokenizer
    prompt_logprobs = None
    plan = meta.plan
    if plan is not None and plan.prompt_logprobs is not None:
        prompt_logprobs = prompt_logprobs_json(plan.prompt_steps(0, plan.prompt_logprobs))
    return {
        "request_id": meta.id,
        "model": meta.model,
        "created": meta.created,
        "choices": [_choice(meta, sequence, tokenizer) for sequence in group.sequences],
        "usage": generate_usage(group),
        "prompt_logprobs": prompt_logprobs,
        "kv_transfer_params": None,
    }


class GenerateStreamSink(StreamSink):
    """One ``data:`` chunk per release of tokens, carrying their ids."""

    def __init__(
        self, request: web.BaseRequest, response: web.StreamResponse, meta: ResponseMeta
    ) -> None:
        super().__init__(request, response, meta)
        self._prefix = b'data: {"request_id":' + dumps(meta.id) + b',"choices":[{"index":'
        self._plan = meta.plan
        self._tokenizer = cast(web.Request, request).app[INFERENCE].engine.tokenizer

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        end = start + len(texts)
        ids = output_ids(sequence, self._tokenizer, start, end)
        logprobs = b"null"
        if self._plan is not None and self._plan.logprobs is not None:
            logprobs = dumps(token_logprobs(self._plan, sequence, ids, start))
        last = end >= len(sequence.output)
        finish = dumps(finish_reason(sequence)) if last else b"null"
        marked = marked_ids(markup(sequence), self._tokenizer.encode, ids, start, last)
        return self.write(
            self.chunk(
                sequence.index,
                b'"logprobs":' + logprobs + b',"finish_reason":' + finish
                + b',"token_ids":' + dumps(marked),
            )
        )  # fmt: skip

    def token_chunk(
        self, sequence: Sequence, text: str, last: bool, pieces: Seq[str] | None = None
    ) -> bytes:
        finish = dumps(finish_reason(sequence)) if last else b"null"
        return self.chunk(
            sequence.index, b'"logprobs":null,"finish_reason":' + finish + b',"token_ids":[]'
        )

    def end_chunk(self, sequence: Sequence) -> bytes:
        return self.token_chunk(sequence, "", True)

    async def close(self, meta: ResponseMeta, group: RequestGroup, include_usage: bool) -> None:
        response = self.response
        if include_usage:
            body = {"request_id": meta.id, "choices": [], "usage": generate_usage(group)}
            await response.write(b"data: " + dumps(body) + b"\n\n")
        await response.write(DONE)
        await response.write_eof()


def _prompts(body: Any, tokenizer: Tokenizer, with_ids: bool) -> Seq[Any]:
    return completion_prompts(body, tokenizer, with_ids)


def _plan(body: Any, tokenizer: Tokenizer, max_logprobs: int) -> OutputPlan | None:
    plan = completion_plan(body, tokenizer, max_logprobs)
    if plan is not None:
        plan.echo = False
    return plan


GENERATE = Flavor(
    "generate-tokens-",
    "generate",
    "generate.chunk",
    "token_ids",
    generate_body,
    GenerateStreamSink,
    _prompts,
    _plan,
)


async def generate_tokens(request: web.Request) -> web.StreamResponse:
    arrival = time.monotonic()  # the latency metrics count the body's parsing too
    data = await read_json_object(request)
    body: GenerateRequest = validate_body(GenerateRequest, data)
    engine = request.app[INFERENCE].engine
    completion = as_completion(body, engine.settings.max_running_requests)
    answering = generate(request, GENERATE, completion, request_id=body.request_id, arrival=arrival)
    del data, body, completion  # an open stream keeps none of them
    return await answering


__all__ = ["GENERATE", "GenerateRequest", "as_completion", "generate_tokens"]


async def abort_requests(request: web.Request) -> web.Response:
    """``POST /inference/v1/abort_requests``: end the named requests (``request_ids``, one id
    or a list, as the engine knows them: ``generate-tokens-<id>``, ``chatcmpl-<id>``) on
    every engine, with the tokens they have; an empty 200, as vLLM answers."""
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"JSON decode error: {exc}") from None
    ids = body.get("request_ids") if isinstance(body, dict) else None
    if isinstance(ids, str):
        ids = [ids]
    if not (isinstance(ids, list) and all(isinstance(item, str) for item in ids)):
        raise APIError(
            400, "request_ids: a request id or a list of them is required", "request_ids"
        )
    for engine in request.app[ENGINES].engines:
        engine.abort_in_flight(ids)
    return web.Response()
