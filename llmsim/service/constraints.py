"""Structured outputs (vLLM's ``StructuredOutputsParams``) to the answer the model gives.

The constrained text itself comes from :mod:`llmsim.engine.structured`; this module only
reads which constraint a request asked for and refuses the kinds llmsim cannot honour.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from llmsim.engine import Answer
from llmsim.engine.structured import (
    OutputConstraint,
    UnsupportedRegexError,
    UnsupportedSchemaError,
    check_constraint,
    constrained_answer,
)
from llmsim.service.errors import invalid

UNSUPPORTED = frozenset({"grammar", "structural_tag"})


@dataclass(frozen=True, slots=True)
class Constraint:
    """One structured-output constraint: ``kind`` as vLLM names it, ``value`` its text."""

    kind: str
    """json_schema, regex, json_object, choice, grammar or structural_tag."""
    value: str | tuple[str, ...] = ""


def output_constraint(constraint: Constraint) -> OutputConstraint:
    """The engine's constraint; vLLM's 400 for what llmsim does not honour."""
    kind = constraint.kind
    if kind in UNSUPPORTED:
        raise invalid(f"{kind}: {kind} constraints are not supported by llmsim", kind)
    if kind == "json_object":
        return OutputConstraint("json_object")
    if kind == "choice":
        choices = constraint.value
        if not isinstance(choices, tuple) or not choices:
            raise invalid("choice: at least one choice is required", "choice")
        return OutputConstraint("choice", choices=choices)
    text = constraint.value if isinstance(constraint.value, str) else ""
    if kind == "regex":
        return OutputConstraint("regex", pattern=text)
    if kind == "json_schema":
        try:
            return OutputConstraint("json", schema=json.loads(text))
        except (ValueError, RecursionError):  # nesting deeper than Python recurses
            raise invalid("json_schema: not a valid JSON schema string", "json_schema") from None
    raise invalid(f"unknown structured-output constraint {kind!r}", "constraint")


def constrained(constraint: Constraint | None, seed: int | None) -> Answer | None:
    """The answer that satisfies ``constraint`` (None without one); a seed decides it."""
    if constraint is None:
        return None
    rng = random.Random(seed)
    engine_constraint = output_constraint(constraint)
    try:
        check_constraint(engine_constraint, rng)
        return constrained_answer(engine_constraint, rng)
    except (UnsupportedSchemaError, UnsupportedRegexError) as exc:
        raise invalid(f"{constraint.kind}: {exc}", constraint.kind) from None
