"""vLLM's render and derender endpoints: requests to token ids, token ids back to answers.

``/v1/chat/completions/render`` and ``/v1/completions/render`` answer the
``GenerateRequest`` that ``/inference/v1/generate`` takes: the prompt's token ids, as the
same server counts them for the same request (one rendering path, :mod:`prompts`), and
vLLM's ``sampling_params``. The derender endpoints turn a generate answer's token ids into
the chat or completions answer vLLM would have given. Together with generate they are the
disaggregated front end that prefix-aware routers and rollout frameworks drive.
"""

from __future__ import annotations

import asyncio
import random
import time
from functools import partial
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.requests import read_json_object, validate_body
from llmsim.api.openai.derender_parse import chat_message, named_tool_choice
from llmsim.api.openai.derender_stream import (
    LONG_OUTPUT,
    derender_chat_chunk,
    derender_completion_chunk,
)
from llmsim.api.openai.inference import INFERENCE
from llmsim.api.openai.prompts import apply_server_options, chat_prompt, completion_prompts
from llmsim.api.openai.rendered import chat_decisions
from llmsim.api.openai.schemas import INTEGRAL, ChatCompletionRequest, CompletionRequest, _Body
from llmsim.api.openai.structured_fields import StructuredFields
from llmsim.api.openai.token_generate import TokenId
from llmsim.engine import Engine, UnknownModelError
from llmsim.engine.tokenizer import TokenizerError

Count = Annotated[int, Field(ge=0, le=2**63 - 1), INTEGRAL]


def _json(body: Any) -> web.Response:
    return web.Response(body=dumps(body), content_type="application/json")


def _check_model(engine: Engine, model: str | None) -> str:
    try:
        return engine.resolve(model).name
    except UnknownModelError as exc:
        raise APIError(404, f"The model `{exc.name}` does not exist.", "model") from None


def _max_tokens(requested: int | None, prompt_tokens: int, engine: Engine, param: str) -> int:
    """vLLM's ``get_max_tokens``: what the request asks for, within the context window and
    the generation config's limits."""
    max_model_len = engine.settings.max_model_len
    room = max_model_len - prompt_tokens
    if room <= 0:
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the input "
            f"{param}.",
            param,
        )
    budget = engine.answer_budget(prompt_tokens, requested)
    return budget if requested is None else min(requested, budget)


def _structured(body: StructuredFields) -> dict[str, Any] | None:
    """The request's output constraint as ``SamplingParams.structured_outputs``."""
    if body.structured_outputs is not None:
        return body.structured_outputs.model_dump(by_alias=True, exclude_none=True)
    fmt = body.response_format
    if fmt is not None and fmt.type == "json_object":
        return {"json_object": True}
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        return {"json": fmt.json_schema.json_schema or {}}
    if body.guided_json is not None:
        return {"json": body.guided_json}
    if body.guided_regex is not None:
        return {"regex": body.guided_regex}
    if body.guided_choice is not None:
        return {"choice": body.guided_choice}
    return None


def tool_constraint(body: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON a forced tool call is decoded to, as vLLM constrains it: an array of
    ``{"name", "parameters"}`` objects for ``required``, the tool's parameters when named."""
    choice, tools = body.tool_choice, body.tools or []
    if not tools or choice is None or (isinstance(choice, str) and choice != "required"):
        return None
    if isinstance(choice, str):  # required
        calls = [
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": [tool.function.name]},
                    "parameters": tool.function.parameters or {"type": "object"},
                },
                "required": ["name", "parameters"],
            }
            for tool in tools
        ]
        return {"json": {"type": "array", "minItems": 1, "items": {"anyOf": calls}}}
    named = next((t for t in tools if t.function.name == choice.function.name), None)
    if named is None:
        return None
    return {"json": named.function.parameters or {"type": "object"}}


