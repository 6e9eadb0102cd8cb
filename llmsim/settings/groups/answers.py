"""How answers are made: generated, chosen from rules, replayed or forwarded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_settings import NoDecode

from llmsim.settings.field_types import Duration, existing_file, http_url, load_responses_input
from llmsim.settings.responses import ResponseRules


class AnswerFields(BaseModel):
    """How answers are made: generated, chosen from rules, replayed or forwarded."""

    # -- generation -------------------------------------------------------------
    mode: Literal["echo", "random"] = Field(
        "random",
        description="echo: answer with the last user message (chat) or the prompt (completions); "
        "random: answer with natural sentences.",
    )
    seed: int | None = Field(
        None, description="Seed for reproducible random outputs (unset: different on every run)."
    )
    tool_call_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="With tool_choice auto, how often a turn calls tools instead of answering "
        "in text (never right after a tool result; a request's seed makes it reproducible).",
    )

    # -- chosen answers ---------------------------------------------------------
    responses: Annotated[ResponseRules | None, NoDecode, BeforeValidator(load_responses_input)] = (
        Field(
            None,
            description="Response rules: a TOML file of ordered rules (or a responses table in a "
            "profile), or builtin:tasks for answers that fit the request type. Replaceable at run "
            "time via /admin/responses.",
        )
    )
    dataset: Annotated[Path | None, AfterValidator(existing_file)] = Field(
        None,
        description="Conversation dataset (ShareGPT JSON/JSONL or OpenAI chat JSONL): a known "
        "conversation gets its recorded answer; random mode draws answers from its assistant "
        "turns.",
    )
    replay: Annotated[Path | None, AfterValidator(existing_file)] = Field(
        None,
        description="A recording made by `llmsim record`: matching requests get the recorded "
        "answer, paced by the recorded time to first token and inter-token gaps.",
    )
    replay_speed: float = Field(
        1.0,
        gt=0.0,
        le=1000.0,
        description="Replay the recorded timing this many times faster (0.5: twice as slow).",
    )
    replay_strict: bool = Field(
        False,
        description="Answer requests that match no recording with 404 instead of the "
        "configured mode.",
    )
    upstream: Annotated[str | None, AfterValidator(http_url)] = Field(
        None,
        description="Forward chat and completions requests to this OpenAI-compatible server "
        "(e.g. a real vLLM) and simulate only when it fails or times out.",
    )
    upstream_timeout: Duration = Field(
        "10s",  # type: ignore[assignment]  # validated like user input; a bare 10 means 10 ms
        description="How long to wait for the upstream's answer (or the start of its stream) "
        "before simulating instead.",
    )
