"""What a constrained model says: tool calls and structured outputs.

Plain functions over plain data, shared by every API that offers tools or structured
outputs; the result is an :class:`~llmsim.engine.answer.Answer` the engine then paces.
"""

from llmsim.engine.structured.budget import LIMITS, Limits
from llmsim.engine.structured.errors import UnsupportedSchemaError
from llmsim.engine.structured.linear import LinearMatch, LinearPattern
from llmsim.engine.structured.outputs import (
    OutputConstraint,
    check_constraint,
    constrained_answer,
    constrained_text,
)
from llmsim.engine.structured.regex import MatchBudgetError, UnsupportedRegexError, regex_instance
from llmsim.engine.structured.schema import (
    check_schema,
    json_text,
    schema_instance,
)
from llmsim.engine.structured.tools import (
    FunctionSpec,
    ToolChoice,
    ToolChoiceError,
    ToolSchemaError,
    check_tools,
    tool_answer,
)

__all__ = [
    "LIMITS",
    "FunctionSpec",
    "Limits",
    "LinearMatch",
    "LinearPattern",
    "MatchBudgetError",
    "OutputConstraint",
    "ToolChoice",
    "ToolChoiceError",
    "ToolSchemaError",
    "UnsupportedRegexError",
    "UnsupportedSchemaError",
    "check_constraint",
    "check_schema",
    "check_tools",
    "constrained_answer",
    "constrained_text",
    "json_text",
    "regex_instance",
    "schema_instance",
    "tool_answer",
]
