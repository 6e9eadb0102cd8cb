"""KV blocks are made when first used: a large cache costs nothing until it fills, and the
pool behaves as if every block had waited, in id order, at the front of the free queue."""

from __future__ import annotations

import tracemalloc

from llmsim.engine.kv_listener import NullKVCacheListener
from llmsim.engine.step.block_pool import BlockPool


def test_a_large_pool_costs_little_until_its_blocks_are_used() -> None:
    tracemalloc.start()
    try:
        pool = BlockPool(1_000_000, 16, NullKVCacheListener())
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size < 100_000  # made up front, a million blocks would take about 90 MB
    assert pool.num_free == 1_000_000
    assert pool.usage() == 0.0


def test_never_used_blocks_come_first_in_id_order() -> None:
    pool = BlockPool(8, 4, NullKVCacheListener())
    first = pool.allocate(3)
    assert [block.block_id for block in first] == [0, 1, 2]
    pool.free([first[2], first[0], first[1]])
    assert pool.free_order() == [3, 4, 5, 6, 7, 2, 0, 1]
    again = pool.allocate(6)
    assert [block.block_id for block in again] == [3, 4, 5, 6, 7, 2]
    assert pool.num_free == 2
    assert pool.free_order() == [0, 1]


def test_asking_for_every_block_keeps_the_order() -> None:
    pool = BlockPool(6, 4, NullKVCacheListener())
    taken = pool.allocate(2)
    pool.free([taken[1]])
    blocks = pool.blocks
    assert [block.block_id for block in blocks] == [0, 1, 2, 3, 4, 5]
    assert blocks[0] is taken[0]
    assert pool.free_order() == [2, 3, 4, 5, 1]
    assert [block.block_id for block in pool.allocate(5)] == [2, 3, 4, 5, 1]
    assert pool.num_free == 0
