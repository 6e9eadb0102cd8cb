"""Streamed derender: one ``/inference/v1/generate`` stream chunk in, one chat or
completions stream chunk out, as vLLM answers ``"stream": true`` on the derender routes.

vLLM keeps no session: each call carries the chunk and the ``stream_state`` the previous
call returned, and answers ``{"chunk", "stream_state"}``. llmsim's state holds the output
ids seen so far (``output_token_ids``, the field vLLM's parser path replays): each call
decodes and parses the text before and after the chunk and answers the difference, so the
deltas join up to what the non-streamed derender answers, never showing half a tag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.requests import validate_body
from llmsim.api.openai.derender_parse import (
    Parsed,
    call_json,
    forced_tool_choice,
    named_tool_choice,
    parse_message,
    stable_prefix,
)
from llmsim.api.openai.inference import INFERENCE
from llmsim.api.openai.schemas import INTEGRAL, _Body
from llmsim.api.openai.token_generate import TokenId
from llmsim.engine import Engine, UnknownModelError
from llmsim.engine.tokenizer import TokenizerError
from llmsim.settings.model import Settings

Count = Annotated[int, Field(ge=0, le=2**63 - 1), INTEGRAL]


class StreamChoice(_Body):
    index: Count = 0
    token_ids: list[TokenId] | None = None
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class GeneratedChunk(_Body):
    request_id: str | None = None
    choices: list[StreamChoice]
    usage: dict[str, Any] | None = None


class StreamState(_Body):
    """vLLM's ``DerenderStreamState``; llmsim reads the output ids and the flags."""

    prev_tokens: Annotated[list[str], Field(max_length=1024)] = Field(default_factory=list)
    prefix_offset: Count = 0
    read_offset: Count = 0
    role_sent: bool = False
    output_token_ids: list[TokenId] = Field(default_factory=list)
    output_chunk_lens: list[Annotated[int, Field(gt=0), INTEGRAL]] = Field(default_factory=list)
    tools_streamed: bool = False
    last_tool_call_ids: list[str] = Field(default_factory=list)


class _ChunkRequest(_Body):
    stream: Literal[True]
    model: str | None = None
    generate_chunk: GeneratedChunk
    stream_state: StreamState | None = None
    prompt_tokens: Count | None = None


class DerenderChatChunk(_ChunkRequest):
    chat_request: dict[str, Any] | None = None


class DerenderCompletionChunk(_ChunkRequest):
    completion_request: dict[str, Any] | None = None


def _start(request: web.Request, body: _ChunkRequest, api: str) -> tuple[Engine, str]:
    """The engine and model name; vLLM's refusals of a chunk it cannot stream."""
    engine = request.app[INFERENCE].engine
    try:
        name = engine.resolve(body.model).name
    except UnknownModelError as exc:
        raise APIError(404, f"The model `{exc.name}` does not exist.", "model") from None
    choices = body.generate_chunk.choices
    if len(choices) > 1:
        raise APIError(400, f"derender_{api}_stream expects at most one choice per chunk")
    state = body.stream_state or StreamState()
    seen = len(state.output_token_ids) + sum(len(c.token_ids or ()) for c in choices)
    limit = engine.settings.max_model_len
    if seen > limit:
        raise APIError(
            400,
            f"token_ids length ({seen}) exceeds max_model_len ({limit}).",
            "generate_chunk.choices",
        )
    return engine, name


def _decode(engine: Engine, ids: list[int], finished: bool) -> str:
    """The text of ``ids``, without a trailing half character a later token completes."""
    try:
        text = engine.tokenizer.decode(ids)
    except TokenizerError as exc:
        raise APIError(400, str(exc).capitalize() + ".", "token_ids") from None
    return text if finished else text.rstrip("\ufffd")


def _usage(body: _ChunkRequest) -> dict[str, Any] | None:
    usage = body.generate_chunk.usage
    if usage is None:
        return None
    given = usage.get("prompt_tokens")
    prompt = body.prompt_tokens if body.prompt_tokens is not None else given
    prompt = prompt if isinstance(prompt, int) else 0
    completion = usage.get("completion_tokens")
    completion = completion if isinstance(completion, int) else 0
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
    }


def _answer(
    body: _ChunkRequest, name: str, obj: str, choices: list[dict[str, Any]], state: StreamState
) -> web.Response:
    chunk = {
        "id": body.generate_chunk.request_id or "",
        "object": obj,
        "created": int(time.time()),
        "model": name,
        "choices": choices,
        "usage": _usage(body),
    }
    return web.Response(
        body=dumps({"chunk": chunk, "stream_state": state.model_dump()}),
        content_type="application/json",
    )


