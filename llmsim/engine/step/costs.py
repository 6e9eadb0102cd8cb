"""How long one engine step lasts, from what it computes; and what a request waits before it.

``step = inter_token_latency + (d - 1) * decode_time_per_sequence + p * prefill_time_per_token
+ c * context_time_per_token``, with ``d`` decoding sequences, ``p`` prompt tokens computed and
``c`` context tokens held by the decoding sequences. A lone stream therefore sees exactly the
configured inter-token latency, and a prompt joining a batch lengthens its steps by its own
tokens' compute only. The front end (HTTP, tokenization, scheduling) is not a step cost:
it delays the one request it belongs to before it reaches the engine (:class:`FrontEnd`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmsim.engine.step.plan import StepPlan
from llmsim.engine.timing import JITTER_CLAMP
from llmsim.settings.model import Settings


@dataclass(frozen=True, slots=True)
class StepCosts:
    inter_token_latency: float = 0.0
    inter_token_latency_std_dev: float = 0.0
    decode_time_per_sequence: float = 0.0
    prefill_time_per_token: float = 0.0
    context_time_per_token: float = 0.0
    frontend_latency: float = 0.0
    """Per request, before the engine: added to its arrival, never to a step."""
    frontend_serial_time: float = 0.0
    """Per request, the front end's time that requests take one at a time."""
    frontend_time_per_running_request: float = 0.0
    """Per request, for each request the engine runs when it would reach the engine: the
    front end streams their tokens, and a new request's handling waits behind that work."""

    @classmethod
    def from_settings(cls, settings: Settings) -> StepCosts:
        return cls(
            inter_token_latency=settings.inter_token_latency,
            inter_token_latency_std_dev=settings.inter_token_latency_std_dev,
            decode_time_per_sequence=settings.decode_time_per_sequence,
            prefill_time_per_token=settings.prefill_time_per_token,
            context_time_per_token=settings.context_time_per_token,
            frontend_latency=settings.frontend_latency,
            frontend_serial_time=settings.frontend_serial_time,
            frontend_time_per_running_request=settings.frontend_time_per_running_request,
        )

    def mean_duration(self, decode: int, prefill_tokens: int, context_tokens: int) -> float:
        """The unjittered step time for a batch of these counts."""
        return (
            self.inter_token_latency
            + max(decode - 1, 0) * self.decode_time_per_sequence
            + prefill_tokens * self.prefill_time_per_token
            + context_tokens * self.context_time_per_token
        )

    def duration(self, plan: StepPlan, rng: random.Random | None = None) -> float:
        """The step's time; the inter-token-latency term is jittered when a std-dev is set."""
        duration = self.mean_duration(plan.decode, plan.prefill_tokens, plan.context_tokens)
        mean, std = self.inter_token_latency, self.inter_token_latency_std_dev
        if rng is not None and std > 0.0 and mean > 0.0:
            sample = rng.gauss(mean, std)
            sample = min(max(sample, mean * (1 - JITTER_CLAMP)), mean * (1 + JITTER_CLAMP))
            duration += sample - mean
        return duration


class FrontEnd:
    """When each request reaches the engine: after the requests ahead of it passed the
    front end's serial part one at a time, then its own serial time and fixed latency.

    Requests must be entered in the order they arrive.
    """

    __slots__ = ("_free_at",)

    def __init__(self) -> None:
        self._free_at = float("-inf")

    def entry(self, arrival: float, costs: StepCosts) -> float:
        """The time a request arriving at ``arrival`` joins the engine's waiting queue."""
        serial = costs.frontend_serial_time
        if serial <= 0.0:
            return arrival + costs.frontend_latency
        passed = max(arrival, self._free_at) + serial
        self._free_at = passed
        return passed + costs.frontend_latency

    @staticmethod
    def load_delay(running: int, costs: StepCosts) -> float:
        """The further wait of a request that would reach the engine while ``running``
        requests stream their tokens through the front end."""
        return running * costs.frontend_time_per_running_request
