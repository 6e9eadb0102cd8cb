"""What a constrained model says: tool calls and structured outputs.

Plain functions over plain data, shared by every API that offers tools or structured
outputs; the result is an :class:`~llmsim.engine.answer.Answer` the engine then paces.
"""

from llmsim.engine.structured.outputs import (
    OutputConstraint,
    check_constraint,
    constrained_answer,
    constrained_text,
)
from llmsim.engine.structured.regex import UnsupportedRegexError, regex_instance
from llmsim.engine.structured.schema import (
    UnsupportedSchemaError,
    check_schema,
    json_text,
    schema_instance,
)
from llmsim.engine.structured.tools import (
    FunctionSpec,
    ToolChoice,
    ToolChoiceError,
    check_tools,
    tool_answer,
)

__all__ = [
    "FunctionSpec",
    "OutputConstraint",
    "ToolChoice",
    "ToolChoiceError",
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
