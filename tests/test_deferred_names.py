"""Deferred names for decoded blocks: a pool nobody listens to finds what one naming every
block at once finds, through conversations, shared prefixes, preemption, eviction and resets."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from llmsim.engine.block_hash import output_token_id
from llmsim.engine.sequence import Sequence
from llmsim.engine.step import StepEngine
from tests.test_step_engine import Recorder, make


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@dataclass
class Trace:
    hits: list[int]
    """Prefix-cache hits of every step."""
    usage: list[float]
    preemptions: int
    generated: list[int]
    cached_tokens: list[int]
    free_names: list[bytes | None]
    num_cached: int


def scenario(
    loop: asyncio.AbstractEventLoop, seed: int
) -> tuple[dict[int, list[Sequence]], int, set[int]]:
    """Random arrivals: new prompts, prompts sharing a system prefix, and next turns of
    earlier conversations (their prompt holds an earlier answer, finished or not)."""
    rng = random.Random(seed)
    system = [rng.randrange(1000, 2000) for _ in range(rng.choice([0, 6, 13]))]
    arrivals: dict[int, list[Sequence]] = {}
    earlier: list[Sequence] = []
    for number in range(rng.randrange(8, 16)):
        step = rng.randrange(0, 90)
        kind = rng.random()
        name = f"s{number}"
        if earlier and kind < 0.4:
            turn = rng.choice(earlier)
            upto = rng.randrange(0, len(turn.output) + 1)
            answer = [output_token_id(text) for text in turn.output[:upto]]
            assert turn.prompt_token_ids is not None
            ids = [*turn.prompt_token_ids, *answer, rng.randrange(3000, 4000)]
        elif kind < 0.7:
            ids = [*system, *(rng.randrange(2000, 3000) for _ in range(rng.randrange(1, 12)))]
        else:
            ids = [rng.randrange(4000, 9000) for _ in range(rng.randrange(1, 30))]
        sequence = make(
            loop, name, ids, rng.randrange(1, 40), adapter=rng.choice([None, None, "x"])
        )
        if rng.random() < 0.5:
            sequence.output = [f" t{rng.randrange(8)}" for _ in sequence.output]  # repeats
        arrivals.setdefault(step, []).append(sequence)
        earlier.append(sequence)
    resets = {rng.randrange(10, 90)} if rng.random() < 0.3 else set()
    return arrivals, rng.choice([4, 8, 16, 32]), resets


def run(
    loop: asyncio.AbstractEventLoop, seed: int, *, listen: bool, run_limit: int, block_size: int
) -> Trace:
    arrivals, blocks_per_4, resets = scenario(loop, seed)
    sequences = [s for group in arrivals.values() for s in group]
    engine = StepEngine(
        num_blocks=blocks_per_4 * 4 // block_size + 12,
        block_size=block_size,
        max_num_batched_tokens=24,
        max_num_seqs=6,
        kv_listener=Recorder() if listen else None,
    )
    trace = Trace([], [], 0, [], [], [], 0)
    step = 0
    while step < 2000:
        for sequence in arrivals.pop(step, []):
            engine.add(sequence)
        if step in resets:
            engine.reset_prefix_cache()
        if not engine.has_work() and not arrivals:
            break
        plan, _ = engine.begin_step(0.0)
        engine.end_step(plan, 0.0)
        trace.hits.append(plan.prefix_hits)
        trace.usage.append(engine.usage())
        step += 1
        # runs of the same plan follow one another, as on the event loop, until one stops
        while run_limit and not any(
            s in arrivals or s in resets for s in range(step, step + run_limit + 1)
        ):
            steps, _ = engine.repeat_decode(plan, 0.0, run_limit)
            trace.hits.extend([0] * steps)
            trace.usage.extend([engine.usage()] * steps)
            step += steps
            if not steps:
                break
    engine.kv.names.resolve_all()
    pool = engine.pool
    trace.preemptions = engine.num_preemptions
    trace.generated = [s.generated for s in sequences]
    trace.cached_tokens = [s.cached_tokens for s in sequences]
    trace.free_names = [pool.blocks[index].block_hash for index in pool.free_order()]
    trace.num_cached = pool.num_cached
    return trace


@pytest.mark.parametrize("block_size", [2, 4, 16])
def test_deferred_names_change_no_lookup(loop: asyncio.AbstractEventLoop, block_size: int) -> None:
    hits = preempted = 0
    for seed in range(40):
        eager = run(loop, seed, listen=True, run_limit=0, block_size=block_size)
        for limit in (0, 3, 7):
            quiet = run(loop, seed, listen=False, run_limit=limit, block_size=block_size)
            assert quiet.cached_tokens == eager.cached_tokens, seed
            assert quiet.generated == eager.generated, seed
            assert quiet.preemptions == eager.preemptions, seed
            assert quiet.free_names == eager.free_names, seed
            assert quiet.num_cached == eager.num_cached, seed
            if limit == 0:
                assert quiet.hits == eager.hits, seed
                assert quiet.usage == eager.usage, seed
        hits += sum(eager.cached_tokens)
        preempted += eager.preemptions
    assert hits > 0
    assert preempted > 0


def test_a_long_run_keeps_no_deferred_names_for_evicted_blocks(
    loop: asyncio.AbstractEventLoop,
) -> None:
    engine = StepEngine(num_blocks=40, block_size=4)
    for number in range(300):
        engine.add(make(loop, f"s{number}", [number, 1, 2, 3, 4, 5], 30))
        while engine.has_work():
            plan, _ = engine.begin_step(0.0)
            engine.end_step(plan, 0.0)
    runs = [run for runs in engine.kv.names._by_parent.values() for run in runs]
    assert 0 < len(runs) <= 40  # 300 sequences ran; only the runs still holding blocks stay
    alive = [block for run in runs for block in run.blocks if block.deferred is run]
    assert 0 < engine.pool.num_deferred == len(alive) <= 40
