"""P/D decode side in the step engine, in virtual time: the prompt's KV cache is received,
not computed, and the transfer holds up no other sequence's steps."""

from __future__ import annotations

from collections.abc import Sequence as Seq

from llmsim.engine.block_hash import BlockHash, hash_block_chain, sha256_pickle_hasher
from llmsim.engine.step import StepCosts, StepEngine
from llmsim.engine.step.virtual import VirtualRun, virtual_sequence

ITL, PREFILL = 0.02, 0.01
COSTS = StepCosts(inter_token_latency=ITL, prefill_time_per_token=PREFILL)
TRANSFER = 0.5


class Stored:
    """A KV listener keeping the stored and removed block hashes."""

    def __init__(self) -> None:
        self.stored: list[tuple[list[BlockHash], BlockHash | None, list[int]]] = []
        self.removed: list[BlockHash] = []

    def block_stored(
        self,
        block_hashes: Seq[BlockHash],
        parent_block_hash: BlockHash | None,
        token_ids: Seq[int],
        block_size: int,
        lora_id: int | None,
        lora_name: str | None = None,
    ) -> None:
        self.stored.append((list(block_hashes), parent_block_hash, list(token_ids)))

    def block_removed(self, block_hashes: Seq[BlockHash]) -> None:
        self.removed.extend(block_hashes)

    def all_blocks_cleared(self) -> None:
        pass

    def step_finished(self) -> None:
        pass

    def hashes(self) -> list[BlockHash]:
        return [h for hashes, _, _ in self.stored for h in hashes]


def test_a_decode_side_sequence_waits_the_transfer_instead_of_prefilling() -> None:
    listener = Stored()
    engine = StepEngine(num_blocks=16, block_size=16, costs=COSTS, kv_listener=listener)
    run = VirtualRun(engine)
    remote = virtual_sequence("remote", 48, 4)
    remote.kv_transfer_delay = TRANSFER
    run.arrive(remote, at=0.0)
    run.step()
    # the prompt's blocks are held from the start, but nothing is cached before it arrives
    assert engine.pool.num_used == 3
    assert listener.stored == []
    assert (engine.num_running, engine.num_waiting) == (0, 1)  # waiting for its KV, as in vLLM
    run.until_idle()
    assert remote.first_token_at is not None
    assert TRANSFER <= remote.first_token_at <= TRANSFER + 2 * ITL  # not 48 x 10 ms prefill
    assert remote.generated == 4
    ids = list(remote.prompt_token_ids or [])
    assert listener.hashes() == hash_block_chain(sha256_pickle_hasher, ids, 16, None)
    assert next(tokens for _, _, tokens in listener.stored) == ids[:32]
    assert engine.pool.num_used == 0


def test_a_transfer_does_not_hold_up_other_sequences_steps() -> None:
    engine = StepEngine(num_blocks=64, block_size=16, costs=COSTS)
    run = VirtualRun(engine)
    local = virtual_sequence("local", 16, 60)
    remote = virtual_sequence("remote", 32, 2)
    remote.kv_transfer_delay = TRANSFER
    run.arrive(local, at=0.0)
    run.arrive(remote, at=0.0)
    run.until_idle()
    durations = [sample.duration for sample in run.samples if sample.duration > 0]
    assert max(durations) < 0.2  # the local stream kept stepping during the transfer
    assert local.first_token_at is not None
    assert local.first_token_at < 0.2
    assert remote.first_token_at is not None
    assert TRANSFER <= remote.first_token_at <= TRANSFER + 2 * ITL + 1e-9
    assert local.generated == 60
    assert remote.generated == 2


def test_a_decode_side_sequence_waits_for_room_for_its_prompt() -> None:
    engine = StepEngine(num_blocks=4, block_size=16, costs=COSTS)
    run = VirtualRun(engine)
    local = virtual_sequence("local", 40, 8)
    remote = virtual_sequence("remote", 40, 2)
    remote.kv_transfer_delay = TRANSFER
    run.arrive(local, at=0.0)
    run.arrive(remote, at=0.0)
    run.step()
    assert engine.scheduler.receiving == []  # 3 + 3 blocks do not fit 4
    run.until_idle()
    assert remote.generated == 2
    assert local.finished_at is None
    assert local.generated == 8


def test_an_abort_during_the_transfer_frees_the_prompts_blocks() -> None:
    engine = StepEngine(num_blocks=8, block_size=16, costs=COSTS)
    remote = virtual_sequence("remote", 40, 2)
    remote.kv_transfer_delay = TRANSFER
    seq = engine.add(remote)
    plan, _ = engine.begin_step(0.0)
    engine.end_step(plan, 0.0)
    assert engine.pool.num_used == 3
    engine.abort(seq)
    assert engine.pool.num_used == 0
    assert not engine.has_work()
    assert engine.next_ready() is None


def test_a_decode_side_prompt_already_cached_here_takes_those_blocks_from_the_cache() -> None:
    """As vLLM's scheduler does before asking the connector: the local prefix-cache hits are
    used, and only the rest of the prompt is received and stored."""
    listener = Stored()
    engine = StepEngine(num_blocks=16, block_size=16, costs=COSTS, kv_listener=listener)
    run = VirtualRun(engine)
    first = virtual_sequence("first", 50, 2)
    first.kv_transfer_delay = TRANSFER
    run.arrive(first, at=0.0)
    run.until_idle()
    stored = listener.hashes()
    assert len(stored) == 3
    assert first.cached_tokens == 0
    again = virtual_sequence("first", 50, 2)  # the same prompt ids
    again.kv_transfer_delay = TRANSFER
    run.arrive(again, at=run.now + 1.0)
    run.until_idle()
    assert again.cached_tokens == 48
    assert again.first_token_at is not None
    assert first.first_token_at is not None
    # only the 2 tokens not cached here travel: a 25th of the transfer time
    assert again.first_token_at - again.arrival < first.first_token_at - first.arrival - 0.4
    assert listener.hashes() == stored  # nothing stored twice
    assert (engine.prefix_queries, engine.prefix_hits) == (100, 48)
