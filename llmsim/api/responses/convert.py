"""Translations between the Responses API and chat, as pure functions over JSON shapes.

Request: ``instructions`` + the stored conversation of ``previous_response_id`` + ``input``
(a string or items: messages, ``function_call``, ``function_call_output``) become chat
messages; function tools, ``tool_choice`` and ``text.format`` become their chat forms.
Result: a chat message becomes ``output`` items (a ``message`` with ``output_text``, one
``function_call`` per tool call); a chat stream becomes the Responses event sequence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.openai.adapted import DeltaTranslator, random_hex, sse_event

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def _text_of(content: Any, param: str) -> str:
    """The text of a message's ``content``: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{param}: Input should be a valid string or list", param)
    texts: list[str] = []
    for position, part in enumerate(content):
        where = f"{param}[{position}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise APIError(400, f"{where}: a content part needs a 'type'", where)
        if part["type"] in TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise APIError(400, f"{where}.text: Input should be a valid string", where)
            texts.append(text)
    return "".join(texts)


def input_messages(items: str | list[Any]) -> list[dict[str, Any]]:
    """Chat messages for a Responses ``input``."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for position, item in enumerate(items):
        param = f"input[{position}]"
        if not isinstance(item, dict):
            raise APIError(400, f"{param}: Input should be a valid dictionary", param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in MESSAGE_ROLES:
                raise APIError(
                    400, f"{param}.role: Input should be one of {sorted(MESSAGE_ROLES)}", param
                )
            messages.append({"role": role, "content": _text_of(item.get("content"), param)})
        elif kind == "function_call":
            messages.append(_assistant_call(item, param))
        elif kind == "function_call_output":
            messages.append(_tool_result(item, param))
        elif kind != "reasoning":
            raise APIError(400, f"{param}.type: unsupported input item type {kind!r}", param)
    return _merge_calls(messages)


def _required_str(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise APIError(400, f"{param}.{key}: Field required (a string)", f"{param}.{key}")
    return value


def _assistant_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    call = {
        "id": _required_str(item, "call_id", param),
        "type": "function",
        "function": {
            "name": _required_str(item, "name", param),
            "arguments": _required_str(item, "arguments", param),
        },
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _tool_result(item: dict[str, Any], param: str) -> dict[str, Any]:
    output = item.get("output")
    text = output if isinstance(output, str) else _text_of(output, f"{param}.output")
    return {"role": "tool", "tool_call_id": _required_str(item, "call_id", param), "content": text}


def _merge_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive ``function_call`` items are one assistant turn with several calls."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and message.get("tool_calls")
            and previous.get("tool_calls")
            and previous["content"] is None
        ):
            previous["tool_calls"] = [*previous["tool_calls"], *message["tool_calls"]]
        else:
            merged.append(message)
    return merged


def chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """Responses function tools (``name`` at the top) as chat tools."""
    converted: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        param = f"tools[{position}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise APIError(
                400, f"{param}.type: only function tools are supported, not {kind!r}", param
            )
        function = {"name": _required_str(tool, "name", param)}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        converted.append({"type": "function", "function": function})
    return converted


def chat_tool_choice(choice: Any) -> Any:
    """``{"type": "function", "name": ...}`` becomes chat's nested form; the rest is the same."""
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format`` (None for plain text)."""
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        schema = {
            key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt
        }
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt["type"]}


def usage_block(usage: dict[str, int]) -> dict[str, Any]:
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_part(text: str) -> dict[str, Any]:
    return {"text": text, "type": "reasoning_text"}


def reasoning_item(item_id: str, text: str | None, status: str | None) -> dict[str, Any]:
    """vLLM's reasoning output item: the thought as one ``reasoning_text`` part."""
    return {
        "id": item_id,
        "summary": [],
        "type": "reasoning",
        "content": None if text is None else [reasoning_part(text)],
        "encrypted_content": None,
        "status": status,
    }


