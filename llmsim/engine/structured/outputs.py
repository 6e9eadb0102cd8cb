"""Structured outputs: text that obeys a JSON schema, a choice list or a regex.

The API layer turns ``response_format``, ``structured_outputs`` and the older
``guided_*`` fields into one :class:`OutputConstraint`; this module checks it can be
honoured and produces the text the model would be constrained to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from llmsim.engine.answer import Answer
from llmsim.engine.structured.regex import regex_instance
from llmsim.engine.structured.schema import (
    any_json_object,
    check_schema,
    json_text,
    schema_instance,
)


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """``json`` (with ``schema``), ``json_object``, ``choice`` or ``regex``."""

    kind: Literal["json", "json_object", "choice", "regex"]
    schema: Any = None
    choices: tuple[str, ...] = ()
    pattern: str = ""


def check_constraint(constraint: OutputConstraint, rng: random.Random) -> None:
    """Raise :class:`UnsupportedSchemaError` / :class:`UnsupportedRegexError` up front."""
    if constraint.kind == "json":
        check_schema(constraint.schema)
    elif constraint.kind == "regex":
        regex_instance(constraint.pattern, rng)


def constrained_text(constraint: OutputConstraint, rng: random.Random) -> str:
    if constraint.kind == "json":
        return json_text(schema_instance(constraint.schema, rng))
    if constraint.kind == "json_object":
        return json_text(any_json_object(rng))
    if constraint.kind == "choice":
        return rng.choice(constraint.choices)
    return regex_instance(constraint.pattern, rng)


def constrained_answer(constraint: OutputConstraint, rng: random.Random) -> Answer:
    return Answer(text=constrained_text(constraint, rng))
