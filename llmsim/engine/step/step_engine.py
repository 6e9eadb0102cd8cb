"""The step engine's state machine, free of asyncio: drive it with any clock.

``plan, duration = engine.begin_step(now)`` decides the batch and how long it takes;
``engine.end_step(plan, now + duration)`` applies it. The asyncio loop
(:mod:`llmsim.engine.step.step_loop`) sleeps in between; unit tests and the documentation
plots just add the duration to a virtual clock.
"""

from __future__ import annotations

import random
from typing import Protocol

from llmsim.engine.block_hash import BlockHasher, sha256_pickle_hasher
from llmsim.engine.kv_listener import KVCacheListener, NullKVCacheListener
from llmsim.engine.sequence import Sequence
from llmsim.engine.step.block_pool import BlockPool
from llmsim.engine.step.cadence import PrefillCadence
from llmsim.engine.step.costs import StepCosts
from llmsim.engine.step.kv_cache import KVCacheManager, StepSequence
from llmsim.engine.step.plan import Chunking, StepPlan, StepResult
from llmsim.engine.step.residency import BlockResidency
from llmsim.engine.step.step_scheduler import StepScheduler
from llmsim.settings.model import Settings


class StepObserver(Protocol):
    def step_done(self, plan: StepPlan, duration: float) -> None:
        """One step ran: its batch, preemptions and prefix-cache lookups, and its duration."""

    def decode_run_done(self, segments: list[tuple[int, int]]) -> None:
        """Zero-length decode steps ran at once: ``(tokens per step, steps)`` in order."""