def output_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat ``message`` as Responses output items: its thought (with a reasoning parser),
    its text, then one item per call."""
    calls = message.get("tool_calls") or []
    items: list[dict[str, Any]] = []
    if message.get("reasoning"):
        items.append(reasoning_item(f"rs_{random_hex()}", message["reasoning"], None))
    if message.get("content") or not calls:
        items.append(message_item(f"msg_{random_hex()}", message.get("content") or ""))
    for call in calls:
        function = call["function"]
        items.append(
            call_item(f"fc_{random_hex()}", call["id"], function["name"], function["arguments"])
        )
    return items


def status_of(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


@dataclass
class ResponseShell:
    """The fields of a Responses object that echo the request."""

    id: str
    model: str
    request: dict[str, Any]
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, int] | None,
    ) -> dict[str, Any]:
        request = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "model": self.model,
            "status": status,
            "output": output,
            "usage": None if usage is None else usage_block(usage),
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "error": None,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "previous_response_id": request.get("previous_response_id"),
            "temperature": request.get("temperature", 1.0),
            "top_p": request.get("top_p", 1.0),
            "tools": request.get("tools") or [],
            "tool_choice": request.get("tool_choice", "auto"),
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "text": request.get("text") or {"format": {"type": "text"}},
            "truncation": request.get("truncation", "disabled"),
            "metadata": request.get("metadata"),
            "store": request.get("store", True),
            "background": False,
            "reasoning": None,
            "service_tier": "auto",
            "user": request.get("user"),
        }


def response_body(shell: ResponseShell, chat: dict[str, Any]) -> dict[str, Any]:
    """A Responses object for a finished chat completion body."""
    choice = chat["choices"][0]
    return shell.object(
        status_of(choice["finish_reason"]), output_items(choice["message"]), chat["usage"]
    )


class ResponsesStream(DeltaTranslator):
    """The Responses event sequence for one chat stream, numbered from 0."""

    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self.sequence_number = 0
        self.output: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.final: dict[str, Any] | None = None
        """The completed Responses object, once :meth:`closing` ran."""
        self._open: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = dumps({"type": kind, **fields, "sequence_number": self.sequence_number})
        self.sequence_number += 1
        return sse_event(kind, data)

    def opening(self) -> bytes:
        response = self.shell.object("in_progress", [], None)
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def closing(self, usage: dict[str, int]) -> bytes:
        events = [] if self.output or self._open else [self._start_message()]
        events.append(self._close())
        status = status_of(self.finish_reason)
        self.final = self.shell.object(status, self.output, usage)
        events.append(self._event("response.completed", response=self.final))
        return b"".join(events)

    def failure(self, message: str) -> bytes:
        """The Responses API's end of a failed stream: ``error``, then ``response.failed``."""
        error = {"code": "server_error", "message": message}
        events = self._event("error", **error, param=None)
        response = self.shell.object("failed", self.output, None)
        response["error"] = error
        try:
            return events + self._event("response.failed", response=response)
        except Exception:  # the failure may be in what the response echoes: leave that out
            bare = {"id": self.shell.id, "object": "response", "status": "failed", "error": error}
            return events + self._event("response.failed", response=bare)

    # -- items ------------------------------------------------------------------
    def _index(self) -> int:
        return len(self.output)

    def _start_message(self) -> bytes:
        return self._opened(message_item(f"msg_{random_hex()}", None, "in_progress"), text_part(""))

    def _reasoning(self, text: str) -> bytes:
        return self._delta(
            "reasoning", self._start_reasoning, "response.reasoning_text.delta", text
        )

    def _start_reasoning(self) -> bytes:
        item = reasoning_item(f"rs_{random_hex()}", None, "in_progress")
        return self._opened(item, reasoning_part(""))

    def _delta(
        self, kind: str, start_item: Callable[[], bytes], event: str, text: str, **extra: Any
    ) -> bytes:
        """``text`` added to the open item of ``kind`` (closing another, opening one if
        none is open) and its delta event."""
        start = b""
        if self._open is None or self._open["item"]["type"] != kind:
            start = self._close() + start_item()
        assert self._open is not None
        self._open["text"].append(text)
        return start + self._event(
            event,
            item_id=self._open["item"]["id"],
            output_index=self._index(),
            content_index=0,
            delta=text,
            **extra,
        )

    def _opened(self, item: dict[str, Any], part: dict[str, Any]) -> bytes:
        """Open ``item``: its ``output_item.added`` and its first part's ``content_part.added``."""
        self._open = {"item": item, "text": []}
        index = self._index()
        return self._event(
            "response.output_item.added", output_index=index, item=item
        ) + self._event(
            "response.content_part.added",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part=part,
        )

    def _text(self, text: str) -> bytes:
        return self._delta(
            "message", self._start_message, "response.output_text.delta", text, logprobs=[]
        )

    def _call(self, call: dict[str, Any]) -> bytes:
        function = call.get("function") or {}
        start = b""
        if call.get("id"):
            start = self._close()
            item = call_item(
                f"fc_{random_hex()}", call["id"], function.get("name") or "", "", "in_progress"
            )
            self._open = {"item": item, "text": []}
            start += self._event(
                "response.output_item.added", output_index=self._index(), item=item
            )
        arguments = function.get("arguments")
        if not arguments or self._open is None or self._open["item"]["type"] != "function_call":
            return start
        self._open["text"].append(arguments)
        return start + self._event(
            "response.function_call_arguments.delta",
            item_id=self._open["item"]["id"],
            output_index=self._index(),
            delta=arguments,
        )

    def _close(self) -> bytes:
        """End the open item (its ``done`` events) and add it to the output."""
        if self._open is None:
            return b""
        item, text = self._open["item"], "".join(self._open["text"])
        self._open = None
        index = self._index()
        events: list[bytes] = []
        if item["type"] == "message":
            done = message_item(item["id"], text)
            events += [
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=text_part(text),
                ),
            ]
        elif item["type"] == "reasoning":
            done = reasoning_item(item["id"], text, "completed")
            events += [
                self._event(
                    "response.reasoning_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=reasoning_part(text),
                ),
            ]
        else:
            done = {**item, "arguments": text, "status": "completed"}
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=text,
                )
            )
        events.append(self._event("response.output_item.done", output_index=index, item=done))
        self.output.append(done)
        return b"".join(events)