def _advance(state: StreamState, ids: list[int]) -> StreamState:
    if not ids:
        return state
    return state.model_copy(
        update={
            "output_token_ids": [*state.output_token_ids, *ids],
            "output_chunk_lens": [*state.output_chunk_lens, len(ids)],
        }
    )


LONG_OUTPUT = 2048
"""Output ids past which a chunk's decoding and parsing run in a worker thread."""

Step = tuple[dict[str, Any], StreamState]


async def _run(state: StreamState, step: Callable[[], Step]) -> Step:
    """``step()``, in a worker thread once the output is long (each call decodes and parses
    all of it), so the event loop keeps serving."""
    if len(state.output_token_ids) > LONG_OUTPUT:
        return await asyncio.to_thread(step)
    return step()


async def derender_completion_chunk(request: web.Request, data: dict[str, Any]) -> web.Response:
    body = validate_body(DerenderCompletionChunk, data)
    engine, name = _start(request, body, "completion")
    state = body.stream_state or StreamState()
    choices: list[dict[str, Any]] = []
    for choice in body.generate_chunk.choices:  # at most one (checked)
        answer, state = await _run(state, partial(_completion_step, engine, state, choice))
        choices.append(answer)
    return _answer(body, name, "text_completion", choices, state)


def _completion_step(engine: Engine, state: StreamState, choice: StreamChoice) -> Step:
    ids = choice.token_ids or []
    before = _decode(engine, state.output_token_ids, False)
    after = _decode(engine, [*state.output_token_ids, *ids], choice.finish_reason is not None)
    answer = {
        "index": choice.index,
        "text": after[len(before) :] if after.startswith(before) else "",
        "logprobs": choice.logprobs,
        "finish_reason": choice.finish_reason,
        "stop_reason": None,
    }
    return answer, _advance(state, ids)


def _view(settings: Settings, text: str, chat: dict[str, Any] | None, finished: bool) -> Parsed:
    """What the text so far says; before the end, without what a later token may change:
    half a tag, an open tool call, or a forced call's JSON (it becomes calls at the end)."""
    if not finished:
        text = stable_prefix(text)
        opened = text.rfind("<tool_call>")
        if opened >= 0 and "</tool_call>" not in text[opened:]:
            text = text[:opened]
    parsed = parse_message(settings, text, chat)
    if not finished and forced_tool_choice(chat) is not None:
        parsed.content = None
    return parsed


def _grown(old: str | None, new: str | None) -> str | None:
    old = old or ""
    if not new or not new.startswith(old) or len(new) == len(old):
        return None
    return new[len(old) :]


async def derender_chat_chunk(request: web.Request, data: dict[str, Any]) -> web.Response:
    body = validate_body(DerenderChatChunk, data)
    engine, name = _start(request, body, "chat")
    state = body.stream_state or StreamState()
    choices: list[dict[str, Any]] = []
    for choice in body.generate_chunk.choices:  # at most one (checked)
        step = partial(_chat_step, engine, body.chat_request, state, choice)
        answer, state = await _run(state, step)
        choices.append(answer)
    return _answer(body, name, "chat.completion.chunk", choices, state)


def _chat_step(
    engine: Engine, chat: dict[str, Any] | None, state: StreamState, choice: StreamChoice
) -> Step:
    """The chunk's delta: what the parsed text says now beyond what it said before."""
    settings = engine.settings
    ids = choice.token_ids or []
    finished = choice.finish_reason is not None
    old = _view(settings, _decode(engine, state.output_token_ids, False), chat, False)
    text = _decode(engine, [*state.output_token_ids, *ids], finished)
    new = _view(settings, text, chat, finished)
    calls: list[dict[str, Any]] = []
    known = list(state.last_tool_call_ids)
    for number, (tool, arguments) in enumerate(new.calls[len(old.calls) :], len(old.calls)):
        call = {"index": number, **call_json(tool, arguments)}
        known.append(call["id"])
        calls.append(call)
    shown = (chat or {}).get("include_reasoning") is not False
    delta = {
        "role": None if state.role_sent else settings.response_role,
        "content": _grown(old.content, new.content),
        "reasoning": _grown(old.reasoning, new.reasoning) if shown else None,
        "tool_calls": calls,
    }
    streamed = state.tools_streamed or bool(calls)
    finish = choice.finish_reason
    if finish is not None and streamed and not named_tool_choice(chat):
        finish = "tool_calls"
    answer = {
        "index": choice.index,
        "delta": delta,
        "logprobs": choice.logprobs,
        "finish_reason": finish,
        "stop_reason": None,
    }
    flags = {"role_sent": True, "tools_streamed": streamed, "last_tool_call_ids": known}
    return answer, _advance(state, ids).model_copy(update=flags)
