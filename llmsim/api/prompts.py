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
from llmsim.engine.tokenizer import count_tokens

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


def chat_prompt(request: ChatCompletionRequest) -> PromptInput:
    return PromptInput(count_tokens(render_chat(request)), last_user_text(request))


def completion_prompts(request: CompletionRequest) -> list[PromptInput]:
    """One input per prompt; token-id prompts count their ids and echo them as text."""
    prompt = request.prompt
    if isinstance(prompt, str):
        return [PromptInput(count_tokens(prompt), prompt)]
    if all(isinstance(item, int) for item in prompt):
        return [_token_id_prompt(prompt)]  # type: ignore[arg-type]
    inputs: list[PromptInput] = []
    for item in prompt:
        if isinstance(item, str):
            inputs.append(PromptInput(count_tokens(item), item))
        else:
            inputs.append(_token_id_prompt(item))  # type: ignore[arg-type]
    return inputs


def _token_id_prompt(ids: list[int]) -> PromptInput:
    return PromptInput(len(ids), " ".join(str(token_id) for token_id in ids))