def sampling_params(
    body: ChatCompletionRequest | CompletionRequest, max_tokens: int, logprobs: int | None
) -> dict[str, Any]:
    """vLLM's ``SamplingParams`` for ``body``, with vLLM's defaults for what it leaves out."""
    return {
        "n": body.n,
        "presence_penalty": body.presence_penalty or 0.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "repetition_penalty": body.repetition_penalty or 1.0,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "top_k": 0 if body.top_k is None else body.top_k,
        "min_p": body.min_p or 0.0,
        "seed": body.seed,
        "stop": list(body.stop_strings),
        "stop_token_ids": list(body.stop_token_ids or ()),
        "ignore_eos": body.ignore_eos,
        "max_tokens": max_tokens,
        "min_tokens": body.min_tokens or 0,
        "logprobs": logprobs,
        "prompt_logprobs": body.prompt_logprobs,
        "skip_special_tokens": True,
        "spaces_between_special_tokens": True,
        "include_stop_str_in_output": False,
        "logit_bias": body.logit_bias,
        "structured_outputs": (
            (isinstance(body, ChatCompletionRequest) and tool_constraint(body)) or _structured(body)
        ),
        "extra_args": None,
    }


def _generate_request(
    prefix: str,
    token_ids: list[int],
    params: dict[str, Any],
    body: ChatCompletionRequest | CompletionRequest,
) -> dict[str, Any]:
    extras = body.model_extra or {}
    options = body.stream_options
    return {
        "request_id": f"{prefix}{random.getrandbits(128):032x}",
        "token_ids": token_ids,
        "features": None,
        "sampling_params": params,
        "model": body.model,
        "stream": bool(body.stream),
        "stream_options": options.model_dump() if body.stream and options is not None else None,
        "cache_salt": extras.get("cache_salt"),
        "priority": body.priority,
        "kv_transfer_params": body.kv_transfer_params,
    }


async def render_chat(request: web.Request) -> web.Response:
    body = validate_body(ChatCompletionRequest, await read_json_object(request))
    return _json(await rendered_chat(request.app[INFERENCE].engine, body))


async def rendered_chat(
    engine: Engine, body: ChatCompletionRequest, prefix: str = "chatcmpl-"
) -> dict[str, Any]:
    """The ``GenerateRequest`` a chat request renders to (the Messages and Responses render
    routes translate theirs into chat first, as vLLM does); ``prefix`` starts its id."""
    _check_model(engine, body.model)
    apply_server_options(body, engine.settings)
    prompt = chat_prompt(body, engine.tokenizer, with_ids=True)
    ids = list(prompt.token_ids or ())
    limit = _max_tokens(body.output_limit, len(ids), engine, "messages")
    top = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling_params(body, limit, top)
    params["extra_args"] = await asyncio.to_thread(chat_decisions, body, engine.settings)
    return _generate_request(prefix, ids, params, body)


async def render_completion(request: web.Request) -> web.Response:
    body = validate_body(CompletionRequest, await read_json_object(request))
    engine = request.app[INFERENCE].engine
    _check_model(engine, body.model)
    rendered = []
    for prompt in completion_prompts(body, engine.tokenizer, with_ids=True):
        ids = list(prompt.token_ids or ())
        limit = _max_tokens(body.max_tokens, len(ids), engine, "prompt")
        params = sampling_params(body, limit, body.logprobs)
        rendered.append(_generate_request("cmpl-", ids, params, body))
    return _json(rendered)


class GeneratedChoice(_Body):
    index: Count = 0
    token_ids: list[TokenId] | None = None
    finish_reason: str | None = "stop"
    logprobs: dict[str, Any] | None = None


class GeneratedAnswer(_Body):
    request_id: str | None = None
    choices: list[GeneratedChoice]


class DerenderChatRequest(_Body):
    model: str | None = None
    generate_response: GeneratedAnswer
    prompt_tokens: Count | None = 0
    chat_request: dict[str, Any] | None = None
    stream: bool | None = False


class DerenderCompletionRequest(_Body):
    model: str | None = None
    generate_responses: Annotated[list[GeneratedAnswer], Field(min_length=1)]
    prompt_tokens: Count | list[Count] | None = 0
    """vLLM's current form is one count per answer; its first, one count for all."""
    stream: bool | None = False


