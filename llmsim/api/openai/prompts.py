"""Turn API inputs into what the engine needs: prompt token counts and echo text.

Every count comes from the engine's tokenizer. Chat prompts are counted on the rendered
conversation: the tokenizer's chat template when it has one, else the built-in format
``<|role|>\\ncontent\\n`` per message plus the assistant header, so usage grows with
every message, including the role markers, as it does with a real model. Rendering stays
here, as OpenAI's messages are shaped; completion prompts are counted by
:mod:`llmsim.service.prompts` (with the model's special tokens, a BOS say, as vLLM does),
as gRPC's are.
"""

from __future__ import annotations

import json
from typing import Any

from llmsim.api.http.errors import APIError
from llmsim.api.openai.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from llmsim.engine import PromptInput
from llmsim.engine.tokenizer import GENERATION_PROMPT, BuiltinTokenizer, Tokenizer
from llmsim.service.prompts import check_vocabulary, text_prompt, token_prompt
from llmsim.settings.model import Settings

__all__ = [
    "GENERATION_PROMPT",
    "apply_server_options",
    "chat_prompt",
    "check_request_template",
    "check_vocabulary",
    "completion_prompts",
    "render_chat",
]


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as a chat template sees them: role, text content, and any other fields."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item = dict(message.model_extra or {})
        item["role"] = message.role
        item["content"] = message.text
        for key in ("name", "tool_calls", "tool_call_id"):
            value = getattr(message, key)
            if value is not None:
                item[key] = value
        out.append(item)
    return out


def render_messages(
    tokenizer: Tokenizer,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    extra: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text of a conversation; a failing template is the client's 400.

    The built-in format puts tool definitions first, as chat templates put them in the
    system prompt, and an assistant's tool calls as JSON after its text; a template gets
    them as ``tools`` and each message's ``tool_calls``.
    """
    if isinstance(tokenizer, BuiltinTokenizer) and tokenizer.template is None:
        # the built-in format, without building dicts (hot path)
        parts = [
            f"<|{message.role}|>\n{message.text}{_calls(message) if message.tool_calls else ''}\n"
            for message in messages
        ]
        if tools:
            parts.insert(0, f"<|tools|>\n{json.dumps(tools)}\n")
        if add_generation_prompt:
            parts.append(GENERATION_PROMPT)
        return "".join(parts)
    variables = dict(extra or {})
    if tools:
        variables.setdefault("tools", tools)
    try:
        return tokenizer.render_chat(message_dicts(messages), add_generation_prompt, **variables)
    except ValueError as exc:
        raise APIError(400, str(exc), "messages") from None


def render_chat(request: ChatCompletionRequest, tokenizer: Tokenizer) -> str:
    extras = request.__pydantic_extra__  # the attribute: ``model_extra`` is a property
    tools = None
    if request.tools and (offered := request.prompt_tools):
        tools = [tool.model_dump(exclude_none=True) for tool in offered]
    if not extras:  # the usual request: nothing for the template beyond the messages
        return render_messages(tokenizer, request.messages, True, None, tools)
    add_generation_prompt = extras.get("add_generation_prompt", True)
    kwargs = extras.get("chat_template_kwargs")
    return render_messages(
        tokenizer,
        request.messages,
        add_generation_prompt if isinstance(add_generation_prompt, bool) else True,
        kwargs if isinstance(kwargs, dict) else None,
        tools,
    )


UNTRUSTED_TEMPLATE = (
    "Chat template is passed with request, but --trust-request-chat-template is not set. "
    "Refused request with untrusted chat template."
)


def check_request_template(settings: Settings, template: object, kwargs: object) -> None:
    """vLLM's renderer refuses a chat template a request brings (``chat_template``, or
    ``chat_template_kwargs.chat_template``) unless the server trusts such templates."""
    if settings.trust_request_chat_template:
        return
    if template is not None or (
        isinstance(kwargs, dict) and kwargs.get("chat_template") is not None
    ):
        raise APIError(400, UNTRUSTED_TEMPLATE)


def apply_server_options(request: ChatCompletionRequest, settings: Settings) -> None:
    """The server's chat options, applied once as a chat request enters, as vLLM's renderer
    applies them: a template the request brings refused unless trusted,
    ``--default-chat-template-kwargs`` under the request's own keys (the template and the
    reasoning parser see the merge), and whether unused tools are rendered."""
    asked = request.__pydantic_extra__
    if asked:
        check_request_template(
            settings, asked.get("chat_template"), asked.get("chat_template_kwargs")
        )
    if request.reasoning_effort is not None:
        _hand_over_effort(request, request.reasoning_effort, settings.reasoning_effort_map)
    defaults = settings.default_chat_template_kwargs
    if defaults is not None:
        extras = request.__pydantic_extra__
        if extras is None:
            extras = request.__pydantic_extra__ = {}
        extras["chat_template_kwargs"] = template_kwargs(
            extras.get("chat_template_kwargs"), defaults
        )
    if settings.exclude_tools_when_tool_choice_none:
        request.hide_unused_tools()


def _hand_over_effort(
    request: ChatCompletionRequest, effort: str, effort_map: dict[str, str] | None
) -> None:
    """As vLLM's renderer: the template gets the effort (rewritten by
    ``--reasoning-effort-map``) as ``reasoning_effort``, and ``enable_thinking`` unless the
    request set it: on for any effort but ``none``."""
    effort = effort_map.get(effort, effort) if effort_map else effort
    extras = request.__pydantic_extra__
    if extras is None:
        extras = request.__pydantic_extra__ = {}
    own = extras.get("chat_template_kwargs")
    kwargs = {**own} if isinstance(own, dict) else {}
    if "enable_thinking" not in kwargs:
        kwargs["enable_thinking"] = effort != "none"
    kwargs["reasoning_effort"] = effort
    extras["chat_template_kwargs"] = kwargs


def template_kwargs(asked: object, defaults: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's chat template kwargs over the server's defaults (the request's keys win)."""
    if not isinstance(asked, dict):
        return None if defaults is None else {**defaults}
    return asked if defaults is None else defaults | asked


def _calls(message: ChatMessage) -> str:
    return json.dumps(message.tool_calls) if message.tool_calls else ""


def last_user_text(request: ChatCompletionRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return ""


def chat_prompt(
    request: ChatCompletionRequest, tokenizer: Tokenizer, with_ids: bool = False
) -> PromptInput:
    """``with_ids``: also carry the token ids (only the step engine's prefix cache wants them)."""
    text = render_chat(request, tokenizer)
    if with_ids:
        ids = tokenizer.encode(text, False)
        return PromptInput(len(ids), last_user_text(request), ids)
    return PromptInput(tokenizer.count(text, False), last_user_text(request))


def completion_prompts(
    request: CompletionRequest, tokenizer: Tokenizer, with_ids: bool = False
) -> list[PromptInput]:
    """One input per prompt, counted by :mod:`llmsim.service.prompts` as every door counts
    them: text with the model's special tokens, token ids as given (echoing their text)."""
    prompt = request.prompt
    if isinstance(prompt, str):
        return [text_prompt(prompt, tokenizer, with_ids, allow_empty=True)]
    if all(isinstance(item, int) for item in prompt):
        return [token_prompt(prompt, tokenizer, with_ids)]  # type: ignore[arg-type]
    inputs: list[PromptInput] = []
    for item in prompt:
        if isinstance(item, str):
            inputs.append(text_prompt(item, tokenizer, with_ids, allow_empty=True))
        else:
            inputs.append(token_prompt(item, tokenizer, with_ids))  # type: ignore[arg-type]
    return inputs
