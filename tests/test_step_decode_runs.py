"""Zero-latency decode runs: many identical steps applied at once, exactly as step by step."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from llmsim.engine.sequence import Sequence
from llmsim.engine.step import StepCosts, StepEngine, StepSequence
from llmsim.engine.timing import TimingOverride
from tests.test_step_engine import Recorder, make


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def drive(
    loop: asyncio.AbstractEventLoop, *, run_limit: int, num_blocks: int, caching: bool = True
) -> tuple[list[tuple[object, ...]], list[int], list[tuple[str, int, list[list[int]]]], int, int]:
    """Steps at virtual time 0 with arrivals in between; ``run_limit`` > 0 uses decode runs."""
    recorder = Recorder()
    engine = StepEngine(
        num_blocks=num_blocks,
        block_size=4,
        max_num_batched_tokens=64,
        enable_prefix_caching=caching,
        kv_listener=recorder,
    )
    shared = list(range(100, 110))
    arrivals: dict[int, list[Sequence]] = {
        0: [make(loop, "a", [*shared, 1, 2], 37), make(loop, "b", 9, 23, adapter="x")],
        5: [make(loop, "c", [*shared, 3], 41)],
        12: [make(loop, "d", 30, 19), make(loop, "e", shared, 5)],
        40: [make(loop, "f", [*shared, 1, 2], 13)],
    }
    sequences = [s for group in arrivals.values() for s in group]
    held: dict[str, list[list[int]]] = {}
    free = engine.kv.free

    def record_free(seq: StepSequence) -> None:  # the blocks each sequence held, at each free
        held.setdefault(seq.sequence.request_id, []).append([b.block_id for b in seq.blocks])
        free(seq)

    engine.kv.free = record_free  # type: ignore[method-assign]
    step = 0
    runs = 0
    while step < 500:
        for sequence in arrivals.pop(step, []):
            engine.add(sequence)
        if not engine.has_work() and not arrivals:
            break
        plan, duration = engine.begin_step(0.0)
        assert duration == 0.0
        engine.end_step(plan, 0.0)
        step += 1
        if run_limit and not any(s in arrivals for s in range(step, step + run_limit + 1)):
            steps, _ = engine.repeat_decode(plan, 0.0, run_limit)
            step += steps
            runs += steps > 0
    outcome = [(s.request_id, s.generated, held[s.request_id]) for s in sequences]
    return recorder.events, engine.pool.free_order(), outcome, engine.steps, runs


@pytest.mark.parametrize("num_blocks", [64, 24, 16])
@pytest.mark.parametrize("caching", [True, False])
def test_decode_runs_match_single_steps(
    loop: asyncio.AbstractEventLoop, num_blocks: int, caching: bool
) -> None:
    single = drive(loop, run_limit=0, num_blocks=num_blocks, caching=caching)
    runs = drive(loop, run_limit=9, num_blocks=num_blocks, caching=caching)
    assert runs[4] > 0  # runs really happened
    assert runs[:4] == single[:4]


def test_no_run_while_a_prompt_is_prefilling_or_waiting(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=64, block_size=4, max_num_batched_tokens=8)
    engine.add(make(loop, "a", 20, 10))
    plan, _ = engine.begin_step(0.0)
    engine.end_step(plan, 0.0)
    assert engine.repeat_decode(plan, 0.0, 10)[0] == 0  # still prefilling


def test_no_run_when_steps_take_time(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=64, block_size=4, costs=StepCosts(inter_token_latency=0.01))
    engine.add(make(loop, "a", 3, 10))
    for _ in range(2):
        plan, duration = engine.begin_step(0.0)
        engine.end_step(plan, duration)
    assert engine.repeat_decode(plan, 0.0, 10)[0] == 0


def test_no_run_while_a_timing_override_may_hold_tokens(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=64, block_size=4)
    sequence = make(loop, "a", 3, 10)
    sequence.timing = TimingOverride(inter_token_latency=0.0)
    engine.add(sequence)
    for _ in range(2):
        plan, _ = engine.begin_step(0.0)
        engine.end_step(plan, 0.0)
    assert sequence.generated == 2
    assert engine.repeat_decode(plan, 0.0, 10)[0] == 0
