"""vLLM's prefix-cache block hashes, bit for bit, so a router can recompute them.

vLLM (``vllm/v1/core/kv_cache_utils.py`` and ``vllm/utils/hashing.py``, v0.11 to v0.17)
names a full block ``hash_fn((parent_hash, tuple(token_ids), extra_keys))``; the first
block's parent is ``NONE_HASH``, which is ``hash_fn(PYTHONHASHSEED)`` when that variable is
set and 32 random bytes otherwise. ``--prefix-caching-hash-algo`` picks ``hash_fn``:

- ``sha256``: SHA-256 of the pickled triple (protocol 5, Python consumers only);
- ``sha256_cbor``: SHA-256 of the triple in canonical CBOR (RFC 8949), for consumers in any
  language;
- ``xxhash`` / ``xxhash_cbor``: the same two serialisations with the 128-bit XXH3 digest
  (needs the ``xxhash`` package, part of ``llmsim[kv-events]``).

Events carry block hashes in vLLM's external form: by default
(``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1``) the low 64 bits of the digest read big-endian,
as an unsigned integer; with ``0`` the raw digest bytes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llmsim.engine.block_hash import BlockHash, BlockHasher
from llmsim.settings.kv_events import HASH_ALGOS, PrefixCachingHashAlgo

XXHASH_ALGOS = frozenset({"xxhash", "xxhash_cbor"})
SEED_ENV = "PYTHONHASHSEED"
INT_HASHES_ENV = "VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES"
ExternalBlockHash = bytes | int
HashFunction = Callable[[Any], bytes]


class HashAlgoUnavailableError(Exception):
    """The chosen algorithm needs a package that is not installed."""


# -- canonical CBOR (RFC 8949 §4.2.1), for the values a block key holds ------------------


def _cbor_head(major: int, value: int) -> bytes:
    """A data item's head: the major type and the shortest encoding of ``value``."""
    if value < 24:
        return bytes([major << 5 | value])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if value < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, value)
    raise ValueError(f"integer {value} does not fit 64 bits")


def cbor_dumps(value: Any) -> bytes:
    """Canonical CBOR of ``value``: what ``cbor2.dumps(value, canonical=True)`` gives."""
    out = bytearray()
    _cbor_encode(value, out)
    return bytes(out)


def _cbor_encode(value: Any, out: bytearray) -> None:
    if value is None:
        out.append(0xF6)
    elif value is True or value is False:
        out.append(0xF5 if value else 0xF4)
    elif isinstance(value, int):
        out += _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out += _cbor_head(2, len(data)) + data
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out += _cbor_head(3, len(data)) + data
    elif isinstance(value, (list, tuple)):
        out += _cbor_head(4, len(value))
        for item in value:
            _cbor_encode(item, out)
    elif isinstance(value, Mapping):
        # Canonical order: keys sorted by the length, then the bytes, of their encoding.
        items = sorted((cbor_dumps(key), item) for key, item in value.items())
        out += _cbor_head(5, len(items))
        for key_bytes, item in items:
            out += key_bytes
            _cbor_encode(item, out)
    else:
        raise TypeError(f"cannot CBOR-encode a block key holding {type(value).__name__}")


# -- vLLM's hash functions --------------------------------------------------------------


def _pickled(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _xxh3_128() -> Callable[[bytes], bytes]:
    try:
        import xxhash
    except ImportError:
        raise HashAlgoUnavailableError(
            "the xxhash algorithms need the xxhash package: pip install 'llmsim[kv-events]'"
        ) from None
    digest: Callable[[bytes], bytes] = xxhash.xxh3_128_digest
    return digest


def hash_function(algo: PrefixCachingHashAlgo) -> HashFunction:
    """vLLM's ``get_hash_fn_by_name``: serialise, then digest."""
    serialise = cbor_dumps if algo.endswith("_cbor") else _pickled
    if algo in XXHASH_ALGOS:
        xxh = _xxh3_128()
        return lambda value: xxh(serialise(value))
    return lambda value: hashlib.sha256(serialise(value)).digest()


def none_hash(hash_fn: HashFunction, seed: str | None) -> BlockHash:
    """The first block's parent: ``hash_fn(seed)``, or 32 random bytes without a seed."""
    return os.urandom(32) if seed is None else hash_fn(seed)


class VllmBlockHasher:
    """A :class:`BlockHasher` that names blocks exactly as vLLM's ``hash_block_tokens``."""

    def __init__(self, algo: PrefixCachingHashAlgo, seed: str | None) -> None:
        self.algo = algo
        self._hash = hash_function(algo)
        self.none_hash = none_hash(self._hash, seed)

    def __call__(
        self,
        parent: BlockHash | None,
        token_ids: Sequence[int],
        extra_keys: tuple[Any, ...] | None,
    ) -> BlockHash:
        return self._hash((parent or self.none_hash, tuple(token_ids), extra_keys))


def make_block_hasher(
    algo: str, seed: str | None = None, *, environ: Mapping[str, str] | None = None
) -> BlockHasher:
    """The hasher for ``--prefix-caching-hash-algo``; the seed defaults to ``PYTHONHASHSEED``."""
    if algo not in HASH_ALGOS:
        raise ValueError(f"unknown prefix-caching hash algorithm {algo!r}")
    if seed is None:
        seed = (os.environ if environ is None else environ).get(SEED_ENV)
    return VllmBlockHasher(algo, seed)  # type: ignore[arg-type]  # checked above


def int_block_hashes(environ: Mapping[str, str] | None = None) -> bool:
    """vLLM's ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`` (default on)."""
    value = (os.environ if environ is None else environ).get(INT_HASHES_ENV, "1")
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def external_block_hash(block_hash: BlockHash, as_int: bool = True) -> ExternalBlockHash:
    """vLLM's ``maybe_convert_block_hash``: low 64 bits as an int, or the digest itself."""
    if not as_int:
        return block_hash
    return int.from_bytes(block_hash, "big") & 0xFFFF_FFFF_FFFF_FFFF
