"""Request fields for tools and structured outputs, as vLLM accepts them.

Mixed into the chat and completion request models. Validation mirrors vLLM's
``protocol.py`` (and its wording), so a malformed tool or tool choice is refused
with the message a vLLM client would see.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

_CONFIG = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, populate_by_name=True)
PROMPT_LOGPROBS_STREAMED = "`prompt_logprobs` are not available when `stream=True`."
REFUSALS = (
    PROMPT_LOGPROBS_STREAMED,
    "When using `tool_choice`, `tools` must be set.",
    "The tool specified in `tool_choice` does not match any of the specified `tools`",
    "Invalid value for `function`",
    "Expected field `name` in `function`",
    "Invalid `name` in `function`",
    "You can only use one kind of",
    "tools: ",
    ".function.parameters: ",
    "response_format: ",
    "structured_outputs",
    "guided_json: ",
    "guided_regex: ",
    "guided_choice: ",
    "guided_grammar: ",
)
"""How refusals that a JSON Schema cannot state begin: a malformed or empty named tool
choice, a tool choice naming no given tool, a schema or regex llmsim cannot honour
(``param: reason``), several constraints."""
_UNHONOURED = (
    " A JSON schema or regex llmsim cannot honour, or over one of its limits, is refused "
    "with 400 naming the field and the keyword or limit (see the supported JSON-Schema "
    "subset and the limits in docs/api.md)."
)
_CORRECT_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


class FunctionDefinition(BaseModel):
    model_config = _CONFIG

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(BaseModel):
    model_config = _CONFIG

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = _CONFIG

    name: Annotated[str, Field(min_length=1)]


class NamedToolChoice(BaseModel):
    model_config = _CONFIG

    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = _CONFIG

    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = _CONFIG

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs``: one constraint out of several kinds."""

    model_config = _CONFIG

    json_: str | dict[str, Any] | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StructuredOutputs:
        if sum(kind is not None for kind in (self.json_, self.regex, self.choice)) > 1:
            raise ValueError(
                "You can only use one kind of constraints for structured outputs "
                "('json', 'regex' or 'choice')."
            )
        return self


class StructuredFields(BaseModel):
    """``response_format``, ``structured_outputs`` and the older ``guided_*`` fields."""

    model_config = _CONFIG

    response_format: ResponseFormat | None = Field(
        None,
        description="json_object or json_schema: the output is JSON (valid for the schema); "
        "structural_tag is refused." + _UNHONOURED,
    )
    structured_outputs: StructuredOutputs | None = Field(
        None,
        description="vLLM's constraints: one of json, regex, choice or json_object "
        "(grammar and structural_tag are refused)." + _UNHONOURED,
    )
    guided_json: str | dict[str, Any] | None = Field(
        None, description="Older form of structured_outputs.json." + _UNHONOURED
    )
    guided_regex: str | None = Field(
        None, description="Older form of structured_outputs.regex." + _UNHONOURED
    )
    guided_choice: list[str] | None = Field(
        None, description="Older form of structured_outputs.choice (at least one choice)."
    )
    guided_grammar: str | None = Field(None, description="Refused: grammars are not supported.")


def check_one_guide(body: StructuredFields) -> None:
    """vLLM allows one kind of guided decoding at a time."""
    given = (
        (body.guided_json is not None)
        + (body.guided_regex is not None)
        + (body.guided_choice is not None)
    )
    if given > 1:
        raise ValueError(
            "You can only use one kind of guided decoding "
            "('guided_json', 'guided_regex' or 'guided_choice')."
        )


GUIDE_KEYS = frozenset({"guided_json", "guided_regex", "guided_choice"})
"""The fields :func:`check_one_guide` reads: without them it has nothing to check."""


class ToolFields(BaseModel):
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` of a chat request."""

    model_config = _CONFIG

    tools: list[ChatTool] | None = Field(
        None, description="Function tools; their parameters are JSON schemas." + _UNHONOURED
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None,
        description="Needs tools; a named function must be one of the tools "
        "(auto with tools when unset).",
    )
    parallel_tool_calls: bool | None = True
    _unused_tools_hidden: bool = PrivateAttr(default=False)

    def hide_unused_tools(self) -> None:
        """Leave the tools out of the prompt when the model may not call them (vLLM's
        --exclude-tools-when-tool-choice-none); they stay in the request for its checks."""
        if self.tools and self.tool_choice == "none":
            self._unused_tools_hidden = True

    @property
    def prompt_tools(self) -> list[ChatTool] | None:
        """The tools the chat template renders into the prompt."""
        return None if self._unused_tools_hidden else self.tools


def check_tool_usage(data: dict[str, Any]) -> dict[str, Any]:
    """vLLM's checks of ``tool_choice`` against ``tools``, on the raw body (as vLLM's
    before-validator), which they may rewrite: ``required`` with no tools means none."""
    if data.get("tool_choice") in (None, "none"):
        return data
    choice = data["tool_choice"]
    if data.get("tools") is None:
        raise ValueError("When using `tool_choice`, `tools` must be set.")
    if choice not in ("auto", "required") and not isinstance(choice, dict):
        raise ValueError(
            f"Invalid value for `tool_choice`: {choice}! Only named tools, "
            '"none", "auto" or "required" are supported.'
        )
    if choice == "required" and data["tools"] == []:
        return {**data, "tool_choice": "none", "tools": None}  # as OpenAI does
    if isinstance(choice, dict):
        _check_named_choice(choice, data["tools"])
    return data


def _check_named_choice(choice: dict[str, Any], tools: Any) -> None:
    function = choice.get("function")
    if not isinstance(function, dict):
        raise ValueError(
            f"Invalid value for `function`: `{function}` in `tool_choice`! {_CORRECT_USAGE}"
        )
    if "name" not in function:
        raise ValueError(f"Expected field `name` in `function` in `tool_choice`! {_CORRECT_USAGE}")
    name = function["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Invalid `name` in `function`: `{name}` in `tool_choice`! {_CORRECT_USAGE}"
        )
    if not isinstance(tools, list) or not all(
        isinstance(tool, dict) and isinstance(tool.get("function"), dict) for tool in tools
    ):
        return  # malformed tools: field validation names the problem
    if all(tool["function"].get("name") != name for tool in tools):
        raise ValueError(
            "The tool specified in `tool_choice` does not match any of the specified `tools`"
        )
