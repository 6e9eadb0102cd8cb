"""Ask the answer sources (rules, datasets, replays) about a request before it is submitted.

Builds the neutral :class:`~llmsim.answers.RequestView` from a parsed chat or completions
body; :mod:`llmsim.service.answers` asks the sources and turns their choice into the
answer and its overrides, or an error, as it does for every door.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from llmsim.answers import RequestView, Responder
from llmsim.answers.recording import KEY_FIELDS, prompt_messages
from llmsim.answers.view import Api, Endpoint
from llmsim.api.openai.prompts import last_user_text
from llmsim.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from llmsim.engine import Target
from llmsim.service import answers
from llmsim.service.answers import Chosen

__all__ = ["Chosen", "choose", "offered_tools", "request_view"]


async def choose(
    responder: Responder,
    body: ChatCompletionRequest | CompletionRequest,
    target: Target,
    mode: str,
    api: Api | None = None,
) -> Chosen:
    """What the engine should say for ``body``; raises the error a rule chose (a
    :class:`~llmsim.service.errors.ServiceError`, answered in vLLM's shape by the guard).

    ``api`` is the API the client called when it is not ``body``'s own (Responses, Messages).
    """
    limit = body.output_limit
    if not responder.active:
        return Chosen(None, limit, None)
    return await answers.choose(responder, request_view(body, target, api), mode, limit)


def request_view(
    body: ChatCompletionRequest | CompletionRequest, target: Target, api: Api | None = None
) -> RequestView:
    """The parts of ``body`` the answer sources look at."""
    sent = body.model_fields_set | set(body.model_extra or ())
    sampling = {name: _plain(getattr(body, name, None)) for name in KEY_FIELDS if name in sent}
    common: dict[str, Any] = {
        "model": target.name,
        "adapter": target.adapter,
        "max_tokens": body.output_limit,
        "seed": body.seed,
        "sampling": sampling,
    }
    if isinstance(body, ChatCompletionRequest):
        messages = tuple((message.role, message.text) for message in body.messages)
        system = "\n".join(text for role, text in messages if role in ("system", "developer"))
        endpoint: Endpoint = "chat"
        return RequestView(
            endpoint,
            text=last_user_text(body),
            system=system,
            messages=messages,
            tools=offered_tools(body),
            api=api,
            **common,
        )
    prompts = prompt_messages(body.prompt)
    endpoint = "completions"
    return RequestView(endpoint, text=prompts[0][1], messages=prompts, **common)


def offered_tools(body: ChatCompletionRequest) -> dict[str, Mapping[str, Any]] | None:
    """Each offered function's name and parameter schema; None when no tools are offered."""
    raw = _plain(getattr(body, "tools", None))
    if not isinstance(raw, list) or not raw:
        return None
    tools: dict[str, Mapping[str, Any]] = {}
    for item in raw:
        function = item.get("function") if isinstance(item, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            tools[function["name"]] = parameters if isinstance(parameters, dict) else {}
    return tools


def _plain(value: Any) -> Any:
    """Pydantic models (typed tool definitions) as plain data."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
