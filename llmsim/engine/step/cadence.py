"""vLLM's ``--prefill-schedule-interval``: prompts are computed only every N steps.

vLLM 0.34 holds prefill (new admissions, and the chunks of prompts under way) until N
executed steps have passed since the last step that carried some, so the sequences that
decode run longer stretches undisturbed. It holds only while some running sequence decodes,
and not while the queue is more than a releasing step can take (that step left sequences
waiting): otherwise a busy engine would compute one budget of prompts per N steps and its
queue would grow without bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from llmsim.engine.step.kv_cache import StepSequence
from llmsim.engine.step.plan import StepPlan


def prefilling(seq: StepSequence) -> bool:
    """More than its next token is left to compute: a prompt (or a recomputed one)."""
    return seq.num_computed < seq.num_tokens - 1


@dataclass(slots=True)
class PrefillCadence:
    interval: int = 1
    executed: int = 0
    """Steps that computed tokens."""
    last_prefill: int = field(init=False)
    """The executed step that last carried prefill."""
    capacity_bound: bool = False
    """The last step that released prefill left sequences waiting."""

    def __post_init__(self) -> None:
        self.last_prefill = -self.interval  # the first step is never held

    def holds(self, running: Iterable[StepSequence]) -> bool:
        """Whether the step about to be planned computes no prompt tokens."""
        if self.interval <= 1 or self.capacity_bound:
            return False
        if self.executed + 1 - self.last_prefill >= self.interval:
            return False
        return any(not prefilling(seq) for seq in running)

    def planned(self, plan: StepPlan, held: bool, waiting: int) -> None:
        """Count the step just planned."""
        if plan.num_tokens:
            self.executed += 1
            if plan.prefill_tokens:
                self.last_prefill = self.executed
        if not held:
            self.capacity_bound = waiting > 0
