"""What one engine step is planned to compute, and what it produced."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmsim.engine.step.kv_cache import StepSequence


@dataclass(slots=True)
class Chunk:
    seq: StepSequence
    tokens: int
    decode: bool


@dataclass(slots=True)
class StepPlan:
    """The batch of one step and the counts its duration depends on."""

    chunks: list[Chunk] = field(default_factory=list)
    preempted: list[StepSequence] = field(default_factory=list)
    decode: int = 0
    """``d``: sequences computing one decode token."""
    prefill_tokens: int = 0
    """``p``: prompt (or recomputed) tokens computed in this step."""
    context_tokens: int = 0
    """``c``: tokens held by the decoding sequences."""
    prefix_queries: int = 0
    prefix_hits: int = 0
    lazy: int = 0
    """Lazy decoding sequences in the batch, counted in ``decode`` but not in ``chunks``."""

    @property
    def num_tokens(self) -> int:
        return self.decode + self.prefill_tokens

    @property
    def empty(self) -> bool:
        return not self.chunks and not self.lazy


@dataclass(slots=True)
class StepResult:
    emitted: list[StepSequence] = field(default_factory=list)
    """Sequences that produced one token at the end of the step."""
    finished: list[StepSequence] = field(default_factory=list)
    """Sequences that produced their last token (or had none to produce)."""
    counts: list[int] | None = None
    """A decode run's result: the tokens each emitted sequence produced (None: one each)."""
    segments: list[tuple[int, int]] = field(default_factory=list)
    """A decode run's result: (tokens per step, steps) in order, as sequences left."""
    lazy: int = 0
    """Lazy sequences that also produced one token each, not listed in ``emitted``."""
    lazy_previous: float = 0.0
    """When the lazy sequences produced their token before this one."""


@dataclass(frozen=True, slots=True)
class Chunking:
    """How prompts are split over steps (vLLM's chunked-prefill flags)."""

    enabled: bool = True
    """Off (``--no-enable-chunked-prefill``): a prompt that does not fit the step's budget
    waits for a step where it does, instead of starting with a chunk."""
    long_prefill: int = 0
    """``--long-prefill-token-threshold``: the most prompt tokens one sequence computes in a
    step while others want the budget too (0: no cap)."""
    adaptive: bool = False
    """``--long-prefill-token-threshold-adaptive``: the cap never below a fair share of the
    budget (budget / sequences running and waiting)."""

    def cap(self, budget: int, sequences: int) -> int:
        """The cap of a step with ``sequences`` running and waiting (0: none)."""
        if not (self.enabled and self.long_prefill) or sequences <= 1:
            return 0  # alone, a long prompt starves nobody
        return max(self.long_prefill, budget // sequences) if self.adaptive else self.long_prefill
