"""Tool calls and structured outputs (vLLM's ``StructuredOutputsParams``) to the answer given.

The constrained text itself comes from :mod:`llmsim.engine.structured`; this module checks
what a request asked for and refuses what llmsim cannot honour, naming the field at fault
as the request spells it (``param``), for every door. Reading the constraint out of a wire
format (OpenAI's ``response_format``, ``guided_*``; gRPC's ``constraint`` oneof) is the door's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from llmsim.engine import Answer
from llmsim.engine.structured import (
    FunctionSpec,
    OutputConstraint,
    ToolChoice,
    ToolChoiceError,
    ToolSchemaError,
    UnsupportedRegexError,
    UnsupportedSchemaError,
    check_constraint,
    check_tools,
    constrained_answer,
    tool_answer,
)
from llmsim.service.errors import ServiceError, invalid

UNSUPPORTED = frozenset({"grammar", "structural_tag"})


@dataclass(frozen=True, slots=True)
class Constraint:
    """One structured-output constraint: ``kind`` as vLLM names it, ``value`` its text."""

    kind: str
    """json_schema, regex, json_object, choice, grammar or structural_tag."""
    value: str | tuple[str, ...] = ""


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The tools a chat request offers the model, and how it may call them."""

    functions: Sequence[FunctionSpec]
    choice: ToolChoice
    parallel: bool
    last_role: str | None
    """The role of the conversation's last message: never a call right after a tool result."""
    probability: float
    """``--tool-call-probability``: how often ``auto`` calls."""


def output_constraint(constraint: Constraint) -> OutputConstraint:
    """The engine's constraint; vLLM's 400 for what llmsim does not honour."""
    kind = constraint.kind
    if kind in UNSUPPORTED:
        raise unsupported(kind, kind)
    if kind == "json_object":
        return OutputConstraint("json_object")
    if kind == "choice":
        choices = constraint.value
        return choice_constraint(choices if isinstance(choices, tuple) else (), "choice")
    text = constraint.value if isinstance(constraint.value, str) else ""
    if kind == "regex":
        return OutputConstraint("regex", pattern=text)
    if kind == "json_schema":
        try:
            return OutputConstraint("json", schema=json.loads(text))
        except (ValueError, RecursionError):  # nesting deeper than Python recurses
            raise invalid("json_schema: not a valid JSON schema string", "json_schema") from None
    raise invalid(f"unknown structured-output constraint {kind!r}", "constraint")


def choice_constraint(choices: Sequence[str], param: str) -> OutputConstraint:
    """One of ``choices``; a 400 naming ``param`` when there are none."""
    if not choices:
        raise invalid(f"{param}: at least one choice is required", param)
    return OutputConstraint("choice", choices=tuple(choices))


def unsupported(param: str, kind: str) -> ServiceError:
    """vLLM's 400 for a constraint kind llmsim does not generate (grammars, structural tags)."""
    return invalid(f"{param}: {kind} constraints are not supported by llmsim", param)


def refused(exc: Exception, param: str) -> ServiceError:
    """``param: reason``: which field holds what llmsim cannot honour, and why."""
    return invalid(f"{param}: {exc}", param)


def constrained(constraint: Constraint | None, seed: int | None) -> Answer | None:
    """The answer that satisfies ``constraint`` (None without one); a seed decides it."""
    if constraint is None:
        return None
    return answer_for(output_constraint(constraint), constraint.kind, random.Random(seed))


def answer_for(
    constraint: OutputConstraint | None,
    param: str,
    rng: random.Random,
    tools: ToolUse | None = None,
) -> Answer | None:
    """Tool calls, else the text ``constraint`` allows, else None (the generation mode
    answers). Everything is checked first, even what the answer does not use; ``param``
    names the field holding ``constraint`` in a refusal."""
    try:
        if constraint is not None:
            check_constraint(constraint, rng)
        if tools is not None and tools.functions:
            check_tools(tools.functions, tools.choice)
            answer = tool_answer(
                tools.functions,
                tools.choice,
                parallel=tools.parallel,
                last_role=tools.last_role,
                probability=tools.probability,
                rng=rng,
            )
            if answer is not None:
                return answer
        return None if constraint is None else constrained_answer(constraint, rng)
    except ToolChoiceError as exc:
        raise invalid(str(exc), "tool_choice") from None
    except ToolSchemaError as exc:
        raise refused(exc, f"tools[{exc.index}].function.parameters") from None
    except (UnsupportedSchemaError, UnsupportedRegexError) as exc:
        raise refused(exc, param) from None
