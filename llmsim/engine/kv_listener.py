"""What the KV cache tells the world: blocks stored, blocks removed, everything cleared.

The step engine's block pool calls a listener as full blocks enter the prefix cache and as
cached blocks are evicted; a KV-events publisher implements it with vLLM's ``BlockStored``,
``BlockRemoved`` and ``AllBlocksCleared`` events. ``step_finished`` marks an engine step's end,
so one step's events travel together, as vLLM publishes one batch per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from llmsim.engine.block_hash import BlockHash


class KVCacheListener(Protocol):
    def block_stored(
        self,
        block_hashes: Sequence[BlockHash],
        parent_block_hash: BlockHash | None,
        token_ids: Sequence[int],
        block_size: int,
        lora_id: int | None,
        lora_name: str | None,
    ) -> None:
        """Full blocks became cached, in chain order; ``token_ids`` are all their tokens."""

    def block_removed(self, block_hashes: Sequence[BlockHash]) -> None:
        """Cached blocks were evicted."""

    def all_blocks_cleared(self) -> None:
        """The whole cache was dropped (sleep, reset)."""

    def step_finished(self) -> None:
        """One engine step ended: what was reported since the last call forms one batch."""


class NullKVCacheListener:
    """Listens to nothing: the default when no KV events are published."""

    def block_stored(
        self,
        block_hashes: Sequence[BlockHash],
        parent_block_hash: BlockHash | None,
        token_ids: Sequence[int],
        block_size: int,
        lora_id: int | None,
        lora_name: str | None,
    ) -> None:
        pass

    def block_removed(self, block_hashes: Sequence[BlockHash]) -> None:
        pass

    def all_blocks_cleared(self) -> None:
        pass

    def step_finished(self) -> None:
        pass
