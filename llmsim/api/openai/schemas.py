"""Request bodies of the OpenAI-compatible API, as vLLM accepts them.

Validation is strict about types (a string is not a number) and lenient about unknown
fields, which are accepted and ignored as vLLM does. Sampling knobs that a simulator
cannot honour are still range-checked, so a client that sends nonsense hears about it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from llmsim.api.openai.cross_checks import CrossChecks
from llmsim.api.openai.structured_fields import (
    GUIDE_KEYS,
    PROMPT_LOGPROBS_STREAMED,
    StructuredFields,
    ToolFields,
    check_one_guide,
    check_tool_usage,
)
from llmsim.service.sampling import Sampling
from llmsim.settings.parsers import ReasoningEffort

INT64_MAX = 2**63 - 1
MAX_N = 128
"""Upper bound on ``n``: far above real use, low enough that no request can exhaust memory."""
MAX_PROMPTS = 1024
MAX_STOP_STRINGS = 64


_EXACT_FLOAT_INT = 2**53


def _integral_float_to_int(value: object) -> object:
    """JSON Schema counts ``4.0`` as an integer, and so do Python clients that send it.

    Only floats that hold an integer exactly (up to 2**53) qualify: a JSON parser may hand
    over an out-of-range integer such as -2**63-1 as a rounded float.
    """
    if type(value) is float and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
        return int(value)
    return value


INTEGRAL = BeforeValidator(_integral_float_to_int)
"""Put last in ``Annotated[int, Field(...), INTEGRAL]`` so the bounds still reach the schema."""
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX), INTEGRAL]
"""Any integer a 64-bit field holds: strict about strings and booleans, lenient about 4.0."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class ContentPart(_Body):
    """A part of a message; only ``text`` parts carry text for this simulator."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"type": {"const": "text"}}},
            "then": {"required": ["text"], "properties": {"text": {"type": "string"}}},
        }
    )

    type: Annotated[str, StringConstraints(min_length=1)]
    text: str | None = None

    @model_validator(mode="after")
    def _text_parts_have_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs a 'text' field")
        return self


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


StopStrings = str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None


class _SamplingRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"stream_options": {"not": {"type": "null"}}},
                "required": ["stream_options"],
            },
            "then": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
        }
    )

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1, le=INT64_MAX), INTEGRAL] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N), INTEGRAL] = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: StopStrings = None
    stop_token_ids: list[Int64] | None = None
    ignore_eos: bool = False
    seed: Int64 | None = None
    user: str | None = None
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: Annotated[int, Field(ge=-1, le=INT64_MAX), INTEGRAL] | None = None
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    logit_bias: dict[str, float] | None = None
    min_tokens: Annotated[int, Field(ge=0, le=INT64_MAX), INTEGRAL] | None = None
    prompt_logprobs: Annotated[int, Field(ge=0, le=INT64_MAX), INTEGRAL] | None = Field(
        None, description="Refused (400) above 0 with stream: true, as vLLM refuses it."
    )
    kv_transfer_params: dict[str, Any] | None = None
    """Disaggregated prefill/decode, as vLLM's NIXL connector reads it (service/kv_transfer.py)."""
    priority: Int64 = 0
    """Lower is served first with ``--scheduling-policy priority``."""
    stream_interval: Annotated[int, Field(ge=1, le=INT64_MAX), INTEGRAL] | None = Field(
        None,
        description="Tokens per streamed chunk for this request; the server's "
        "--stream-interval is the least it gets. Ignored without stream.",
    )

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        if isinstance(self.stop, str):
            return (self.stop,)
        return tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def output_limit(self) -> int | None:
        """The most tokens an answer may have (chat also reads ``max_completion_tokens``)."""
        return self.max_tokens

    def sampling(self) -> Sampling:
        """The engine's sampling parameters (:mod:`llmsim.service.sampling`); the schema has
        bounded each field already."""
        stop = self.stop  # spelled out, as in ``stop_strings``: this runs on every request
        return Sampling(
            max_tokens=self.output_limit,
            min_tokens=self.min_tokens or 0,
            n=self.n,
            stop=() if stop is None else (stop,) if isinstance(stop, str) else tuple(stop),
            ignore_eos=self.ignore_eos,
            seed=self.seed,
            priority=self.priority,
        )


