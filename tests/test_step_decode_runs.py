"""Zero-latency decode runs: many identical steps applied at once, exactly as step by step."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from llmsim.engine.block_hash import output_token_id
from llmsim.engine.sequence import Sequence
from llmsim.engine.step import StepCosts, StepEngine, StepSequence
from llmsim.engine.timing import TimingOverride
from tests.test_step_engine import Recorder, make


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@dataclass
class Drive:
    events: list[tuple[object, ...]]
    free_order: list[int]
    outcome: list[tuple[str, int, list[list[int]]]]
    """Each sequence's id, tokens generated and the block ids it held at each free."""
    steps: int
    runs: int
    cached_tokens: list[int]
    free_names: list[bytes | None]
    """The names along the free queue once every deferred name is computed."""
    num_cached: int
    step_tokens: list[int]
    """Tokens of every step, as ``vllm:iteration_tokens_total`` sees them."""


def conversation(loop: asyncio.AbstractEventLoop, name: str, turn: Sequence, upto: int) -> Sequence:
    """The next turn of ``turn``'s conversation: its prompt, its first ``upto`` output tokens."""
    assert turn.prompt_token_ids is not None
    ids = [*turn.prompt_token_ids, *(output_token_id(text) for text in turn.output[:upto])]
    return make(loop, name, [*ids, 7], 9)


def drive(
    loop: asyncio.AbstractEventLoop,
    *,
    run_limit: int,
    num_blocks: int,
    caching: bool = True,
    listen: bool = True,
    block_size: int = 4,
    known_ids: bool = False,
) -> Drive:
    """Steps at virtual time 0 with arrivals in between; ``run_limit`` > 0 uses decode runs.

    ``listen`` attaches a KV-event listener (the pool then reports every step and names
    every block at once); without one the runs take the quiet path and decoded blocks are
    named when a lookup needs them. ``known_ids`` gives every sequence its output ids up
    front, as random answers have them. Two later turns of ``a``'s conversation look up
    blocks ``a`` generated, one while ``a`` is still running.
    """
    recorder = Recorder()
    engine = StepEngine(
        num_blocks=num_blocks,
        block_size=block_size,
        max_num_batched_tokens=64,
        enable_prefix_caching=caching,
        kv_listener=recorder if listen else None,
    )
    shared = list(range(100, 110))
    first = make(loop, "a", [*shared, 1, 2], 37)
    arrivals: dict[int, list[Sequence]] = {
        0: [first, make(loop, "b", 9, 23, adapter="x")],
        5: [make(loop, "c", [*shared, 3], 41)],
        12: [make(loop, "d", 30, 19), make(loop, "e", shared, 5)],
        20: [conversation(loop, "h", first, 9)],
        40: [make(loop, "f", [*shared, 1, 2], 13)],
        60: [conversation(loop, "g", first, 37)],
    }
    sequences = [s for group in arrivals.values() for s in group]
    if known_ids:
        for sequence in sequences:
            sequence.output_ids = [output_token_id(text) for text in sequence.output]
    held: dict[str, list[list[int]]] = {}
    free = engine.kv.free

    def record_free(seq: StepSequence) -> None:  # the blocks each sequence held, at each free
        held.setdefault(seq.sequence.request_id, []).append([b.block_id for b in seq.blocks])
        free(seq)

    engine.kv.free = record_free  # type: ignore[method-assign]
    step = 0
    runs = 0
    step_tokens: list[int] = []
    while step < 500:
        for sequence in arrivals.pop(step, []):
            engine.add(sequence)
        if not engine.has_work() and not arrivals:
            break
        plan, duration = engine.begin_step(0.0)
        assert duration == 0.0
        engine.end_step(plan, 0.0)
        step_tokens.append(plan.num_tokens)
        step += 1
        # runs of the same plan follow one another, as on the event loop, until one stops
        while run_limit and not any(s in arrivals for s in range(step, step + run_limit + 1)):
            steps, result = engine.repeat_decode(plan, 0.0, run_limit)
            step_tokens.extend(tokens for tokens, count in result.segments for _ in range(count))
            step += steps
            runs += steps > 0
            if not steps:
                break
    outcome = [(s.request_id, s.generated, held[s.request_id]) for s in sequences]
    free_order = engine.pool.free_order()
    engine.kv.names.resolve_all()
    return Drive(
        events=recorder.events,
        free_order=free_order,
        outcome=outcome,
        steps=engine.steps,
        runs=runs,
        cached_tokens=[s.cached_tokens for s in sequences],
        free_names=[engine.pool.blocks[index].block_hash for index in free_order],
        num_cached=engine.pool.num_cached,
        step_tokens=step_tokens,
    )


@pytest.mark.parametrize("num_blocks", [64, 24, 16])
@pytest.mark.parametrize("caching", [True, False])
def test_decode_runs_match_single_steps(
    loop: asyncio.AbstractEventLoop, num_blocks: int, caching: bool
) -> None:
    single = drive(loop, run_limit=0, num_blocks=num_blocks, caching=caching)
    runs = drive(loop, run_limit=9, num_blocks=num_blocks, caching=caching)
    assert runs.runs > 0  # runs really happened
    assert runs.events == single.events
    assert runs.free_order == single.free_order
    assert runs.outcome == single.outcome
    assert runs.steps == single.steps
    assert runs.step_tokens == single.step_tokens  # sequences that finish mid-run leave
    assert runs.cached_tokens == single.cached_tokens
    if caching:
        assert any(single.cached_tokens[-2:])  # the later turns found a's generated blocks


@pytest.mark.parametrize("num_blocks", [64, 24, 16])
@pytest.mark.parametrize("block_size", [1, 2, 4, 16])
@pytest.mark.parametrize("known_ids", [True, False])
def test_deferred_names_find_what_names_at_once_find(
    loop: asyncio.AbstractEventLoop, num_blocks: int, block_size: int, known_ids: bool
) -> None:
    """Without a listener, decoded blocks are named when a lookup needs them, step by step
    or in runs: every lookup hits as often, every sequence generates as much, and the free
    queue ends up holding the same names in the same order as when every block is named at
    once (only which free block each sequence took may differ)."""
    blocks = num_blocks * 4 // block_size + (8 if block_size == 16 else 0)
    eager, single, runs = (
        drive(
            loop,
            run_limit=limit,
            num_blocks=blocks,
            listen=listen,
            block_size=block_size,
            known_ids=known_ids,
        )
        for listen, limit in ((True, 0), (False, 0), (False, 3))
    )
    assert runs.runs > 0
    assert single.events == runs.events == []  # nobody listened
    for quiet in (single, runs):
        assert quiet.cached_tokens == eager.cached_tokens
        assert [row[:2] for row in quiet.outcome] == [row[:2] for row in eager.outcome]
        assert quiet.steps == eager.steps
        assert quiet.free_names == eager.free_names
        assert quiet.num_cached == eager.num_cached
    assert any(name is not None for name in runs.free_names)


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