def _decode(engine: Engine, ids: list[int] | None) -> str:
    try:
        return engine.tokenizer.decode(ids or [])
    except TokenizerError as exc:
        raise APIError(400, str(exc).capitalize() + ".", "token_ids") from None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }


async def derender_chat(request: web.Request) -> web.StreamResponse:
    data = await read_json_object(request)
    if data.get("stream"):
        return await derender_chat_chunk(request, data)
    body = validate_body(DerenderChatRequest, data)
    engine = request.app[INFERENCE].engine
    name = _check_model(engine, body.model)
    answers = body.generate_response.choices
    generated = sum(len(choice.token_ids or ()) for choice in answers)
    parse = partial(_chat_choices, engine, answers, body.chat_request)
    choices = await asyncio.to_thread(parse) if generated > LONG_OUTPUT else parse()
    answer_id = body.generate_response.request_id or f"{random.getrandbits(128):032x}"
    return _json(
        {
            "id": answer_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": _usage(body.prompt_tokens or 0, generated),
        }
    )


def _chat_choices(
    engine: Engine, answers: list[GeneratedChoice], chat_request: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Each generated choice decoded and parsed into chat's message."""
    choices = []
    for choice in answers:
        text = _decode(engine, choice.token_ids)
        message, called = chat_message(engine.settings, text, chat_request)
        finish = choice.finish_reason or "stop"
        if called and finish == "stop" and not named_tool_choice(chat_request):
            finish = "tool_calls"
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": choice.logprobs,
                "finish_reason": finish,
                "stop_reason": None,
            }
        )
    return choices


async def derender_completion(request: web.Request) -> web.StreamResponse:
    data = await read_json_object(request)
    if data.get("stream"):
        return await derender_completion_chunk(request, data)
    body = validate_body(DerenderCompletionRequest, data)
    engine = request.app[INFERENCE].engine
    name = _check_model(engine, body.model)
    choices: list[dict[str, Any]] = []
    generated = 0
    for answer in body.generate_responses:
        for choice in answer.choices:
            generated += len(choice.token_ids or ())
            choices.append(
                {
                    "index": len(choices),
                    "text": _decode(engine, choice.token_ids),
                    "logprobs": None,
                    "finish_reason": choice.finish_reason or "stop",
                    "stop_reason": None,
                    "prompt_logprobs": None,
                }
            )
    first = body.generate_responses[0].request_id
    return _json(
        {
            "id": first or f"cmpl-{random.getrandbits(128):032x}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": _usage(_prompt_count(body), generated),
        }
    )


def _prompt_count(body: DerenderCompletionRequest) -> int:
    """The prompts' tokens: vLLM's list (one count per answer, as many as answers) or one
    count."""
    counts = body.prompt_tokens
    if not isinstance(counts, list):
        return counts or 0
    if len(counts) != len(body.generate_responses):
        raise APIError(
            400,
            f"prompt_tokens length ({len(counts)}) must equal generate_responses length "
            f"({len(body.generate_responses)})",
            "prompt_tokens",
        )
    return sum(counts)


SCALE_OUT_PATHS = frozenset(
    {
        "/v1/chat/completions/render",
        "/v1/completions/render",
        "/v1/chat/completions/derender",
        "/v1/completions/derender",
        "/inference/v1/generate",
        "/inference/v1/abort_requests",
        "/v1/messages/render",
        "/v1/responses/render",
    }
)
"""vLLM's scale-out routes: served by vLLM 0.34 only with ``--enable-scale-out`` (or
``--tokens-only``), else a 403 (``enable_scale_out``)."""
SCALE_OUT_DISABLED = (
    "Scale-out endpoints are disabled. Restart vllm serve with --enable-scale-out to enable them."
)


async def scale_out_disabled(request: web.Request) -> web.Response:
    raise APIError(403, SCALE_OUT_DISABLED)
