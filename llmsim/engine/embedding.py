"""Deterministic text embeddings that behave like real ones where tests look.

A vector is a hashed bag of features (lower-cased words, and the character trigrams
inside them) projected onto ``dimension`` coordinates with a stable hash, then
L2-normalised. Identical texts give identical vectors (cosine 1.0); texts sharing most
of their words land close together, unrelated texts nearly orthogonal; small spelling
differences still share trigrams. Good enough for semantic-cache and RAG plumbing tests,
with no model and no randomness between processes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

_WORD_RE = re.compile(r"\w+")
WORD_WEIGHT = 1.0
TRIGRAM_WEIGHT = 0.35
SLOTS: tuple[tuple[int | None, float], ...] = ((16, 0.25), (256, 0.5), (None, 1.0), (None, 1.0))
"""Where each feature lands: (range of leading coordinates, None for all; weight). Two
full-range slots keep collisions from cancelling; the small-range ones put some of every
text into the first coordinates, so a prefix (``dimensions``) still means something, as
with Matryoshka-trained models."""


def _slots(feature: str, dimension: int) -> list[tuple[int, float]]:
    digest = hashlib.blake2b(feature.encode(), digest_size=8 * len(SLOTS)).digest()
    slots = []
    for k, (span, weight) in enumerate(SLOTS):
        value = int.from_bytes(digest[8 * k : 8 * k + 8], "little")
        sign = weight if value >> 63 else -weight
        slots.append((value % min(span or dimension, dimension), sign))
    return slots


def _features(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for word in _WORD_RE.findall(text.lower()):
        weights["w:" + word] = weights.get("w:" + word, 0.0) + WORD_WEIGHT
        padded = f"#{word}#"
        for start in range(len(padded) - 2):
            gram = "t:" + padded[start : start + 3]
            weights[gram] = weights.get(gram, 0.0) + TRIGRAM_WEIGHT
    return weights


def embed_text(text: str, dimension: int) -> list[float]:
    """The unit vector of ``text``."""
    return _project(_features(text), dimension)


def embed_ids(ids: Sequence[int], dimension: int) -> list[float]:
    """The unit vector of a token-id input: a bag of its ids."""
    weights: dict[str, float] = {}
    for token_id in ids:
        key = f"i:{token_id}"
        weights[key] = weights.get(key, 0.0) + 1.0
    return _project(weights, dimension)


def _project(weights: dict[str, float], dimension: int) -> list[float]:
    vector = [0.0] * dimension
    for feature, weight in weights.items():
        for index, sign in _slots(feature, dimension):
            vector[index] += sign * math.sqrt(weight)
    return normalize(vector)


def normalize(vector: list[float]) -> list[float]:
    """``vector`` scaled to length 1; an empty input becomes the first unit vector."""
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0.0:
        return [1.0] + [0.0] * (len(vector) - 1)
    return [value / norm for value in vector]
