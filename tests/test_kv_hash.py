"""Block hashes equal an independent re-implementation of vLLM's hash_block_tokens."""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import cbor2
import pytest
import xxhash

from llmsim.engine.block_hash import hash_block_chain
from llmsim.engine.prefix_hash import (
    cbor_dumps,
    external_block_hash,
    int_block_hashes,
    make_block_hasher,
)


# -- the reference: vLLM's documented recipe, written out here ------------------------------
def reference_fn(algo: str) -> Any:
    def serialise(value: Any) -> bytes:
        if algo.endswith("_cbor"):
            return bytes(cbor2.dumps(value, canonical=True))
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    if algo.startswith("xxhash"):
        return lambda value: xxhash.xxh3_128_digest(serialise(value))
    return lambda value: hashlib.sha256(serialise(value)).digest()


def reference_chain(
    algo: str, seed: str, tokens: list[int], block_size: int, extra: Any = None
) -> list[bytes]:
    fn = reference_fn(algo)
    parent = fn(seed)  # NONE_HASH from PYTHONHASHSEED
    hashes = []
    for start in range(0, len(tokens) // block_size * block_size, block_size):
        parent = fn((parent, tuple(tokens[start : start + block_size]), extra))
        hashes.append(parent)
    return hashes


ALGOS = ["sha256", "sha256_cbor", "xxhash", "xxhash_cbor"]
TOKENS = [128000, 9906, 11, 1268, 527, 499, 30, 0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 + 1]


@pytest.mark.parametrize("algo", ALGOS)
def test_chain_matches_reference(algo: str) -> None:
    tokens = TOKENS * 3 + [7, 8, 9]  # three full blocks of 16 and a partial one
    hasher = make_block_hasher(algo, environ={"PYTHONHASHSEED": "0"})
    ours = hash_block_chain(hasher, tokens, 16)
    assert ours == reference_chain(algo, "0", tokens, 16)
    assert len(ours) == 3


@pytest.mark.parametrize("algo", ALGOS)
def test_extra_keys_change_the_hash_as_in_vllm(algo: str) -> None:
    hasher = make_block_hasher(algo, seed="42")
    with_lora = hash_block_chain(hasher, TOKENS, 16, ("sql-lora",))
    assert with_lora == reference_chain(algo, "42", TOKENS, 16, ("sql-lora",))
    assert with_lora != hash_block_chain(hasher, TOKENS, 16)


def test_seed_decides_the_first_parent() -> None:
    a = hash_block_chain(make_block_hasher("sha256_cbor", seed="1"), TOKENS, 16)
    b = hash_block_chain(make_block_hasher("sha256_cbor", seed="2"), TOKENS, 16)
    assert a != b
    # Without PYTHONHASHSEED the seed is random: two instances disagree, as in vLLM.
    c = hash_block_chain(make_block_hasher("sha256_cbor", environ={}), TOKENS, 16)
    d = hash_block_chain(make_block_hasher("sha256_cbor", environ={}), TOKENS, 16)
    assert c != d


def test_unknown_algo_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        make_block_hasher("md5")


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        23,
        24,
        255,
        256,
        65535,
        65536,
        2**32,
        2**64 - 1,
        -1,
        -25,
        -(2**40),
        b"",
        bytes(range(40)),
        "",
        "sql-lora",
        "ünïcødé" * 10,
        (),
        tuple(range(30)),
        (b"\x00" * 32, (1, 2, 3), None),
        (b"\x01" * 32, tuple(range(1000, 1016)), ("lora", ("mm", 3))),
        {"b": 1, "a": [1, 2], "cc": None, 10: "x"},
    ],
)
def test_cbor_is_canonical_cbor2(value: Any) -> None:
    assert cbor_dumps(value) == cbor2.dumps(value, canonical=True)


def test_external_form_is_the_low_64_bits() -> None:
    digest = bytes(range(32))
    assert external_block_hash(digest) == int.from_bytes(digest[-8:], "big")
    assert external_block_hash(digest, as_int=False) == digest
    assert int_block_hashes({}) is True
    assert int_block_hashes({"VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES": "0"}) is False


def test_the_internal_hasher_names_blocks_by_the_same_keys() -> None:
    """Without KV events blocks are named by Python's hash of the same chained triple."""
    from llmsim.engine.block_hash import internal_block_hasher

    tokens = TOKENS * 3
    chain = hash_block_chain(internal_block_hasher, tokens, 16)
    assert chain == hash_block_chain(internal_block_hasher, tokens, 16)
    assert len(set(chain)) == 3  # equal blocks, different parents: three names
    other = hash_block_chain(internal_block_hasher, [tokens[0] + 1, *tokens[1:]], 16)
    assert all(a != b for a, b in zip(chain, other, strict=True))  # a change flows down the chain
    lora = hash_block_chain(internal_block_hasher, tokens, 16, ("adapter",))
    assert not set(lora) & set(chain)
