"""Derender's parsers: generated text back into a chat message's reasoning, content and calls.

vLLM's derender runs the server's ``--reasoning-parser`` and ``--tool-call-parser`` over
the decoded text, as its chat endpoint does over a model's output. llmsim's models write
one markup whatever the parser is named (:mod:`llmsim.api.openai.rendered`): a thought in
``<think>…</think>`` (an open ``<think>`` is a thought cut short; text without the tags is
content, as Qwen3's parser reads it) and Hermes' ``<tool_call>{"name", "arguments"}
</tool_call>`` blocks (text that does not parse stays content, as vLLM leaves it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmsim.api.http.jsonio import JSONInputError, loads_bounded
from llmsim.api.openai.chat import tool_call_id
from llmsim.api.openai.rendered import CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN
from llmsim.settings.model import Settings

MARKERS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN.strip(), CALL_CLOSE.strip())


@dataclass(slots=True)
class Parsed:
    """A message's parts; ``calls`` are ``(name, arguments JSON text)``."""

    reasoning: str | None
    content: str | None
    calls: list[tuple[str, str]] = field(default_factory=list)


def split_reasoning(text: str) -> tuple[str | None, str | None]:
    """``(thought, the rest)``; the rest is None when the thought never ended."""
    if THINK_CLOSE in text:
        thought, rest = text.split(THINK_CLOSE, 1)
        return thought.removeprefix(THINK_OPEN), rest
    if text.startswith(THINK_OPEN):
        return text[len(THINK_OPEN) :], None
    return None, text


def split_calls(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(text before the calls, the calls)``; all text, no calls, when a block does not
    parse (vLLM's Hermes parser then returns the output as content). One pass over the
    text, however many tags it holds."""
    opener, closer = CALL_OPEN.strip(), CALL_CLOSE.strip()
    start = text.find(opener)
    if start < 0:
        return text, []
    calls = []
    at = start
    while at >= 0:
        end = text.find(closer, at + len(opener))
        if end < 0:
            break
        call = _call(text[at + len(opener) : end])
        if call is None:
            return text, []
        calls.append(call)
        at = text.find(opener, end + len(closer))
    return (text[:start], calls) if calls else (text, [])


def _call(block: str) -> tuple[str, str] | None:
    try:
        value = loads_bounded(block.strip())
    except JSONInputError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments: Any = value.get("arguments", {})
    return value["name"], json.dumps(arguments, ensure_ascii=False)


def parse(text: str, *, reasoning: bool, tools: bool) -> Parsed:
    """The parts of ``text`` the configured parsers find: ``reasoning`` (a reasoning
    parser), ``tools`` (an auto tool choice with a tool parser)."""
    thought, rest = split_reasoning(text) if reasoning else (None, text)
    if rest is None:
        return Parsed(thought, None)
    calls: list[tuple[str, str]] = []
    if tools:
        rest, calls = split_calls(rest)
    if calls or thought is not None:
        return Parsed(thought, rest or None, calls)
    return Parsed(thought, rest, calls)


def stable_prefix(text: str) -> str:
    """``text`` without a trailing start of a marker, which a later chunk may complete (so
    a stream never shows half a tag as content)."""
    for cut in range(min(len(text), max(map(len, MARKERS)) - 1), 0, -1):
        tail = text[-cut:]
        if any(marker.startswith(tail) and marker != tail for marker in MARKERS):
            return text[:-cut]
    return text


def forced_tool_choice(chat_request: dict[str, Any] | None) -> str | None:
    """``required``, the named tool, or None when the chat request forces no tool call."""
    if not chat_request or not chat_request.get("tools"):
        return None
    choice = chat_request.get("tool_choice")
    if choice == "required":
        return "required"
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) and name else None
    return None


def named_tool_choice(chat_request: dict[str, Any] | None) -> bool:
    """A named choice finishes with ``stop`` even when it calls (vLLM and OpenAI)."""
    return forced_tool_choice(chat_request) not in (None, "required")


def auto_tools(chat_request: dict[str, Any] | None, settings: Settings) -> bool:
    """Whether chat would parse the text for calls: tools with an ``auto`` choice on a
    server with auto tool choice (always on under llmsim's own command line)."""
    if not chat_request or not chat_request.get("tools"):
        return False
    return chat_request.get("tool_choice") in (None, "auto") and (
        settings.enable_auto_tool_choice is not False
    )


def forced_calls(text: str, forced: str) -> list[tuple[str, str]] | None:
    """The calls a forced tool choice's JSON holds (None when it does not parse, as vLLM
    then leaves the text as content)."""
    try:
        value = loads_bounded(text)
    except JSONInputError:
        return None
    if forced != "required":
        return [(forced, json.dumps(value, ensure_ascii=False))]
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in value
    ):
        return None
    return [
        (item["name"], json.dumps(item.get("parameters", {}), ensure_ascii=False)) for item in value
    ]


def parse_message(settings: Settings, text: str, chat_request: dict[str, Any] | None) -> Parsed:
    """What chat's parsers make of ``text`` for ``chat_request`` on this server."""
    parsed = parse(
        text,
        reasoning=settings.reasoning_parser is not None,
        tools=auto_tools(chat_request, settings),
    )
    forced = forced_tool_choice(chat_request)
    if forced is not None and parsed.content is not None:
        calls = forced_calls(parsed.content, forced)
        if calls is not None:
            parsed.content, parsed.calls = None, calls
    return parsed


def chat_message(
    settings: Settings, text: str, chat_request: dict[str, Any] | None
) -> tuple[dict[str, Any], bool]:
    """The message chat answers for ``text`` (its fields as chat spells them) and whether it
    calls tools."""
    parsed = parse_message(settings, text, chat_request)
    message: dict[str, Any] = {
        "role": settings.response_role,
        "content": parsed.content,
        "tool_calls": [call_json(name, arguments) for name, arguments in parsed.calls],
    }
    if settings.reasoning_parser is not None:
        shown = (chat_request or {}).get("include_reasoning") is not False
        message["reasoning"] = parsed.reasoning if shown and parsed.reasoning else None
    return message, bool(parsed.calls)


def call_json(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": tool_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
