"""Whether a chat turn calls tools, which ones, and with what arguments.

The decision takes plain data (function names and JSON schemas, the tool choice, the
role of the last message) so every API that speaks tools (chat completions, and
adapters that translate other APIs into chat) decides the same way.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from collections.abc import Sequence as Seq
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from llmsim.engine.answer import Answer, ToolCall
from llmsim.engine.structured.errors import UnsupportedSchemaError
from llmsim.engine.structured.regex import UnsupportedRegexError
from llmsim.engine.structured.schema import check_schema, json_text, schema_instance

MAX_PARALLEL_CALLS = 3
PARALLEL_PROBABILITY = 0.3
"""How often a turn that calls tools calls more than one, when parallel calls are allowed."""


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A function tool as the model sees it: a name and its JSON-Schema ``parameters``."""

    name: str
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``none``, ``auto``, ``required``, or ``named`` with the function's ``name``."""

    mode: Literal["none", "auto", "required", "named"] = "auto"
    name: str | None = None


class ToolChoiceError(ValueError):
    """A tool choice that names a function missing from the tools."""


class ToolSchemaError(UnsupportedSchemaError):
    """The ``parameters`` of the tool at ``index`` cannot be honoured (or are over a limit)."""

    def __init__(self, index: int, reason: ValueError) -> None:
        super().__init__(getattr(reason, "keyword", "pattern"), str(reason))
        self.index = index


def check_tools(tools: Seq[FunctionSpec], choice: ToolChoice) -> None:
    """Refuse what cannot be answered: an unknown named tool, an unsupported schema."""
    if choice.mode == "named" and all(tool.name != choice.name for tool in tools):
        raise ToolChoiceError(f"Tool '{choice.name}' has not been passed in `tools`.")
    if choice.mode != "none":
        for tool in tools:
            if tool.parameters is not None:
                with _naming(tools, tool):
                    check_schema(dict(tool.parameters))


def tool_answer(
    tools: Seq[FunctionSpec],
    choice: ToolChoice,
    *,
    parallel: bool,
    last_role: str | None,
    probability: float,
    rng: random.Random,
) -> Answer | None:
    """The tool calls of this turn, or None when the model answers in text.

    ``auto`` calls with ``probability`` but never right after a tool result, so an agent
    loop (call, run the tool, send the result back) always ends with a text answer. As in
    vLLM (and OpenAI), a named tool choice finishes with ``stop``, the others with
    ``tool_calls``.
    """
    if not tools or choice.mode == "none":
        return None
    if choice.mode == "named":
        named = next(tool for tool in tools if tool.name == choice.name)
        return Answer(
            tool_calls=(ToolCall(named.name, arguments(named, rng)),), finish_reason="stop"
        )
    if choice.mode == "auto" and (last_role == "tool" or rng.random() >= probability):
        return None
    chosen = [rng.choice(tools) for _ in range(_call_count(parallel, rng))]
    calls = []
    for tool in chosen:
        with _naming(tools, tool):
            calls.append(ToolCall(tool.name, arguments(tool, rng)))
    return Answer(tool_calls=tuple(calls))


def arguments(tool: FunctionSpec, rng: random.Random) -> str:
    """JSON arguments that validate against the function's ``parameters``."""
    if not tool.parameters:
        return "{}"
    return json_text(schema_instance(dict(tool.parameters), rng))


@contextmanager
def _naming(tools: Seq[FunctionSpec], tool: FunctionSpec) -> Iterator[None]:
    """Turn a refused schema into a :class:`ToolSchemaError` naming the tool's position."""
    try:
        yield
    except (UnsupportedSchemaError, UnsupportedRegexError) as exc:
        raise ToolSchemaError(next(i for i, t in enumerate(tools) if t is tool), exc) from None


def _call_count(parallel: bool, rng: random.Random) -> int:
    if not parallel or rng.random() >= PARALLEL_PROBABILITY:
        return 1
    return rng.randint(2, MAX_PARALLEL_CALLS)
