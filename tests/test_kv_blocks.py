"""The block-level KV cache of the constant and per-token models (``kv_blocks``), driven
directly: a hand-driven clock, no HTTP and no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import pytest

from llmsim.engine import Engine, GenerationRequest, PromptInput, Scheduler, Sequence, Target
from llmsim.engine.block_hash import BlockHash
from llmsim.engine.kv_blocks import KVBlocks
from llmsim.engine.lora import LoraManager
from llmsim.engine.observer import NullObserver
from llmsim.engine.pacer import Outcome, Pacing
from llmsim.settings.model import Settings

BLOCK = 16


@dataclass
class RecordingListener:
    """A KV-event listener that keeps what it heard, batch by batch."""

    stored: list[int] = field(default_factory=list)
    """How many blocks each ``block_stored`` named."""
    removed: int = 0
    batches: int = 0

    def block_stored(
        self,
        block_hashes: Seq[BlockHash],
        parent_block_hash: BlockHash | None,
        token_ids: Seq[int],
        block_size: int,
        lora_id: int | None,
        lora_name: str | None,
    ) -> None:
        self.stored.append(len(block_hashes))

    def block_removed(self, block_hashes: Seq[BlockHash]) -> None:
        self.removed += len(block_hashes)

    def all_blocks_cleared(self) -> None:
        pass

    def step_finished(self) -> None:
        self.batches += 1


def make_blocks(num_blocks: int, listener: RecordingListener | None = None) -> KVBlocks:
    return KVBlocks(
        kv_cache_size=num_blocks * BLOCK,
        block_size=BLOCK,
        enable_prefix_caching=True,
        listener=listener,
    )


def make_scheduler(blocks: KVBlocks, max_running: int = 8) -> Scheduler:
    return Scheduler(
        max_running=max_running,
        max_waiting=100,
        loras=LoraManager(1, 1, 0.0),
        observer=NullObserver(),
        clock=lambda: 100.0,
        blocks=blocks,
    )


def make_sequence(request_id: str, prompt: list[int], output_tokens: int) -> Sequence:
    sequence = Sequence(
        request_id=request_id,
        index=0,
        adapter=None,
        prompt_tokens=len(prompt),
        output=["x"] * output_tokens,
        natural_finish="length",
        stop_reason=None,
        max_tokens=output_tokens,
        n=1,
        arrival=0.0,
        admitted=asyncio.get_running_loop().create_future(),
    )
    sequence.prompt_token_ids = prompt
    return sequence


async def test_admission_waits_for_blocks_in_arrival_order_and_a_finish_frees_them() -> None:
    blocks = make_blocks(4)
    scheduler = make_scheduler(blocks)
    first = make_sequence("a", list(range(20)), 12)  # 32 tokens: 2 blocks
    second = make_sequence("b", list(range(100, 130)), 10)  # 40 tokens: 3 blocks
    third = make_sequence("c", list(range(200, 210)), 2)  # 1 block: fits, but arrives later
    scheduler.submit([first])
    scheduler.submit([second])
    scheduler.submit([third])
    assert list(scheduler.running) == [first]
    assert list(scheduler.waiting) == [second, third]
    assert blocks.usage() == pytest.approx(2 / 4)

    scheduler.finish(first)

    assert list(scheduler.running) == [second, third]
    assert blocks.usage() == pytest.approx(4 / 4)


async def test_an_abort_gives_the_blocks_back() -> None:
    blocks = make_blocks(4)
    scheduler = make_scheduler(blocks)
    sequence = make_sequence("a", list(range(40)), 8)
    scheduler.submit([sequence])
    assert blocks.pool.num_used == 3

    scheduler.abort(sequence)

    assert blocks.pool.num_used == 0


async def test_a_repeated_prompt_hits_its_full_blocks_and_is_counted() -> None:
    blocks = make_blocks(16)
    lookups: list[tuple[int, int]] = []
    blocks.looked_up = lambda queried, hit: lookups.append((queried, hit))
    scheduler = make_scheduler(blocks)
    prompt = list(range(40))  # two full blocks and a partial one
    first = make_sequence("a", prompt, 4)
    scheduler.submit([first])
    scheduler.finish(first)
    again = make_sequence("b", prompt, 4)
    scheduler.submit([again])

    assert first.cached_tokens == 0
    assert again.cached_tokens == 2 * BLOCK
    assert lookups == [(40, 0), (40, 2 * BLOCK)]


async def test_a_whole_prompt_of_full_blocks_still_computes_its_last_token() -> None:
    blocks = make_blocks(16)
    scheduler = make_scheduler(blocks)
    prompt = list(range(2 * BLOCK))
    first = make_sequence("a", prompt, 1)
    scheduler.submit([first])
    scheduler.finish(first)
    again = make_sequence("b", prompt, 1)
    scheduler.submit([again])

    assert again.cached_tokens == BLOCK  # vLLM's rule: the last token is computed


async def test_kv_events_hear_the_prompts_blocks_once_per_admission() -> None:
    listener = RecordingListener()
    blocks = make_blocks(3, listener)
    scheduler = make_scheduler(blocks)
    first = make_sequence("a", list(range(40)), 8)  # 48 tokens: all 3 blocks
    scheduler.submit([first])
    assert listener.stored == [2]  # the prompt's full blocks, not the output's
    scheduler.finish(first)
    other = make_sequence("b", list(range(100, 140)), 8)  # evicts the cached blocks
    scheduler.submit([other])

    assert listener.removed == 2
    assert listener.stored == [2, 2]
    assert listener.batches == 3  # admission, finish, admission


async def test_per_token_ttft_leaves_out_the_cached_tokens_prefill() -> None:
    settings = Settings(
        latency_model="per-token",
        kv_blocks=True,
        prefill_time_per_token=10,  # milliseconds
        inter_token_latency=0.0,
        block_size=BLOCK,
    )
    engine = Engine(settings)
    assert engine.needs_token_ids
    delays: list[float] = []

    def pace(pacing: Pacing) -> None:  # record the first token's deadline, release at once
        sequence = pacing.sequence
        assert sequence.ready_at is not None
        delays.append(pacing.deadline - sequence.ready_at)
        sequence.generated = len(sequence.output)
        pacing.done.set_result(Outcome.DONE)

    engine.pacer.pace = pace  # type: ignore[method-assign]
    prompt = PromptInput(token_count=40, echo_text="", token_ids=list(range(40)))
    for request_id in ("first", "second"):
        request = GenerationRequest(
            request_id=request_id,
            target=Target(settings.served_names[0], None),
            prompts=[prompt],
            max_tokens=2,
        )
        with engine.submit(request) as group:
            await group.run()
        assert group.cached_tokens == (0 if request_id == "first" else 2 * BLOCK)

    assert delays[0] == pytest.approx(40 * 0.01)
    assert delays[1] == pytest.approx(8 * 0.01)
    assert engine.blocks is not None
    assert engine.blocks.pool.num_used == 0


def test_kv_blocks_need_room_for_a_full_length_sequence() -> None:
    with pytest.raises(ValueError, match="kv-blocks needs kv-cache-size"):
        Settings(kv_blocks=True, kv_cache_size=1024, max_model_len=2048)
