"""The served model, its adapters, template and parsers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_settings import NoDecode

from llmsim.settings.field_types import Names, json_object_config
from llmsim.settings.lora_modules import LoraModule, split_lora_modules
from llmsim.settings.parsers import check_effort_map, check_generation_override


class ModelFields(BaseModel):
    """The served model, its adapters, template and parsers."""

    # -- model ------------------------------------------------------------------
    model: str = Field(
        "llmsim/sim-model",
        min_length=1,
        description="Model name or path the server pretends to serve.",
    )
    served_model_name: Names = Field(
        default_factory=list,
        description="Names the API accepts for the model; the first is the one reported. "
        "Defaults to the model name.",
    )
    lora: Names = Field(
        default_factory=list,
        description="LoRA adapter names to serve (comma-separated, repeatable). "
        "The adapter path reported in /v1/models is the name itself.",
    )
    lora_modules: Annotated[list[LoraModule], NoDecode, BeforeValidator(split_lora_modules)] = (
        Field(
            default_factory=list,
            description="LoRA adapters in vLLM's forms: name=path, or JSON "
            '{"name": ..., "path": ..., "base_model_name": ...}.',
        )
    )
    max_model_len: int = Field(
        4096, ge=1, le=10_000_000, description="Context window: prompt plus output tokens."
    )
    tokenizer: str | None = Field(
        None,
        min_length=1,
        description="Hugging Face tokenizer to count tokens with: a tokenizer.json file, a "
        "directory holding one, or a hub id (local cache first; needs llmsim[tokenizers]). "
        "Unset: the built-in tokenizer.",
    )
    chat_template: str | None = Field(
        None,
        min_length=1,
        description="Jinja2 chat template (a file, or the template itself) that renders chat "
        "messages into the prompt; overrides the tokenizer's own.",
    )
    generation_config: str = Field(
        "auto",
        min_length=1,
        description="Where the default sampling parameters come from, as vLLM's "
        "--generation-config: auto, the model's generation_config.json when --model is a local "
        "folder; vllm, none; or a folder holding a generation_config.json. Only its "
        "max_new_tokens matters here: the max_tokens of requests that set none, and from a "
        "folder a limit on every answer.",
    )
    override_generation_config: Annotated[
        dict[str, Any] | None,
        NoDecode,
        BeforeValidator(json_object_config),
        AfterValidator(check_generation_override),
    ] = Field(
        None,
        description="Generation config values over --generation-config's (vLLM's "
        '--override-generation-config), as JSON or a TOML table: {"max_new_tokens": 256} '
        "caps every answer at 256 tokens and is the max_tokens of requests that set none.",
    )
    max_logprobs: int = Field(
        20,
        ge=0,
        le=1_000_000,
        description="Most logprobs and prompt_logprobs a request may ask for (vLLM's default 20).",
    )
    max_request_work: int = Field(
        2_000_000,
        ge=1,
        le=10**12,
        description="Most work one request may ask for, counted in token positions times (1 + "
        "logprobs per position): n x max_tokens per prompt (max_model_len less the prompt when "
        "unset), plus prompt tokens scored for echo or prompt_logprobs. Bounds the time and "
        "size of one answer; above it a request gets 400.",
    )
    response_role: str = Field(
        "assistant",
        min_length=1,
        description="The role of the chat answer's message, as vLLM's --response-role.",
    )
    return_tokens_as_token_ids: bool = Field(
        False,
        description="Name tokens token_id:N in logprobs (vLLM's --return-tokens-as-token-ids), "
        "for clients that cannot tell apart tokens with the same text.",
    )
    reasoning_parser: str | None = Field(
        None,
        description="vLLM's --reasoning-parser (deepseek_r1, qwen3, granite...): chat answers "
        "start with a short simulated thought, returned apart as the message's reasoning (a "
        "Responses reasoning item, a Messages thinking block), counted and paced like other "
        "tokens. Unset: no reasoning.",
    )
    enable_auto_tool_choice: bool | None = Field(
        None,
        description="vLLM's --enable-auto-tool-choice. False: chat and Messages requests with "
        "tools get vLLM's 400 for tool_choice auto (the default when tools are sent), required "
        "or a named tool, as vLLM answers without a tool parser. Unset: llmsim's default, all "
        "allowed; a vLLM command line without the flag sets it False.",
    )
    tool_call_parser: str | None = Field(
        None,
        description="vLLM's --tool-call-parser (hermes, llama3_json...): the tool-call format "
        "named for vLLM; llmsim's tool calls are the same whichever it names.",
    )
    default_chat_template_kwargs: Annotated[
        dict[str, Any] | None, NoDecode, BeforeValidator(json_object_config)
    ] = Field(
        None,
        description="Chat template kwargs every chat request gets unless it sends the key "
        "itself (vLLM's --default-chat-template-kwargs), as JSON or a TOML table: the template "
        'renders them and the reasoning parser reads them, so {"enable_thinking": false} '
        "starts a Qwen3-style model without thinking.",
    )
    reasoning_effort_map: Annotated[
        dict[str, str] | None,
        NoDecode,
        BeforeValidator(json_object_config),
        AfterValidator(check_effort_map),
    ] = Field(
        None,
        description="Rewrite a request's reasoning effort to one the chat template knows "
        "(vLLM's --reasoning-effort-map), as JSON or a TOML table: "
        '{"medium": "low", "xhigh": "max"}. The template gets the effort as '
        "reasoning_effort; unlisted efforts pass unchanged.",
    )
    exclude_tools_when_tool_choice_none: bool = Field(
        False,
        description="Leave the tools out of the prompt of a chat request with tool_choice none "
        "(vLLM's --exclude-tools-when-tool-choice-none). Off, as in vLLM: they are rendered "
        "and counted as prompt tokens.",
    )
    trust_request_chat_template: bool = Field(
        False,
        description="Accept a chat request that brings its own chat_template (or "
        "chat_template_kwargs.chat_template), as vLLM's --trust-request-chat-template. Off, as "
        "in vLLM: such a request is refused with a 400. Accepted, it is rendered with the "
        "server's template: a client's Jinja is never run.",
    )
    fingerprint_mode: Literal["full", "hash", "custom", "none"] = Field(
        "full",
        description="The system_fingerprint of chat and completion answers, as vLLM's "
        "--fingerprint-mode: full, vllm-<version>[-dpN]-<hash of the configuration>; hash, "
        "without the parallelism; custom, --fingerprint-value; none, null.",
    )
    fingerprint_value: str | None = Field(
        None,
        description="The system_fingerprint with --fingerprint-mode custom (unset: null).",
    )
    runner: Literal["auto", "generate", "pooling", "draft"] = Field(
        "auto",
        description="vLLM's --runner: pooling serves an embedding model (/v1/embeddings, "
        "/pooling, and the scoring routes /score, /rerank, /classify, /v2/embed) whose chat, "
        "completions, responses and messages routes answer 404, as vLLM registers none for it; "
        "auto, generate and draft serve the generating routes and no scoring routes.",
    )
    embedding_dimension: int = Field(
        4096,
        ge=1,
        le=65_536,
        description="Length of the vectors /v1/embeddings and /pooling return.",
    )
    cost_per_hour: float | None = Field(
        None,
        ge=0.0,
        description="What one instance of this setup costs per hour (any currency), for the "
        "cost per million output tokens of llmsim simulate: a profile or a fleet pool can "
        "carry its hardware's price. Unset: the simulate command's --cost-per-hour, if any.",
    )
