"""The reasoning parsers vLLM registers, and which of them think only when asked to.

vLLM checks ``--reasoning-parser`` against its registry at start-up; llmsim checks it
against the same names (vLLM 0.34.0). A parser names how a model marks its thinking, and
the models differ in one thing a simulator can show: whether they think unless told not to
(``chat_template_kwargs: {"enable_thinking": false}``, Qwen3's switch) or only when told to
(``{"thinking": true}``, as DeepSeek-V3.1's and Granite's templates take it).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
"""The efforts a chat request may ask for (vLLM's ``reasoning_effort``)."""
REASONING_EFFORTS: tuple[str, ...] = get_args(ReasoningEffort)

REASONING_PARSERS = (
    "deepseek_r1",
    "deepseek_v3",
    "deepseek_v4",
    "poolside_v1",
    "cohere_command3",
    "cohere_command4",
    "ernie45",
    "gemma4",
    "glm45",
    "glm47",
    "openai_gptoss",
    "granite",
    "holo2",
    "hunyuan_a13b",
    "hy_v3",
    "kimi_k2",
    "kimi_k3",
    "mimo",
    "minimax_m2",
    "minimax_m2_append_think",
    "minimax_m3",
    "mistral",
    "nemotron_v3",
    "olmo3",
    "qwen3",
    "seed_oss",
    "step3",
    "step3p5",
    "inkling",
    "solar_open2",
)
"""vLLM's registered reasoning parser names, in its registry's order."""

THINKING_ON_REQUEST = frozenset({"deepseek_v3", "granite", "holo2"})
"""Parsers of models that think only when the request's chat template kwargs say so."""


def invalid_reasoning_parser(name: str) -> str:
    """vLLM's start-up message for a name it does not know."""
    return f"invalid reasoning parser: {name} (chose from {{ {','.join(REASONING_PARSERS)} }})"


def thinks(parser: str, template_kwargs: object) -> bool:
    """Whether a model behind ``parser`` thinks for a request with these chat template
    kwargs: ``enable_thinking`` (or ``thinking``) decides when given, else the parser's
    model default."""
    default = parser not in THINKING_ON_REQUEST
    if not isinstance(template_kwargs, dict):
        return default
    for key in ("enable_thinking", "thinking"):
        if key in template_kwargs:
            return bool(template_kwargs[key])
    return default


def check_generation_override(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``max_new_tokens`` becomes every request's ``max_tokens`` limit: a positive integer."""
    tokens = (value or {}).get("max_new_tokens")
    if tokens is not None and (type(tokens) is not int or tokens < 1):
        raise ValueError(f"max_new_tokens must be a positive integer, got {tokens!r}")
    return value


def check_effort_map(value: dict[str, str] | None) -> dict[str, str] | None:
    """vLLM's start-up check of ``--reasoning-effort-map``: its keys are efforts."""
    if value and (unknown := sorted(set(value) - set(REASONING_EFFORTS))):
        raise ValueError(
            f"unknown efforts {unknown}; keys must be one of {list(REASONING_EFFORTS)}"
        )
    return value
