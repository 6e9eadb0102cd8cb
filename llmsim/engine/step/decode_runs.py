"""Runs of decode steps applied at once (zero latency): the block pool ends as step by step.

When every running sequence decodes one token a step and nothing else can change the batch,
the scheduler applies many steps in one call (:meth:`StepScheduler.run_decode_steps`). These
are its two ways of keeping the KV cache as the steps one by one would leave it.
"""

from __future__ import annotations

from collections.abc import Callable

from llmsim.engine.step.kv_cache import KVCacheManager, StepSequence
from llmsim.engine.step.plan import StepResult


def run_quietly(
    kv: KVCacheManager, running: list[StepSequence], steps: int, now: float
) -> StepResult:
    """A decode run for a pool nobody listens to, one sequence at a time: each takes the
    blocks its tokens open in one go and defers the names of those they fill. The cache
    ends up as step by step would leave it, up to which free block each sequence got."""
    pool, size, naming = kv.pool, kv.block_size, kv.enable_caching
    defer = kv.names.defer
    finished: list[StepSequence] = []
    counts: list[int] = []
    for seq in running:
        sequence = seq.sequence
        total = len(sequence.output)
        count = min(steps, total - sequence.generated)
        counts.append(count)
        end = seq.num_computed + count
        blocks = seq.blocks
        needed = -(-end // size) - len(blocks)
        if needed > 0:
            pool.allocate_into(blocks, needed)
        full = end // size
        if naming and full > seq.num_cached_blocks and seq.prompt_ids is not None:
            run = seq.deferred
            if run is not None and run.end == seq.num_cached_blocks:  # the usual case
                pool.num_deferred += full - run.end
                run.end = seq.num_cached_blocks = full
            else:
                defer(seq, full)
        seq.num_computed = end
        generated = sequence.generated = sequence.generated + count
        seq.previous_token_at = now if count > 1 else sequence.last_token_at
        sequence.last_token_at = now
        if generated >= total:
            finished.append(seq)
    return StepResult(emitted=running, finished=finished, counts=counts)


def advance_reporting(
    kv: KVCacheManager,
    running: list[StepSequence],
    base: list[int],
    counts: list[int],
    steps: int,
    step_finished: Callable[[], None] | None,
) -> None:
    """Block allocation and caching of a decode run through :meth:`KVCacheManager.allocate`,
    step by step where a block starts or fills, with the listener hearing every step end."""
    size = kv.block_size
    touches: dict[int, list[int]] = {}
    for index, start in enumerate(base):
        # step j computes token start + j - 1: it may start a block, or fill one to cache
        last = counts[index] + 1
        js = set(range((-start) % size + 1, last, size))
        if kv.enable_caching and running[index].prompt_ids is not None:
            js.update(range((-start - 1) % size + 1, last, size))
        for j in js:
            touches.setdefault(j, []).append(index)
    done = 0
    for j in sorted(touches):
        if step_finished is not None:
            for _ in range(j - 1 - done):
                step_finished()
        for index in sorted(touches[j]):
            seq = running[index]
            seq.num_computed = base[index] + j - 1
            if not kv.allocate(seq, 1):  # pragma: no cover - decode_repeats checked room
                raise RuntimeError("decode run out of blocks")
        if step_finished is not None:
            step_finished()
        done = j
    if step_finished is not None:
        for _ in range(steps - done):
            step_finished()