def num_kv_blocks(kv_cache_size: int, block_size: int) -> int:
    """Blocks for ``kv_cache_size`` tokens, rounded up so a full-length sequence always fits."""
    return max(-(-kv_cache_size // block_size), 1)


class StepEngine:
    def __init__(
        self,
        *,
        num_blocks: int,
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        enable_prefix_caching: bool = True,
        costs: StepCosts | None = None,
        block_hasher: BlockHasher | None = None,
        kv_listener: KVCacheListener | None = None,
        rng: random.Random | None = None,
        by_priority: bool = False,
        chunking: Chunking | None = None,
    ) -> None:
        self.listener: KVCacheListener = kv_listener or NullKVCacheListener()
        self.pool = BlockPool(num_blocks, block_size, self.listener)
        self.kv = KVCacheManager(
            self.pool,
            enable_caching=enable_prefix_caching,
            hasher=block_hasher or sha256_pickle_hasher,
        )
        self.scheduler = StepScheduler(
            self.kv,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            by_priority=by_priority,
            chunking=chunking,
        )
        self.costs = costs or StepCosts()
        self.rng = rng
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.steps = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        block_hasher: BlockHasher | None = None,
        kv_listener: KVCacheListener | None = None,
        rng: random.Random | None = None,
    ) -> StepEngine:
        engine = cls(
            num_blocks=num_kv_blocks(settings.kv_cache_size, settings.block_size),
            block_size=settings.block_size,
            max_num_seqs=settings.running_limit,
            max_num_batched_tokens=settings.step_token_budget,
            enable_prefix_caching=settings.enable_prefix_caching,
            costs=StepCosts.from_settings(settings),
            block_hasher=block_hasher,
            kv_listener=kv_listener,
            rng=rng,
            by_priority=settings.scheduling_policy == "priority",
            chunking=Chunking(
                settings.enable_chunked_prefill,
                settings.long_prefill_token_threshold,
                settings.long_prefill_token_threshold_adaptive,
            ),
        )
        engine.scheduler.watermark_blocks = int(settings.watermark * engine.pool.num_blocks)
        engine.scheduler.cadence = PrefillCadence(settings.prefill_schedule_interval)
        engine.scheduler.reserve_full = settings.scheduler_reserve_full_isl
        if settings.enable_prefix_caching and settings.scheduling_policy == "fcfs":
            engine.scheduler.cache_aware_window = settings.cache_aware_admission_window
            engine.scheduler.cache_aware_threshold = settings.cache_aware_admission_threshold
        if settings.kv_cache_metrics:
            engine.pool.residency = BlockResidency(settings.kv_cache_metrics_sample, rng=rng)
        return engine

    # -- views ------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return self.pool.block_size

    @property
    def enable_prefix_caching(self) -> bool:
        return self.kv.enable_caching

    @property
    def num_running(self) -> int:
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    @property
    def num_preemptions(self) -> int:
        return self.scheduler.num_preemptions

    def usage(self) -> float:
        """Blocks in use over all blocks (cached free blocks count as free)."""
        return self.pool.usage()

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def next_ready(self) -> float | None:
        """When a sequence waiting on time (a KV transfer, a timing override) can go on."""
        return self.scheduler.next_ready()

    # -- membership -------------------------------------------------------------
    def add(self, sequence: Sequence) -> StepSequence:
        """Queue a sequence admitted by the request scheduler."""
        ids = sequence.prompt_token_ids if self.kv.enable_caching else None
        if ids is not None and len(ids) != sequence.prompt_tokens:
            ids = None  # ids that do not match the count cannot name blocks
        seq = StepSequence(sequence, ids)
        if ids is not None and sequence.output_ids is not None:
            seq.output_ids = sequence.output_ids  # every generated id known already
        self.scheduler.add(seq)
        return seq

    def abort(self, seq: StepSequence) -> None:
        """Drop a sequence and free its blocks at once."""
        self.scheduler.remove(seq)

    def preempt_running(self) -> int:
        """Preempt every running sequence between steps (their KV cache is being dropped);
        return how many. They recompute prompt and tokens when scheduled again."""
        return self.scheduler.preempt_running()

    def attach_kv(self, listener: KVCacheListener, hasher: BlockHasher) -> None:
        """Use this listener and block hasher from now on (wired once, before any request)."""
        self.listener = listener
        self.pool.listener = listener
        self.kv.hasher = hasher

    def reset_prefix_cache(self) -> int:
        """Drop the whole prefix cache (sleep mode, reset); report ``all_blocks_cleared``.

        The listener hears the end of a step at once, so a subscriber learns of the clear
        now rather than at the next step (an idle or sleeping engine has none).
        """
        count = self.kv.clear_cache()
        self.listener.step_finished()
        return count

    # -- the step ---------------------------------------------------------------
    def begin_step(self, now: float, entered_by: float | None = None) -> tuple[StepPlan, float]:
        """Plan a step starting at ``now`` from the sequences that reached the engine by
        ``entered_by`` (default ``now``)."""
        plan = self.scheduler.schedule(now, entered_by)
        duration = 0.0 if plan.empty else self.costs.duration(plan, self.rng)
        return plan, duration

    def end_step(self, plan: StepPlan, now: float) -> StepResult:
        result = self.scheduler.complete(plan, now)
        self.prefix_queries += plan.prefix_queries
        self.prefix_hits += plan.prefix_hits
        self.steps += 1
        self.listener.step_finished()
        return result

    def repeat_decode(self, plan: StepPlan, now: float, limit: int) -> tuple[int, StepResult]:
        """After a zero-length pure-decode step ending at ``now``, apply up to ``limit`` more
        identical ones at once (exact block, cache and step accounting); return how many ran
        and their result (each emitted sequence produced that many tokens)."""
        costs = self.costs
        if costs.inter_token_latency or costs.decode_time_per_sequence:
            return 0, StepResult()
        if costs.context_time_per_token:
            return 0, StepResult()
        steps = self.scheduler.decode_repeats(plan, limit)
        if steps == 0:
            return 0, StepResult()
        # A pool that reports nothing has a null listener: its step ends need no calls.
        step_finished = self.listener.step_finished if self.pool.reports else None
        result = self.scheduler.run_decode_steps(plan, steps, now, step_finished)
        self.steps += steps
        return steps, result
