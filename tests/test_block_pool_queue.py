"""The block pool's free queue against a plain reference: least recently freed goes first,
a prefix-cache hit takes a free block out of the queue, and nothing is lost or doubled."""

from __future__ import annotations

import random

import pytest

from llmsim.engine.kv_listener import NullKVCacheListener
from llmsim.engine.step.block_pool import BlockPool, KVBlock


@pytest.mark.parametrize("seed", range(30))
def test_free_queue_matches_a_plain_lru_list(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([4, 16, 64])
    pool = BlockPool(size, 4, NullKVCacheListener())
    reference = list(range(size))  # free ids, next to be evicted first
    refs = dict.fromkeys(range(size), 0)
    held: list[KVBlock] = []
    for _ in range(400):
        action = rng.random()
        if action < 0.4 and pool.num_free:
            count = rng.randint(1, pool.num_free)
            taken = pool.allocate(count)
            assert [block.block_id for block in taken] == reference[:count]
            del reference[:count]
            for block in taken:
                refs[block.block_id] = 1
            held.extend(taken)
        elif action < 0.7 and held:
            rng.shuffle(held)
            cut = rng.randint(1, len(held))
            freed, held = held[:cut], held[cut:]
            pool.free(freed)
            for block in freed:
                refs[block.block_id] -= 1
                if refs[block.block_id] == 0:
                    reference.append(block.block_id)
        elif reference or held:  # a prefix-cache hit: a free block or one in use again
            block = pool.blocks[rng.randrange(size)]
            pool.touch([block])
            if refs[block.block_id] == 0:
                reference.remove(block.block_id)
            refs[block.block_id] += 1
            held.append(block)
        assert pool.free_order() == reference
        assert pool.num_free == len(reference)
        assert len(pool._queue) <= 2 * size + len(held) + 1  # stale entries stay bounded
