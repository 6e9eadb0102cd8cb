"""Translations between the Anthropic Messages API and chat, as pure functions.

Request: ``system`` (and any ``system`` messages) becomes one system message; text blocks
become content, ``tool_use`` blocks an assistant's ``tool_calls``, ``tool_result`` blocks
``tool`` messages; tools and ``tool_choice`` take their chat forms. Result: the chat
message becomes ``text`` and ``tool_use`` blocks, ``finish_reason`` a ``stop_reason``; a
chat stream becomes Anthropic's event sequence.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmsim.api.http.jsonio import dumps
from llmsim.api.openai.adapted import DeltaTranslator, sse_event
from llmsim.api.openai.schemas import INT64_MAX, INTEGRAL, MAX_STOP_STRINGS

_STRICT = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class ContentBlock(BaseModel):
    model_config = _STRICT

    type: Literal[
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "tool_reference",
        "thinking",
        "redacted_thinking",
    ]
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[dict[str, Any]] | None = None
    thinking: str | None = None

    @model_validator(mode="after")
    def _required_fields(self) -> ContentBlock:
        needs = {"text": ("text",), "tool_use": ("id", "name"), "tool_result": ("tool_use_id",)}
        for key in needs.get(self.type, ()):
            if getattr(self, key) is None:
                raise ValueError(f"a {self.type} block needs a '{key}' field")
        return self


class Message(BaseModel):
    model_config = _STRICT

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(min_length=1)]
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    model_config = _STRICT

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice.name is required when type is 'tool'")
        return self


class CountTokensRequest(BaseModel):
    model_config = _STRICT

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[ContentBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: Annotated[int, Field(ge=1, le=INT64_MAX), INTEGRAL]
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream: bool | None = False
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: Annotated[int, Field(ge=-1, le=INT64_MAX), INTEGRAL] | None = None
    metadata: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


def _block_texts(blocks: str | list[ContentBlock]) -> list[str]:
    if isinstance(blocks, str):
        return [blocks]
    return [block.text for block in blocks if block.type == "text" and block.text]


def _tool_result_text(block: ContentBlock) -> str:
    if isinstance(block.content, str):
        return block.content
    parts = block.content or []
    return "\n".join(str(part.get("text", "")) for part in parts if part.get("type") == "text")


def _message(message: Message) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages (tool results become ``tool`` messages first)."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    results: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text" and block.text:
            texts.append(block.text)
        elif block.type == "tool_use":
            arguments = dumps(block.input or {}).decode()
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": arguments},
                }
            )
        elif block.type == "tool_result":
            if message.role == "user":
                results.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.tool_use_id,
                        "content": _tool_result_text(block),
                    }
                )
            else:
                texts.append(f"Tool result: {_tool_result_text(block)}")
    chat: dict[str, Any] = {"role": message.role, "content": "".join(texts) if texts else None}
    if calls:
        chat["tool_calls"] = calls
    if chat["content"] is None and not calls:
        return results
    return [*results, chat]


def chat_messages(request: CountTokensRequest) -> list[dict[str, Any]]:
    """The conversation as chat messages: one system message first, then the turns."""
    system = _block_texts(request.system) if request.system is not None else []
    for message in request.messages:
        if message.role == "system":
            system.extend(_block_texts(message.content))
    messages = [{"role": "system", "content": "".join(system)}] if system else []
    for message in request.messages:
        if message.role != "system":
            messages.extend(_message(message))
    return messages


def chat_tools(request: CountTokensRequest) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` in chat's form (``auto`` when tools come without one)."""
    if not request.tools:
        return {}
    tools = [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                **({"description": tool.description} if tool.description is not None else {}),
                "parameters": {"type": "object", **tool.input_schema},
            },
        }
        for tool in request.tools
    ]
    choice: Any = "auto"
    if request.tool_choice is not None:
        kind = request.tool_choice.type
        choice = {"auto": "auto", "any": "required", "none": "none"}.get(kind) or {
            "type": "function",
            "function": {"name": request.tool_choice.name},
        }
    return {"tools": tools, "tool_choice": choice}


def chat_body(request: MessagesRequest) -> dict[str, Any]:
    chat: dict[str, Any] = {
        "model": request.model,
        "messages": chat_messages(request),
        "max_tokens": request.max_tokens,
        "stop": request.stop_sequences,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stream": bool(request.stream),
        **chat_tools(request),
        "response_format": output_format(request.output_config),
    }
    return {key: value for key, value in chat.items() if value is not None}


