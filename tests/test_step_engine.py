"""The step engine in virtual time: exact batches, chunks, blocks, preemptions and cache hits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import pytest

from llmsim.engine.block_hash import (
    BlockHash,
    hash_block_chain,
    output_token_id,
    sha256_pickle_hasher,
)
from llmsim.engine.sequence import Sequence
from llmsim.engine.step import StepCosts, StepEngine, StepPlan, StepSequence, num_kv_blocks
from llmsim.engine.tokenizer import token_ids, tokenize


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make(
    loop: asyncio.AbstractEventLoop,
    name: str,
    prompt: Seq[int] | int,
    output: int,
    adapter: str | None = None,
) -> Sequence:
    ids = list(range(prompt)) if isinstance(prompt, int) else list(prompt)
    return Sequence(
        request_id=name,
        index=0,
        adapter=adapter,
        prompt_tokens=len(ids),
        output=[f" w{k}" for k in range(output)],
        natural_finish="length",
        stop_reason=None,
        max_tokens=output,
        n=1,
        arrival=0.0,
        admitted=loop.create_future(),
        prompt_token_ids=ids,
    )


@dataclass
class Recorder:
    """A KV-cache listener that keeps every call."""

    events: list[tuple[object, ...]] = field(default_factory=list)

    def block_stored(
        self,
        block_hashes: Seq[BlockHash],
        parent_block_hash: BlockHash | None,
        token_ids: Seq[int],
        block_size: int,
        lora_id: int | None,
        lora_name: str | None = None,
    ) -> None:
        stored = list(block_hashes), parent_block_hash, list(token_ids), block_size, lora_id
        self.events.append(("stored", *stored, lora_name))

    def block_removed(self, block_hashes: Seq[BlockHash]) -> None:
        self.events.append(("removed", list(block_hashes)))

    def all_blocks_cleared(self) -> None:
        self.events.append(("cleared",))

    def step_finished(self) -> None:
        self.events.append(("step",))

    def kinds(self) -> list[object]:
        return [event[0] for event in self.events if event[0] != "step"]


class Clock:
    """Drives an engine step by step in virtual time."""

    def __init__(self, engine: StepEngine) -> None:
        self.engine = engine
        self.now = 0.0
        self.plans: list[StepPlan] = []

    def step(self) -> StepPlan:
        plan, duration = self.engine.begin_step(self.now)
        self.now += duration
        self.engine.end_step(plan, self.now)
        self.plans.append(plan)
        return plan

    def run(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.engine.has_work():
                return
            self.step()
        raise AssertionError("the engine did not go idle")


def batch(plan: StepPlan) -> list[tuple[str, int]]:
    return [(chunk.seq.sequence.request_id, chunk.tokens) for chunk in plan.chunks]


ITL, PREFILL, DECODE, CONTEXT, FRONTEND = 0.02, 0.001, 0.005, 0.0001, 0.003
COSTS = StepCosts(
    inter_token_latency=ITL,
    decode_time_per_sequence=DECODE,
    prefill_time_per_token=PREFILL,
    context_time_per_token=CONTEXT,
    frontend_latency=FRONTEND,
)


# -- timing ------------------------------------------------------------------------
def test_a_lone_stream_sees_exactly_the_inter_token_latency(
    loop: asyncio.AbstractEventLoop,
) -> None:
    engine = StepEngine(num_blocks=64, costs=StepCosts(inter_token_latency=ITL))
    sequence = make(loop, "a", 40, 5)
    engine.add(sequence)
    clock = Clock(engine)
    clock.run()
    assert [batch(plan) for plan in clock.plans] == [[("a", 40)]] + [[("a", 1)]] * 4
    assert sequence.generated == 5
    assert sequence.first_token_at == pytest.approx(ITL)
    assert sequence.last_token_at == pytest.approx(5 * ITL)


def test_the_step_formula_counts_decodes_prefill_and_context(
    loop: asyncio.AbstractEventLoop,
) -> None:
    plan = StepPlan(decode=3, prefill_tokens=100, context_tokens=500)
    assert COSTS.duration(plan) == pytest.approx(ITL + 2 * DECODE + 100 * PREFILL + 500 * CONTEXT)
    assert COSTS.mean_duration(1, 0, 0) == pytest.approx(ITL + 0 * DECODE)
    # the front-end latency is per request, never part of a step
    assert COSTS.mean_duration(0, 10, 0) == pytest.approx(ITL + 10 * PREFILL)


def test_itl_grows_with_the_batch(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=256, costs=COSTS)
    for name in "abcd":
        engine.add(make(loop, name, 10, 20))
    clock = Clock(engine)
    first = clock.step()
    assert batch(first) == [(name, 10) for name in "abcd"]
    assert (first.decode, first.prefill_tokens) == (0, 40)
    start = clock.now
    decode = clock.step()
    assert (decode.decode, decode.prefill_tokens, decode.context_tokens) == (4, 0, 4 * 11)
    assert clock.now - start == pytest.approx(ITL + 3 * DECODE + 44 * CONTEXT)


def test_jitter_moves_the_step_around_its_mean(loop: asyncio.AbstractEventLoop) -> None:
    import random

    costs = StepCosts(inter_token_latency=0.01, inter_token_latency_std_dev=0.003)
    rng = random.Random(1)
    samples = [costs.duration(StepPlan(decode=1), rng) for _ in range(2000)]
    assert min(samples) >= 0.003 - 1e-12
    assert max(samples) <= 0.017 + 1e-12
    assert sum(samples) / len(samples) == pytest.approx(0.01, rel=0.05)
    assert len(set(samples)) > 100


# -- chunked prefill and the token budget ---------------------------------------------
def test_prompts_are_prefilled_in_chunks_that_fit_the_budget(
    loop: asyncio.AbstractEventLoop,
) -> None:
    engine = StepEngine(num_blocks=256, max_num_batched_tokens=64, costs=COSTS)
    engine.add(make(loop, "long", 150, 3))
    clock = Clock(engine)
    assert batch(clock.step()) == [("long", 64)]
    assert batch(clock.step()) == [("long", 64)]
    engine.add(make(loop, "late", [1000 + k for k in range(30)], 2))
    # running first: the last chunk of "long", then "late" gets what is left
    assert batch(clock.step()) == [("long", 22), ("late", 30)]
    plan = clock.step()
    assert batch(plan) == [("long", 1), ("late", 1)]
    assert plan.decode == 2


def test_a_long_prompt_stalls_running_streams_by_its_prefill_chunk(
    loop: asyncio.AbstractEventLoop,
) -> None:
    costs = StepCosts(inter_token_latency=ITL, prefill_time_per_token=PREFILL)
    for budget, expected_stall in ((8192, 2000 * PREFILL), (256, 255 * PREFILL)):
        engine = StepEngine(num_blocks=1024, max_num_batched_tokens=budget, costs=costs)
        stream = make(loop, "stream", 10, 100)
        engine.add(stream)
        clock = Clock(engine)
        clock.step()
        clock.step()
        engine.add(make(loop, "long", 2000, 1))
        before = clock.now
        clock.step()
        assert clock.now - before == pytest.approx(ITL + expected_stall)


def test_waiting_sequences_are_held_back_by_max_num_seqs(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=256, max_num_seqs=2, costs=COSTS)
    for name in "abc":
        engine.add(make(loop, name, 5, 2))
    clock = Clock(engine)
    assert batch(clock.step()) == [("a", 5), ("b", 5)]
    assert engine.num_waiting == 1


# -- blocks and preemption --------------------------------------------------------------
def test_a_sequence_holds_ceil_tokens_over_block_size_blocks(
    loop: asyncio.AbstractEventLoop,
) -> None:
    engine = StepEngine(num_blocks=64, block_size=16, enable_prefix_caching=False)
    sequence = make(loop, "a", 33, 20)
    seq = engine.add(sequence)
    clock = Clock(engine)
    clock.step()
    assert len(seq.blocks) == 3  # 33 prompt tokens
    for _ in range(14):
        clock.step()
    # 33 + 15 generated tokens known, 47 computed after this step's decode: 3 blocks
    assert len(seq.blocks) == 3
    clock.step()  # computes token 48: still 3 blocks of 16
    clock.step()  # computes token 49: a fourth block
    assert len(seq.blocks) == 4
    assert engine.pool.num_used == 4
    clock.run()
    assert engine.pool.num_used == 0
    assert engine.usage() == 0.0


def test_the_most_recently_admitted_sequence_is_preempted_and_recomputed(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # 6 blocks of 4 tokens; each sequence starts with 8 prompt tokens (2 blocks)
    engine = StepEngine(num_blocks=6, block_size=4, enable_prefix_caching=False, costs=COSTS)
    a, b, c = (make(loop, name, 8, 8) for name in "abc")
    for sequence in (a, b, c):
        engine.add(sequence)
    clock = Clock(engine)
    assert batch(clock.step()) == [("a", 8), ("b", 8), ("c", 8)]
    assert engine.pool.num_free == 0
    plan = clock.step()  # a and b need a third block for token 9: c makes room
    assert [seq.sequence.request_id for seq in plan.preempted] == ["c"]
    assert batch(plan) == [("a", 1), ("b", 1)]
    assert [seq.sequence.request_id for seq in engine.scheduler.waiting] == ["c"]
    assert engine.num_preemptions == 1
    assert c.generated == 1  # the streamed token is kept
    clock.run()
    assert [s.generated for s in (a, b, c)] == [8, 8, 8]
    recompute = [plan for plan in clock.plans if ("c", 9) in batch(plan)]
    assert recompute, "c re-prefills its prompt plus the token it already streamed"
    assert engine.pool.num_used == 0


def test_a_preemption_step_admits_no_waiting_sequence(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=4, block_size=4, enable_prefix_caching=False)
    a, b = make(loop, "a", 8, 4), make(loop, "b", 8, 4)
    engine.add(a)
    engine.add(b)
    clock = Clock(engine)
    clock.step()
    engine.add(make(loop, "c", 1, 1))
    plan = clock.step()
    assert [seq.sequence.request_id for seq in plan.preempted] == ["b"]
    assert batch(plan) == [("a", 1)]
    assert [seq.sequence.request_id for seq in engine.scheduler.waiting] == ["b", "c"]


def test_abort_frees_blocks_at_once(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=16, block_size=4, enable_prefix_caching=False)
    seq = engine.add(make(loop, "a", 20, 50))
    clock = Clock(engine)
    clock.step()
    assert engine.pool.num_used == 5
    plan, _ = engine.begin_step(clock.now)
    engine.abort(seq)  # mid-step: the step's result skips it
    assert engine.pool.num_used == 0
    result = engine.end_step(plan, clock.now + 1)
    assert result.emitted == []
    assert not engine.has_work()
    engine.abort(seq)  # idempotent


# -- prefix caching --------------------------------------------------------------------
def test_a_shared_prefix_is_not_computed_again(loop: asyncio.AbstractEventLoop) -> None:
    costs = StepCosts(inter_token_latency=ITL, prefill_time_per_token=PREFILL)
    engine = StepEngine(num_blocks=256, block_size=16, costs=costs)
    first = make(loop, "first", 1000, 2)
    engine.add(first)
    clock = Clock(engine)
    clock.run()
    ttft_first = first.first_token_at
    prompt = list(range(992)) + [5000 + k for k in range(20)]  # 62 shared blocks
    second = make(loop, "second", prompt, 2)
    second.arrival = start = clock.now
    engine.add(second)
    plan = clock.step()
    assert batch(plan) == [("second", 1012 - 992)]
    assert (plan.prefix_queries, plan.prefix_hits) == (1012, 992)
    assert second.cached_tokens == 992
    assert second.first_token_at is not None
    assert ttft_first is not None
    assert second.first_token_at - start == pytest.approx(ITL + 20 * PREFILL)
    assert (engine.prefix_queries, engine.prefix_hits) == (1000 + 1012, 992)


def test_a_fully_cached_prompt_still_computes_one_token(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=64, block_size=4)
    engine.add(make(loop, "a", 16, 1))
    clock = Clock(engine)
    clock.run()
    again = make(loop, "b", 16, 1)
    engine.add(again)
    plan = clock.step()
    assert batch(plan) == [("b", 4)]  # the last block is recomputed, as in vLLM
    assert again.cached_tokens == 12


def test_the_lora_adapter_is_part_of_the_block_name(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=64, block_size=4)
    engine.add(make(loop, "base", 16, 1))
    clock = Clock(engine)
    clock.run()
    lora = make(loop, "lora", 16, 1, adapter="sql-lora")
    engine.add(lora)
    clock.step()
    assert lora.cached_tokens == 0


def test_n_choices_share_their_prompts_blocks(loop: asyncio.AbstractEventLoop) -> None:
    engine = StepEngine(num_blocks=64, block_size=4)
    siblings = [make(loop, f"s{k}", 16, 3) for k in range(3)]
    states = [engine.add(sequence) for sequence in siblings]
    Clock(engine).step()
    assert [sequence.cached_tokens for sequence in siblings] == [0, 12, 12]
    shared = {id(block) for block in states[0].blocks[:3]}
    assert all({id(block) for block in state.blocks[:3]} == shared for state in states)
    assert engine.pool.num_used == 4 + 1 + 1


def test_cached_blocks_are_evicted_least_recently_used_first(
    loop: asyncio.AbstractEventLoop,
) -> None:
    listener = Recorder()
    engine = StepEngine(num_blocks=4, block_size=4, kv_listener=listener)
    clock = Clock(engine)
    a_ids = [1, 2, 3, 4, 5, 6, 7, 8]
    engine.add(make(loop, "a", a_ids, 1))
    clock.run()
    b_ids = [9, 10, 11, 12, 13, 14, 15, 16]
    engine.add(make(loop, "b", b_ids, 1))
    clock.run()
    a_hashes = hash_block_chain(sha256_pickle_hasher, a_ids, 4)
    b_hashes = hash_block_chain(sha256_pickle_hasher, b_ids, 4)
    assert all(engine.pool.cached_block(h) is not None for h in a_hashes + b_hashes)
    # a third prompt needs 3 fresh blocks: a's two were freed first, then b's last block
    engine.add(make(loop, "c", [20 + k for k in range(9)], 1))
    clock.step()
    still = [engine.pool.cached_block(h) is not None for h in a_hashes + b_hashes]
    assert still == [False, False, True, False]
    removed = [event for event in listener.events if event[0] == "removed"]
    # one BlockRemoved per evicted block, as vLLM's block pool reports them
    assert removed == [("removed", [h]) for h in (a_hashes[1], a_hashes[0], b_hashes[1])]


def test_the_listener_hears_stored_removed_cleared_and_steps(
    loop: asyncio.AbstractEventLoop,
) -> None:
    listener = Recorder()
    engine = StepEngine(num_blocks=8, block_size=4, kv_listener=listener)
    ids = [11, 12, 13, 14, 15, 16, 17, 18, 19]
    engine.add(make(loop, "a", ids, 1, adapter="sql-lora"))
    clock = Clock(engine)
    clock.run()
    stored = [event for event in listener.events if event[0] == "stored"]
    hashes = hash_block_chain(sha256_pickle_hasher, ids, 4, ("sql-lora",))
    assert stored[0][1] == hashes
    assert stored[0][2] is None
    assert stored[0][3] == ids[:8]
    assert stored[0][4] == 4
    assert isinstance(stored[0][5], int)
    assert listener.events.count(("step",)) == len(clock.plans)
    assert engine.reset_prefix_cache() == 2
    assert listener.events[-2:] == [("cleared",), ("step",)]  # published at once
    assert engine.pool.num_cached == 0


def test_kv_events_name_the_adapter_with_vllms_load_order_id(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """vLLM numbers adapters 1, 2, ... as it loads them and puts the name beside the id."""
    from llmsim.engine.lora import Adapter, LoraManager

    loras = LoraManager(max_loras=2, max_cpu_loras=2, load_latency=0.0)
    for name in ("sql-lora", "chat-lora"):
        loras.register(Adapter(name, "/adapters/" + name))
    listener = Recorder()
    engine = StepEngine(num_blocks=16, block_size=4, kv_listener=listener)
    engine.kv.lora_ids = loras.int_id
    engine.add(make(loop, "a", list(range(9)), 1, adapter="chat-lora"))
    engine.add(make(loop, "b", list(range(9)), 1))
    Clock(engine).run()
    stored = [event for event in listener.events if event[0] == "stored"]
    assert [(event[5], event[6]) for event in stored] == [(2, "chat-lora"), (None, None)]
    loras.unregister("chat-lora")
    loras.register(Adapter("chat-lora", "/adapters/chat-lora"))
    assert loras.int_id("chat-lora") == 3  # a reload gets a new id, as in vLLM


def test_a_custom_block_hasher_names_the_blocks(loop: asyncio.AbstractEventLoop) -> None:
    calls: list[tuple[int, ...]] = []

    def hasher(parent: bytes | None, tokens: Seq[int], extra: tuple[object, ...] | None) -> bytes:
        calls.append(tuple(tokens))
        return (parent or b"") + bytes([len(calls)])

    engine = StepEngine(num_blocks=8, block_size=2, block_hasher=hasher)
    engine.add(make(loop, "a", [1, 2, 3, 4, 5], 1))
    Clock(engine).run()
    assert calls[:2] == [(1, 2), (3, 4)]


def test_without_prefix_caching_nothing_is_hashed(loop: asyncio.AbstractEventLoop) -> None:
    listener = Recorder()
    engine = StepEngine(
        num_blocks=8, block_size=4, enable_prefix_caching=False, kv_listener=listener
    )
    engine.add(make(loop, "a", 12, 2))
    engine.add(make(loop, "b", 12, 2))
    plan = Clock(engine).step()
    assert batch(plan) == [("a", 12), ("b", 12)]
    assert listener.kinds() == []
    assert plan.prefix_queries == 0


def test_kv_blocks_round_up() -> None:
    assert num_kv_blocks(1000, 16) == 63
    assert num_kv_blocks(1024, 16) == 64


# -- token ids ----------------------------------------------------------------------------
def test_token_ids_are_stable_across_processes() -> None:
    text = "The quick brown fox, jumps over the lazy dog."
    code = f"from llmsim.engine.tokenizer import token_ids; print(token_ids({text!r}))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(token_ids(text))}
    assert len(token_ids(text)) == len(tokenize(text))


def test_output_token_ids_are_stable_across_processes() -> None:
    code = "from llmsim.engine.block_hash import output_token_id; print(output_token_id(' fox'))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(output_token_id(" fox"))}


def test_step_sequence_token_ids_cover_prompt_then_output(
    loop: asyncio.AbstractEventLoop,
) -> None:
    sequence = make(loop, "a", [7, 8, 9], 3)
    sequence.generated = 2
    seq = StepSequence(sequence, sequence.prompt_token_ids)
    assert seq.token_ids(1, 5) == [8, 9, output_token_id(" w0"), output_token_id(" w1")]


@pytest.mark.parametrize("size", [1, 4, 16])
@pytest.mark.parametrize("named_by", ["vllm", "internal"])
def test_generated_blocks_are_cached_for_a_follow_up_prompt(
    loop: asyncio.AbstractEventLoop, size: int, named_by: str
) -> None:
    """Blocks filled while decoding enter the prefix cache, whichever digest names them."""
    from llmsim.engine.block_hash import internal_block_hasher

    hasher = internal_block_hasher if named_by == "internal" else None
    engine = StepEngine(num_blocks=512, block_size=size, block_hasher=hasher)
    first = make(loop, "first", 32, 40)
    engine.add(first)
    clock = Clock(engine)
    clock.run()
    # The first sequence computed its prompt and all but its last generated token.
    follow_up = [*range(32), *map(output_token_id, first.output), 9999]
    engine.add(make(loop, "second", follow_up, 1))
    plan = clock.step()
    assert plan.prefix_hits == (32 + 39) // size * size
