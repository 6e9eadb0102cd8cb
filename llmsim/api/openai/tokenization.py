"""``POST /tokenize`` and ``POST /detokenize`` with vLLM's bodies and errors.

``/tokenize`` takes a ``prompt`` (counted like a completions prompt, with the model's
special tokens by default) or ``messages`` (rendered like a chat request), so its
``count`` equals the ``usage.prompt_tokens`` of the same prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from aiohttp import web
from pydantic import ConfigDict, Field, ValidationError, model_validator

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import ENGINE
from llmsim.api.http.requests import error_param, is_large, read_json_object, telling_error
from llmsim.api.openai.prompts import check_request_template, render_messages, template_kwargs
from llmsim.api.openai.schemas import INTEGRAL, ChatMessage, _Body
from llmsim.api.openai.structured_fields import ChatTool
from llmsim.engine import Engine, UnknownModelError
from llmsim.engine.tokenizer import Tokenizer, TokenizerError

TokenId = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), INTEGRAL]


class TokenizeCompletionRequest(_Body):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"continue_final_message": {"const": True}},
                "required": ["continue_final_message"],
            },
            "then": {
                "properties": {"add_generation_prompt": {"const": False}},
                "required": ["add_generation_prompt"],
            },
        }
    )

    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool | None = False
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[ChatTool] | None = None

    @model_validator(mode="after")
    def _one_ending(self) -> TokenizeChatRequest:
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        return self


class DetokenizeRequest(_Body):
    model: str | None = None
    tokens: list[TokenId]


def check_model(engine: Engine, model: str | None) -> None:
    """404 in vLLM's words for a model the server does not serve (empty: the default)."""
    try:
        engine.resolve(model)
    except UnknownModelError as exc:
        raise APIError(404, f"The model `{exc.name}` does not exist.", "model") from None


def validate(model: type[_Body], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = telling_error(exc.errors(include_url=False))
        param = error_param(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise APIError(400, f"{param}: {message}" if param else message, param) from None


async def tokenize(request: web.Request) -> web.Response:
    data = await read_json_object(request)
    engine = request.app[ENGINE]
    tokenizer = engine.tokenizer
    body: TokenizeChatRequest | TokenizeCompletionRequest
    if "messages" in data:
        chat: TokenizeChatRequest = validate(TokenizeChatRequest, data)
        check_model(engine, chat.model)
        check_request_template(
            engine.settings, data.get("chat_template"), chat.chat_template_kwargs
        )
        tools = [tool.model_dump(exclude_none=True) for tool in chat.tools or ()]
        text = render_messages(
            tokenizer,
            chat.messages,
            chat.add_generation_prompt,
            template_kwargs(
                chat.chat_template_kwargs, engine.settings.default_chat_template_kwargs
            ),
            tools or None,
        )
        body = chat
    else:
        plain: TokenizeCompletionRequest = validate(TokenizeCompletionRequest, data)
        check_model(engine, plain.model)
        text, body = plain.prompt, plain
    make = _tokenized(tokenizer, text, body, engine.settings.max_model_len)
    # Megabytes of text are tokenized in a worker thread, a slice at a time.
    answer = await asyncio.to_thread(make) if is_large(request) else make()
    return web.Response(body=dumps(answer), content_type="application/json")


def _tokenized(
    tokenizer: Tokenizer,
    text: str,
    body: TokenizeChatRequest | TokenizeCompletionRequest,
    max_model_len: int,
) -> Callable[[], dict[str, Any]]:
    def answer() -> dict[str, Any]:
        tokens = tokenizer.encode(text, body.add_special_tokens)
        return {
            "count": len(tokens),
            "max_model_len": max_model_len,
            "tokens": tokens,
            "token_strs": tokenizer.token_strs(tokens) if body.return_token_strs else None,
        }

    return answer


async def detokenize(request: web.Request) -> web.Response:
    body: DetokenizeRequest = validate(DetokenizeRequest, await read_json_object(request))
    engine = request.app[ENGINE]
    check_model(engine, body.model)
    try:
        text = engine.tokenizer.decode(body.tokens)
    except TokenizerError as exc:
        raise APIError(400, str(exc).capitalize() + ".", "tokens") from None
    return web.Response(body=dumps({"prompt": text}), content_type="application/json")


async def tokenizer_info(request: web.Request) -> web.Response:
    """vLLM's ``GET /tokenizer_info`` (``--enable-tokenizer-info-endpoint``)."""
    info = request.app[ENGINE].tokenizer.info()
    return web.Response(body=dumps(info), content_type="application/json")