def output_format(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """``output_config.format`` (a JSON schema) as chat's ``response_format``, as vLLM maps it."""
    fmt = (config or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("schema") is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": "json_schema", "schema": fmt["schema"]}}


def stop_fields(
    finish_reason: str | None, stop_reason: Any, stop_sequences: list[str], called: bool = False
) -> tuple[str, str | None]:
    """``stop_reason`` and ``stop_sequence`` for a chat ``finish_reason``/``stop_reason``.

    An answer that ``called`` a tool says ``tool_use`` even when chat says ``stop`` (as it
    does for a named ``tool_choice``): agent loops look for ``tool_use`` to run the tools.
    """
    if finish_reason == "length":
        return "max_tokens", None
    if finish_reason == "tool_calls" or called:
        return "tool_use", None
    if isinstance(stop_reason, str) and stop_reason in stop_sequences:
        return "stop_sequence", stop_reason
    return "end_turn", None


def tool_input(arguments: str) -> dict[str, Any]:
    """The ``input`` object of a ``tool_use`` block; arguments cut short give ``{}``."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The thought (a reasoning parser's, as vLLM: a signed ``thinking`` block), the text,
    then one ``tool_use`` block per call."""
    blocks: list[dict[str, Any]] = []
    if message.get("reasoning"):
        blocks.append(
            {"type": "thinking", "thinking": message["reasoning"], "signature": uuid.uuid4().hex}
        )
    if message.get("content"):
        blocks.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call["function"]
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": tool_input(function["arguments"]),
            }
        )
    return blocks


def message_body(chat: dict[str, Any], model: str, stop_sequences: list[str]) -> dict[str, Any]:
    """An Anthropic message for a finished chat completion body."""
    choice = chat["choices"][0]
    called = bool(choice["message"].get("tool_calls"))
    reason, sequence = stop_fields(
        choice["finish_reason"], choice.get("stop_reason"), stop_sequences, called
    )
    return {
        "id": chat["id"],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(choice["message"]),
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {
            "input_tokens": chat["usage"]["prompt_tokens"],
            "output_tokens": chat["usage"]["completion_tokens"],
        },
    }


class MessagesStream(DeltaTranslator):
    """Anthropic's event sequence for one chat stream."""

    def __init__(
        self, message_id: str, model: str, prompt_tokens: int, stop_sequences: list[str]
    ) -> None:
        self.message_id = message_id
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.stop_sequences = stop_sequences
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self._index = 0
        self._open: str | None = None
        """The type of the open content block, if one is open."""
        self._called = False

    @staticmethod
    def _event(kind: str, **fields: Any) -> bytes:
        return sse_event(kind, dumps({"type": kind, **fields}))

    def failure(self, message: str) -> bytes:
        """Anthropic's end of a failed stream: one ``error`` event."""
        return self._event("error", error={"type": "api_error", "message": message})

    def opening(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
        }
        return self._event("message_start", message=message)

    def _finished(self, choice: dict[str, Any]) -> None:
        self.finish_reason = choice["finish_reason"]
        self.stop_reason = choice.get("stop_reason")

    def closing(self, usage: dict[str, int]) -> bytes:
        reason, sequence = stop_fields(
            self.finish_reason, self.stop_reason, self.stop_sequences, self._called
        )
        return (
            self._stop_block()
            + self._event(
                "message_delta",
                delta={"stop_reason": reason, "stop_sequence": sequence},
                usage={
                    "input_tokens": usage["prompt_tokens"],
                    "output_tokens": usage["completion_tokens"],
                },
            )
            + self._event("message_stop")
        )

    def _start_block(self, block: dict[str, Any]) -> bytes:
        start = self._stop_block()
        self._open = block["type"]
        return start + self._event("content_block_start", index=self._index, content_block=block)

    def _stop_block(self) -> bytes:
        if self._open is None:
            return b""
        event = b""
        if self._open == "thinking":  # vLLM signs a thought as its block ends
            signature = {"type": "signature_delta", "signature": uuid.uuid4().hex}
            event = self._event("content_block_delta", index=self._index, delta=signature)
        self._open = None
        event += self._event("content_block_stop", index=self._index)
        self._index += 1
        return event

    def _reasoning(self, text: str) -> bytes:
        start = b""
        if self._open != "thinking":
            start = self._start_block({"type": "thinking", "thinking": ""})
        delta = {"type": "thinking_delta", "thinking": text}
        return start + self._event("content_block_delta", index=self._index, delta=delta)

    def _text(self, text: str) -> bytes:
        start = b"" if self._open == "text" else self._start_block({"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return start + self._event("content_block_delta", index=self._index, delta=delta)

    def _call(self, call: dict[str, Any]) -> bytes:
        function = call.get("function") or {}
        start = b""
        if call.get("id"):
            block = {
                "type": "tool_use",
                "id": call["id"],
                "name": function.get("name") or "",
                "input": {},
            }
            start = self._start_block(block)
            self._called = True
        arguments = function.get("arguments")
        if not arguments or self._open != "tool_use":
            return start
        delta = {"type": "input_json_delta", "partial_json": arguments}
        return start + self._event("content_block_delta", index=self._index, delta=delta)
