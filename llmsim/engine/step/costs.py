"""How long one engine step lasts, from what it computes.

``step = inter_token_latency + (d - 1) * decode_time_per_sequence + p * prefill_time_per_token
+ c * context_time_per_token (+ prefill_overhead if p > 0)``, with ``d`` decoding sequences,
``p`` prompt tokens computed and ``c`` context tokens held by the decoding sequences. A lone
stream therefore sees exactly the configured inter-token latency.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmsim.engine.step.step_scheduler import StepPlan
from llmsim.engine.timing import JITTER_CLAMP
from llmsim.settings.model import Settings


@dataclass(frozen=True, slots=True)
class StepCosts:
    inter_token_latency: float = 0.0
    inter_token_latency_std_dev: float = 0.0
    decode_time_per_sequence: float = 0.0
    prefill_time_per_token: float = 0.0
    prefill_overhead: float = 0.0
    context_time_per_token: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> StepCosts:
        return cls(
            inter_token_latency=settings.inter_token_latency,
            inter_token_latency_std_dev=settings.inter_token_latency_std_dev,
            decode_time_per_sequence=settings.decode_time_per_sequence,
            prefill_time_per_token=settings.prefill_time_per_token,
            prefill_overhead=settings.prefill_overhead,
            context_time_per_token=settings.context_time_per_token,
        )

    def mean_duration(self, decode: int, prefill_tokens: int, context_tokens: int) -> float:
        """The unjittered step time for a batch of these counts."""
        duration = (
            self.inter_token_latency
            + max(decode - 1, 0) * self.decode_time_per_sequence
            + prefill_tokens * self.prefill_time_per_token
            + context_tokens * self.context_time_per_token
        )
        if prefill_tokens > 0:
            duration += self.prefill_overhead
        return duration

    def duration(self, plan: StepPlan, rng: random.Random | None = None) -> float:
        """The step's time; the inter-token-latency term is jittered when a std-dev is set."""
        duration = self.mean_duration(plan.decode, plan.prefill_tokens, plan.context_tokens)
        mean, std = self.inter_token_latency, self.inter_token_latency_std_dev
        if rng is not None and std > 0.0 and mean > 0.0:
            sample = rng.gauss(mean, std)
            sample = min(max(sample, mean * (1 - JITTER_CLAMP)), mean * (1 + JITTER_CLAMP))
            duration += sample - mean
        return duration
