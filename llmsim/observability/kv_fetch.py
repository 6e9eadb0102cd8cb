"""vLLM's ``vllm:num_requests_kv_fetch_by_stage``: where the P/D decode side's requests are in
receiving their prompt's KV cache.

vLLM registers it on a KV consumer (``kv_role`` ``kv_consumer`` or ``kv_both``). Here,
``in_progress`` counts the sequences receiving (their transfer delay running),
``waiting_to_start`` those the step model holds back until their prompt's blocks are free, and
``completed_waiting`` stays 0: a sequence whose KV arrived runs at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmsim.engine import Scheduler
    from llmsim.engine.step import StepEngine

STAGES = ("waiting_to_start", "in_progress", "completed_waiting")
"""vLLM's ``KV_FETCH_STAGES``, in its order."""

StageCounts = Callable[[], tuple[int, int]]
"""``(waiting_to_start, in_progress)`` at scrape time."""


def pacer_stages(scheduler: Scheduler) -> StageCounts:
    """The constant and per-token models: a decode-side sequence is receiving from its
    admission to its first token."""

    def counts() -> tuple[int, int]:
        receiving = sum(
            1
            for sequence in scheduler.running
            if sequence.kv_transfer_delay is not None and sequence.first_token_at is None
        )
        return 0, receiving

    return counts


def step_stages(engine: StepEngine) -> StageCounts:
    """The step model: queued until its prompt's blocks are free, then receiving."""
    scheduler = engine.scheduler

    def counts() -> tuple[int, int]:
        queued = sum(1 for seq in scheduler.waiting if seq.remote and not seq.scheduled)
        return queued, len(scheduler.receiving)

    return counts