def _check_stream_options(body: _SamplingRequest) -> None:
    if body.stream_options is not None and not body.stream:
        raise ValueError("stream_options can only be set when stream is true")


def _check_prompt_logprobs(data: dict[str, Any]) -> dict[str, Any]:
    """vLLM computes prompt logprobs only for whole answers, never for streams."""
    wanted = data.get("prompt_logprobs")
    if data.get("stream") is True and type(wanted) is int and (wanted > 0 or wanted == -1):
        raise ValueError(PROMPT_LOGPROBS_STREAMED)
    return data


def _check_chat_raw(data: dict[str, Any]) -> dict[str, Any]:
    return check_tool_usage(_check_prompt_logprobs(data))


def _check_sampling(body: ChatCompletionRequest | CompletionRequest) -> None:
    _check_stream_options(body)
    check_one_guide(body)


def _with_rule(base: type[_Body], rule: dict[str, Any]) -> ConfigDict:
    """``base``'s schema rules plus one more (a subclass config replaces, not merges, them)."""
    inherited = base.model_config.get("json_schema_extra")
    extra = dict(inherited) if isinstance(inherited, dict) else {}
    return ConfigDict(json_schema_extra={**extra, "allOf": [rule]})


class ChatCompletionRequest(_SamplingRequest, ToolFields, StructuredFields):
    model_config = _with_rule(
        _SamplingRequest,
        {
            "if": {
                "properties": {"top_logprobs": {"type": "integer", "minimum": 1}},
                "required": ["top_logprobs"],
            },
            "then": {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]},
        },
    )

    cross_checks: ClassVar[CrossChecks] = CrossChecks(
        GUIDE_KEYS | {"stream_options", "tool_choice", "prompt_logprobs"},
        before=_check_chat_raw,
        after=_check_sampling,
    )

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=INT64_MAX), INTEGRAL] | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=INT64_MAX), INTEGRAL] | None = None
    """Bounded by ``--max-logprobs`` in the handler."""
    reasoning_effort: ReasoningEffort | None = None
    """Handed to the chat template (see :func:`~llmsim.api.openai.prompts.apply_server_options`)."""

    @property
    def output_limit(self) -> int | None:
        """``max_completion_tokens`` wins over the older ``max_tokens``."""
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=INT64_MAX), INTEGRAL]], Field(min_length=1)]
PromptList = Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
TokenIdsList = Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]


class CompletionRequest(_SamplingRequest, StructuredFields):
    model_config = _with_rule(
        _SamplingRequest,
        {
            "if": {"properties": {"max_tokens": {"const": 0}}, "required": ["max_tokens"]},
            "then": {"properties": {"echo": {"const": True}}, "required": ["echo"]},
        },
    )

    cross_checks: ClassVar[CrossChecks] = CrossChecks(
        GUIDE_KEYS | {"stream_options", "prompt_logprobs"},
        before=_check_prompt_logprobs,
        after=_check_sampling,
    )

    prompt: str | PromptList | TokenIds | TokenIdsList
    echo: bool | None = False
    logprobs: Annotated[int, Field(ge=0, le=INT64_MAX), INTEGRAL] | None = None
    suffix: str | None = None

    max_tokens: Annotated[int, Field(ge=0, le=INT64_MAX), INTEGRAL] | None = 16
    """The legacy completions API defaults to 16 tokens, and so does vLLM; 0 only with echo."""

    @model_validator(mode="after")
    def _zero_tokens_need_echo(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens must be at least 1, got 0.")
        return self


AdapterField = Annotated[str | None, WithJsonSchema({"type": "string", "minLength": 1})]
"""Optional to the model so the handler can answer a missing value in vLLM's own words;
required and non-empty in the published schema."""


class LoadLoraAdapterRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["lora_name", "lora_path"]})

    lora_name: AdapterField = None
    lora_path: AdapterField = None


class UnloadLoraAdapterRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["lora_name"]})

    lora_name: AdapterField = None
    lora_int_id: Int64 | None = None
