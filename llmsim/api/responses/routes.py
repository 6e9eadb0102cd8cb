"""``POST /v1/responses`` and ``GET /v1/responses/{id}``: the Responses API over chat.

The request is translated into a chat request and runs through the chat pipeline; the
answer comes back as a Responses object or event stream. Stored responses (``store``,
true by default) are kept in memory, bounded in count and bytes (:mod:`response_store`), so
``GET`` and ``previous_response_id`` work for as long as a client is likely to need them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import ENGINE
from llmsim.api.http.requests import OFF_LOOP_BYTES, read_json_object, validate_body
from llmsim.api.http.sse import ResponseMeta
from llmsim.api.openai.adapted import Exchange, chat_request, renamer
from llmsim.api.openai.inference import generate
from llmsim.api.openai.render import rendered_chat
from llmsim.api.openai.schemas import INT64_MAX, INTEGRAL, Int64
from llmsim.api.responses.convert import (
    ResponseShell,
    ResponsesStream,
    chat_tool_choice,
    chat_tools,
    input_messages,
    response_body,
    response_format,
)
from llmsim.api.responses.store import MissingResponse, ResponseStore, stored_response
from llmsim.settings.parsers import ReasoningEffort

METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512
"""OpenAI's limits on ``metadata``: 16 pairs, keys up to 64 characters, values up to 512."""


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """``metadata`` within OpenAI's limits, or a ValueError saying which one it breaks."""
    if len(metadata) > METADATA_MAX_PAIRS:
        raise ValueError(f"at most {METADATA_MAX_PAIRS} key-value pairs, got {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > METADATA_MAX_KEY:
            raise ValueError(f"keys are at most {METADATA_MAX_KEY} characters, got {len(key)}")
        if len(value) > METADATA_MAX_VALUE:
            raise ValueError(
                f"value of {key!r} is {len(value)} characters; at most {METADATA_MAX_VALUE}"
            )
    return metadata


class Reasoning(BaseModel):
    """``reasoning``: its ``effort`` reaches the chat template as chat's ``reasoning_effort``."""

    model_config = ConfigDict(extra="allow", strict=True)

    effort: ReasoningEffort | None = None


class ResponsesRequest(BaseModel):
    """The fields of a Responses request that change the answer; others are echoed or ignored."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=INT64_MAX), INTEGRAL] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: dict[str, Any] | None = None
    stream: bool | None = False
    store: bool | None = True
    previous_response_id: str | None = None
    seed: Int64 | None = None
    user: str | None = None
    metadata: Annotated[dict[str, str], AfterValidator(check_metadata)] | None = None
    reasoning: Reasoning | None = None
    priority: Int64 = 0


RESPONSE_STORE = web.AppKey("response_store", ResponseStore)


def answer_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant chat message for a response's ``output`` items."""
    text = "".join(
        part["text"] for item in output if item["type"] == "message" for part in item["content"]
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item["type"] == "function_call"
    ]
    answer: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        answer["tool_calls"] = calls
    elif not text:
        answer["content"] = ""
    return answer


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", "response_id")


def _chat_body(body: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    chat: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "max_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "stream": bool(body.stream),
    }
    if body.tools:
        chat["tools"] = chat_tools(body.tools)
        chat["tool_choice"] = chat_tool_choice(body.tool_choice)
        chat["parallel_tool_calls"] = body.parallel_tool_calls
    fmt = response_format(body.text)
    if fmt is not None:
        chat["response_format"] = fmt
    if body.priority:
        chat["priority"] = body.priority
    if body.reasoning is not None and body.reasoning.effort is not None:
        chat["reasoning_effort"] = body.reasoning.effort
    kwargs = (body.__pydantic_extra__ or {}).get("chat_template_kwargs")
    if isinstance(kwargs, dict):  # the template and the reasoning parser read them, as vLLM's
        chat["chat_template_kwargs"] = kwargs
    return {key: value for key, value in chat.items() if value is not None}


async def render_response(request: web.Request) -> web.Response:
    """``POST /v1/responses/render``: the ``GenerateRequest`` the Responses request renders
    to, through its chat translation, as vLLM's stateless render route (no stored history:
    ``previous_response_id`` is refused in vLLM's words)."""
    body = validate_body(ResponsesRequest, await read_json_object(request))
    if body.previous_response_id is not None:
        raise APIError(
            400,
            "previous_response_id is not supported by the stateless render endpoint.",
            "previous_response_id",
            type="invalid_request_error",
        )
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    messages = [*system, *input_messages(body.input)]
    if not messages:
        raise APIError(400, "input: List should have at least 1 item", "input")
    chat = chat_request(_chat_body(body, messages))
    rendered = await rendered_chat(request.app[ENGINE], chat, prefix="resp_")
    return web.Response(body=dumps(rendered), content_type="application/json")


async def create_response(request: web.Request) -> web.StreamResponse:
    arrival = time.monotonic()  # the latency metrics count the body's parsing too
    raw = await read_json_object(request)
    body = validate_body(ResponsesRequest, raw)
    store = request.app[RESPONSE_STORE]
    parent = body.previous_response_id
    history: list[dict[str, Any]] = []
    stored_bytes = 0
    if parent is not None:
        try:
            history, stored_bytes = store.sized_conversation(parent)
        except MissingResponse as exc:
            raise _not_found(exc.response_id) from None
    long_chain = stored_bytes > OFF_LOOP_BYTES  # read, validated and counted off the loop
    turn = input_messages(body.input)
    conversation = [*history, *turn]
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    if not system and not conversation:
        raise APIError(400, "input: List should have at least 1 item", "input")
    make_chat = partial(chat_request, _chat_body(body, [*system, *conversation]))
    chat = await asyncio.to_thread(make_chat) if long_chain else make_chat()
    echo = {key: value for key, value in raw.items() if key not in ("input", "stream")}
    keep = body.store is not False

    def remember(response: dict[str, Any]) -> None:
        if keep:
            answer = answer_message(response["output"])
            store.put(response["id"], stored_response(response, [*turn, answer], parent))

    def render(chat_body: dict[str, Any], meta: ResponseMeta) -> dict[str, Any]:
        response = response_body(ResponseShell(meta.id, meta.model, echo, meta.created), chat_body)
        remember(response)
        return response

    def translator(meta: ResponseMeta) -> StoringStream:
        return StoringStream(ResponseShell(meta.id, meta.model, echo, meta.created), remember)

    exchange = Exchange("resp_", "response")
    rename = renamer("text.format", "tools[{index}].parameters")
    flavor = exchange.flavor(render, translator, "input", "responses", rename)
    if long_chain:  # the conversation's prompt is counted in a worker thread, once
        engine = request.app[ENGINE]
        count = partial(flavor.prompts, chat, engine.tokenizer, engine.needs_token_ids)
        prompts = await asyncio.to_thread(count)
        flavor = replace(flavor, prompts=lambda *_: prompts)
        del count
    answering = generate(request, flavor, chat, arrival=arrival)
    # An open stream keeps none of these (generate lets go of the chat request); the
    # conversation can be long.
    del raw, body, history, conversation, system, make_chat, chat
    return await answering


class StoringStream(ResponsesStream):
    """The Responses event stream that stores the final response when it completes."""

    def __init__(self, shell: ResponseShell, remember: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(shell)
        self._remember = remember

    def closing(self, usage: dict[str, int]) -> bytes:
        events = super().closing(usage)
        assert self.final is not None
        self._remember(self.final)
        return events


async def retrieve_response(request: web.Request) -> web.StreamResponse:
    response_id = request.match_info["response_id"]
    if not response_id.startswith("resp"):
        raise APIError(
            400,
            f"Invalid 'response_id': '{response_id}'. Expected an ID that begins with 'resp'.",
            "response_id",
        )
    stored = request.app[RESPONSE_STORE].get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return web.Response(body=dumps(stored.body), content_type="application/json")
