"""From a request's tools and structured-output fields to the answer the model gives.

This is where vLLM's request fields (``tools``, ``tool_choice``, ``response_format``,
``structured_outputs``, ``guided_*``) become the plain data of
:mod:`llmsim.engine.structured`; :func:`llmsim.service.constraints.answer_for` checks them
and makes the answer, as it does for gRPC's ``constraint``. Refusals are
:class:`~llmsim.service.errors.ServiceError` errors naming the request's field.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from llmsim.api.http.jsonio import JSONInputError, loads_bounded
from llmsim.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from llmsim.api.openai.structured_fields import NamedToolChoice, StructuredFields
from llmsim.engine import Answer
from llmsim.engine.structured import FunctionSpec, OutputConstraint, ToolChoice
from llmsim.service.constraints import (
    ToolUse,
    answer_for,
    choice_constraint,
    unsupported,
)
from llmsim.service.errors import ServiceError, invalid

_SHARED_RNG = random.Random()
"""Decisions of requests without a ``seed``."""


def request_rng(seed: int | None) -> random.Random:
    """A seeded request decides the same way every time."""
    return _SHARED_RNG if seed is None else random.Random(seed)


def has_constraints(body: StructuredFields) -> bool:
    """Whether the request has tools or a structured-output field at all."""
    if isinstance(body, ChatCompletionRequest) and body.tools:
        return True
    # Spelled out rather than looped over: this runs on every request.
    return not (
        body.response_format is None
        and body.structured_outputs is None
        and body.guided_json is None
        and body.guided_regex is None
        and body.guided_choice is None
        and body.guided_grammar is None
    )


def chat_answer(
    body: ChatCompletionRequest, tool_call_probability: float, rng: random.Random
) -> Answer | None:
    """Tool calls, else constrained text, else None (the generation mode answers)."""
    constraint = output_constraint(body)
    tools = None
    if body.tools:
        tools = ToolUse(
            function_specs(body),
            toolchoice_constraint(body),
            parallel=body.parallel_tool_calls is not False,
            last_role=body.messages[-1].role,
            probability=tool_call_probability,
        )
    return answer_for(constraint, _constraint_param(body), rng, tools)


def same_name(param: str) -> str:
    """Chat's own field names: nothing to rename."""
    return param


def renamed(error: ServiceError, rename: Callable[[str], str]) -> ServiceError:
    """``error`` naming the field as another API spells it (``text.format`` for
    ``response_format``), for requests translated into chat."""
    if error.param is None or rename(error.param) == error.param:
        return error
    param = rename(error.param)
    message = error.message.removeprefix(f"{error.param}: ")
    return ServiceError(error.kind, f"{param}: {message}", param, error.status, error.type)


def completion_answer(body: CompletionRequest, rng: random.Random) -> Answer | None:
    constraint = output_constraint(body)
    if constraint is None:
        return None
    return answer_for(constraint, _constraint_param(body), rng)


def function_specs(body: ChatCompletionRequest) -> list[FunctionSpec]:
    return [FunctionSpec(tool.function.name, tool.function.parameters) for tool in body.tools or []]


def toolchoice_constraint(body: ChatCompletionRequest) -> ToolChoice:
    """vLLM's default: ``auto`` when tools are given, and no tools at all with ``none``."""
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        return ToolChoice("named", choice.function.name)
    return ToolChoice(choice or "auto")


def output_constraint(body: StructuredFields) -> OutputConstraint | None:
    """The one structured-output constraint of a request (``guided_*`` win, as in vLLM)."""
    if body.guided_grammar is not None:
        raise unsupported("guided_grammar", "grammar")
    if body.guided_json is not None:
        return OutputConstraint("json", schema=_schema(body.guided_json, "guided_json"))
    if body.guided_choice is not None:
        return choice_constraint(body.guided_choice, "guided_choice")
    if body.guided_regex is not None:
        return OutputConstraint("regex", pattern=body.guided_regex)
    if body.structured_outputs is not None:
        return _structured_outputs(body)
    return _response_format(body)


def _structured_outputs(body: StructuredFields) -> OutputConstraint | None:
    outputs = body.structured_outputs
    assert outputs is not None
    if outputs.grammar is not None:
        raise unsupported("structured_outputs.grammar", "grammar")
    if outputs.structural_tag is not None:
        raise unsupported("structured_outputs.structural_tag", "structural_tag")
    if outputs.json_ is not None:
        return OutputConstraint("json", schema=_schema(outputs.json_, "structured_outputs.json"))
    if outputs.choice is not None:
        return choice_constraint(outputs.choice, "structured_outputs.choice")
    if outputs.regex is not None:
        return OutputConstraint("regex", pattern=outputs.regex)
    if outputs.json_object:
        return OutputConstraint("json_object")
    return _response_format(body)


def _response_format(body: StructuredFields) -> OutputConstraint | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return OutputConstraint("json_object")
    if fmt.type == "structural_tag":
        raise unsupported("response_format", "structural_tag")
    if fmt.json_schema is None or fmt.json_schema.json_schema is None:
        raise invalid(
            "response_format: json_schema must be provided when type is 'json_schema'",
            "response_format",
        )
    return OutputConstraint("json", schema=fmt.json_schema.json_schema)


def _schema(value: str | dict[str, Any], param: str) -> Any:
    if isinstance(value, dict):
        return value
    try:
        return loads_bounded(value.encode("utf-8", "surrogatepass"))
    except (JSONInputError, ValueError) as exc:
        raise invalid(f"{param}: not a valid JSON schema string ({exc})", param) from None


def _constraint_param(body: StructuredFields) -> str:
    """The field holding the constraint that was refused (``structured_outputs.regex``)."""
    for name in ("guided_json", "guided_regex"):
        if getattr(body, name) is not None:
            return name
    outputs = body.structured_outputs
    if outputs is not None and outputs.json_ is not None:
        return "structured_outputs.json"
    if outputs is not None and outputs.regex is not None:
        return "structured_outputs.regex"
    return "response_format" if body.response_format is not None else "tools"
