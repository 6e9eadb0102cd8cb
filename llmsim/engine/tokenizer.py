"""The built-in tokenizer: fast, deterministic and lossless.

A token is a run of at most 8 word characters, or one punctuation character, each with
the whitespace in front of it; trailing whitespace is a token of its own. Joining the
tokens gives back the text exactly, so the same function counts prompt tokens, splits
generated text into streamed chunks and counts ``usage.completion_tokens``, and all
three always agree. English prose comes out at roughly 1.2 tokens per word, close to
what BPE tokenizers of real models produce.
"""

from __future__ import annotations

import re
from functools import lru_cache
from hashlib import blake2b

MAX_WORD_PIECE = 8
_TOKEN_RE = re.compile(rf"\s*\w{{1,{MAX_WORD_PIECE}}}|\s*[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens whose concatenation is ``text``."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens in ``text`` (same as ``len(tokenize(text))``)."""
    return len(_TOKEN_RE.findall(text))


@lru_cache(maxsize=1 << 16)
def token_id(token: str) -> int:
    """A token's id: the first four bytes of its BLAKE2b digest.

    Derived from the token's text alone (never from Python's salted ``hash()``), so every
    process, data-parallel rank and restart gives the same text the same ids, and
    prefix-cache block hashes agree across instances.
    """
    return int.from_bytes(blake2b(token.encode(), digest_size=4).digest(), "big")


def token_ids(text: str) -> list[int]:
    """The stable ids of ``text``'s tokens (as many as ``count_tokens(text)``)."""
    return [token_id(token) for token in _TOKEN_RE.findall(text)]
