"""What a handler hands the engine (:class:`GenerationRequest`) and the errors of resolving it.

Plain data with no engine state, so the API layer can build requests without the engine's code.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

from llmsim.engine.answer import Answer
from llmsim.engine.timing import TimingOverride


class UnknownModelError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class ContextLengthError(Exception):
    """Prompt plus requested output does not fit the context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
        super().__init__(prompt_tokens, max_tokens, max_model_len)
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's ``model`` field resolved to."""

    name: str
    adapter: str | None


@dataclass(frozen=True, slots=True)
class PromptInput:
    token_count: int
    echo_text: str
    token_ids: Seq[int] | None = None
    """The prompt's token ids, given only when the engine asks for them (prefix caching)."""


@dataclass(slots=True)
class GenerationRequest:
    """What a handler asks the engine for. Not frozen: a frozen dataclass pays a
    ``object.__setattr__`` call per field in ``__init__``, and one is built per request."""

    request_id: str
    target: Target
    prompts: Seq[PromptInput]
    n: int = 1
    max_tokens: int | None = None
    ignore_eos: bool = False
    stop: Seq[str] = ()
    seed: int | None = None
    answer: Answer | None = None
    """A chosen answer (tools, structured output, rules); None to use the generation mode."""
    timing: TimingOverride | None = None
    """This request's own TTFT/ITL (a rule's override, a recording's pace); None: configured."""
    kv_transfer_delay: float | None = None
    """P/D decode side: the prompt's KV cache arrives after this long instead of a prefill."""
    reasoning: bool = False
    """Each answer starts with a thought (a reasoning parser is set and the request thinks)."""
    arrival: float | None = None
    """``time.monotonic()`` when the HTTP handler started, before the body was read and
    tokenized, so queue time and TTFT count from where a client's clock starts; None: now."""
    priority: int = 0
    """Lower is served first with ``--scheduling-policy priority``; ignored with ``fcfs``."""


def base_targets(served: list[str]) -> dict[str | None, Target]:
    """What each name of the base model (and no name at all) resolves to, made once."""
    targets: dict[str | None, Target] = {name: Target(name, None) for name in served}
    targets[None] = targets[""] = Target(served[0], None)
    return targets
