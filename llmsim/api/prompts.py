"""Turn API inputs into what the engine needs: prompt token counts and echo text.

Chat prompts are counted on a rendered conversation, the way a chat template turns
messages into one prompt: ``<|role|>\\ncontent\\n`` per message plus the assistant
header that asks the model to answer. So usage grows with every message, including
the role markers, as it does with a real model.
"""

from __future__ import annotations

import json

from llmsim.api.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from llmsim.engine import PromptInput
from llmsim.engine.tokenizer import count_tokens, token_ids

GENERATION_PROMPT = "<|assistant|>\n"


def render_chat(request: ChatCompletionRequest) -> str:
    """Tool definitions go first, as chat templates put them in the system prompt; an
    assistant's tool calls are rendered as JSON after its text."""
    parts = [
        f"<|{message.role}|>\n{message.text}{_calls(message)}\n" for message in request.messages
    ]
    if request.tools and request.tool_choice != "none":
        tools = [tool.model_dump(exclude_none=True) for tool in request.tools]
        parts.insert(0, f"<|tools|>\n{json.dumps(tools)}\n")
    parts.append(GENERATION_PROMPT)
    return "".join(parts)


def _calls(message: ChatMessage) -> str:
    return json.dumps(message.tool_calls) if message.tool_calls else ""


def last_user_text(request: ChatCompletionRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return ""


def chat_prompt(request: ChatCompletionRequest, with_ids: bool = False) -> PromptInput:
    """``with_ids``: also carry the token ids (only the step engine's prefix cache wants them)."""
    return _text_prompt(render_chat(request), last_user_text(request), with_ids)


def completion_prompts(request: CompletionRequest, with_ids: bool = False) -> list[PromptInput]:
    """One input per prompt; token-id prompts count their ids and echo them as text."""
    prompt = request.prompt
    if isinstance(prompt, str):
        return [_text_prompt(prompt, prompt, with_ids)]
    if all(isinstance(item, int) for item in prompt):
        return [_token_id_prompt(prompt, with_ids)]  # type: ignore[arg-type]
    inputs: list[PromptInput] = []
    for item in prompt:
        if isinstance(item, str):
            inputs.append(_text_prompt(item, item, with_ids))
        else:
            inputs.append(_token_id_prompt(item, with_ids))  # type: ignore[arg-type]
    return inputs


def _text_prompt(text: str, echo_text: str, with_ids: bool) -> PromptInput:
    if with_ids:
        ids = token_ids(text)
        return PromptInput(len(ids), echo_text, ids)
    return PromptInput(count_tokens(text), echo_text)


def _token_id_prompt(ids: list[int], with_ids: bool = False) -> PromptInput:
    text = " ".join(str(token_id) for token_id in ids)
    return PromptInput(len(ids), text, list(ids) if with_ids else None)
