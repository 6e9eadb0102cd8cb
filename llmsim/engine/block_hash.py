"""Prefix-cache block hashes: each full block is named by a hash chained over its parent.

As in vLLM's prefix cache, a block's hash covers the parent block's hash, the block's token
ids and extra keys (the LoRA adapter), so equal prefixes get equal chains and a router that
hashes the same tokens the same way finds the same names.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from functools import lru_cache
from hashlib import blake2b
from typing import Any, Protocol

BlockHash = bytes


class BlockHasher(Protocol):
    def __call__(
        self,
        parent: BlockHash | None,
        token_ids: Sequence[int],
        extra_keys: tuple[Any, ...] | None,
    ) -> BlockHash: ...


NONE_HASH = hashlib.sha256(b"llmsim").digest()


def sha256_pickle_hasher(
    parent: BlockHash | None, token_ids: Sequence[int], extra_keys: tuple[Any, ...] | None
) -> BlockHash:
    """The default: SHA-256 over the pickled ``(parent, tokens, extra_keys)`` triple."""
    key = (NONE_HASH if parent is None else parent, tuple(token_ids), extra_keys)
    return hashlib.sha256(pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def internal_block_hasher(
    parent: BlockHash | None, token_ids: Sequence[int], extra_keys: tuple[Any, ...] | None
) -> BlockHash:
    """Python's own hash of the same triple, for an instance that publishes no KV events.

    Blocks are matched exactly as with vLLM's hashes (same chain, same keys), but naming a
    block costs a twentieth of SHA-256 over a pickle; without events no one outside the
    process sees a hash, so which digest names a block cannot be told apart.
    """
    return hash((parent, tuple(token_ids), extra_keys)).to_bytes(8, "little", signed=True)


@lru_cache(maxsize=1 << 16)
def output_token_id(piece: str) -> int:
    """A stable id for a generated token's text, to hash blocks that hold generated tokens.

    Derived from the text alone (BLAKE2b, never Python's salted ``hash()``), so every process
    names the same output alike, whatever tokenizer split it. Memoised: generated text
    repeats a small vocabulary, and a block of it is hashed every ``block_size`` tokens.
    """
    return int.from_bytes(blake2b(piece.encode(), digest_size=4).digest(), "big")


def hash_block_chain(
    hasher: BlockHasher,
    token_ids: Sequence[int],
    block_size: int,
    extra_keys: tuple[Any, ...] | None = None,
) -> list[BlockHash]:
    """Hashes of every full block of ``token_ids``, in order (a partial last block has none)."""
    hashes: list[BlockHash] = []
    parent: BlockHash | None = None
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hasher(parent, token_ids[start : start + block_size], extra_keys)
        hashes.append(parent)
    return hashes
