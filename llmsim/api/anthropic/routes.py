"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic Messages API.

Like vLLM, the request is translated into a chat request that runs through the chat
pipeline, and the answer is translated back; errors on these routes come in Anthropic's
shape (``guard`` picks it by path).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llmsim.api.anthropic.convert import (
    CountTokensRequest,
    MessagesRequest,
    MessagesStream,
    chat_messages,
    chat_tools,
    message_body,
)
from llmsim.api.anthropic.convert import chat_body as messages_chat_body
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import ENGINE
from llmsim.api.http.requests import read_json_object, validate_body
from llmsim.api.http.sse import ResponseMeta
from llmsim.api.openai.adapted import Exchange, chat_request, renamer
from llmsim.api.openai.inference import generate
from llmsim.api.openai.prompts import apply_server_options, chat_prompt
from llmsim.api.openai.render import rendered_chat


async def create_message(request: web.Request) -> web.StreamResponse:
    arrival = time.monotonic()  # the latency metrics count the body's parsing too
    body = validate_body(MessagesRequest, await read_json_object(request))
    chat = chat_request(messages_chat_body(body))
    stop_sequences = list(body.stop_sequences or ())
    exchange = Exchange("chatcmpl-", "message")

    def render(chat_body: dict[str, Any], meta: ResponseMeta) -> dict[str, Any]:
        return message_body(chat_body, meta.model, stop_sequences)

    def translator(meta: ResponseMeta) -> MessagesStream:
        return MessagesStream(meta.id, meta.model, exchange.prompt_tokens, stop_sequences)

    rename = renamer("output_config.format", "tools[{index}].input_schema")
    flavor = exchange.flavor(render, translator, rename_param=rename)
    answering = generate(request, flavor, chat, arrival=arrival)
    del body, chat  # an open stream keeps neither (generate lets go of the chat request)
    return await answering


async def render_message(request: web.Request) -> web.Response:
    """``POST /v1/messages/render``: the ``GenerateRequest`` the Messages request renders to,
    its chat translation rendered as ``/v1/chat/completions/render`` renders it (vLLM's
    errors here are OpenAI's shape: ``shaped_error_response`` leaves this path alone)."""
    body = validate_body(MessagesRequest, await read_json_object(request))
    rendered = await rendered_chat(request.app[ENGINE], chat_request(messages_chat_body(body)))
    return web.Response(body=dumps(rendered), content_type="application/json")


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """The prompt's token count, counted as a generation request would count it."""
    body = validate_body(CountTokensRequest, await read_json_object(request))
    chat = chat_request({"model": body.model, "messages": chat_messages(body), **chat_tools(body)})
    engine = request.app[ENGINE]
    apply_server_options(chat, engine.settings)
    tokens = chat_prompt(chat, engine.tokenizer).token_count
    answer = {"input_tokens": tokens, "context_management": {"original_input_tokens": tokens}}
    return web.Response(body=dumps(answer), content_type="application/json")
