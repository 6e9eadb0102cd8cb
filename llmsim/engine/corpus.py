"""Sentences that random-mode answers are made of, tokenized once at import."""

from __future__ import annotations

from collections.abc import Callable

from llmsim.engine.block_hash import output_token_id
from llmsim.engine.tokenizer import BuiltinTokenizer, tokenize

SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Large language models predict the next token from the tokens before it.",
    "Good tests fail for one reason and say clearly what went wrong.",
    "The scheduler admits waiting requests whenever a slot becomes free.",
    "Latency is measured from the moment the request arrives.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "Every gateway needs a backend that answers quickly and predictably.",
    "Prometheus scrapes the metrics endpoint every few seconds.",
    "The river wound slowly through the valley towards the distant sea.",
    "To be, or not to be, that is the question.",
    "Small adapters can specialise a base model for many different tasks.",
    "Caching keeps the most recently used items close at hand.",
    "The committee will meet again next Tuesday to review the proposal.",
    "She opened the window and let the morning air fill the room.",
    "Throughput rises with batch size until memory becomes the limit.",
    "In the beginning the universe was created, which made a lot of people very angry.",
    "Please let me know if there is anything else I can help you with.",
    "Here is a short summary of the main points discussed above.",
    "The data suggests a clear trend, although more samples would help.",
    "Autoscalers add replicas when queues grow and remove them when they drain.",
    "A well-designed interface hides complexity without hiding control.",
    "The old lighthouse keeper watched the storm roll in from the west.",
    "Each token arrives a few milliseconds after the one before it.",
    "Certainly! Let me explain how this works step by step.",
    "First, gather the requirements; then sketch a design and test it early.",
    "Bright stars shone above the quiet mountain village.",
    "Measure twice and cut once, as the carpenter always said.",
    "Mistakes are the portals of discovery.",
    "The answer depends on the context, the constraints and the goals.",
)

SENTENCE_TOKENS: tuple[tuple[str, ...], ...] = tuple(tuple(tokenize(s)) for s in SENTENCES)
"""Each sentence as it starts an answer."""

SPACED_SENTENCE_TOKENS: tuple[tuple[str, ...], ...] = tuple(
    tuple(tokenize(" " + s)) for s in SENTENCES
)
"""Each sentence as it follows another one."""


Pieces = tuple[tuple[str, ...], ...]
Ids = tuple[tuple[int, ...], ...]
_BY_SPLITTER: dict[Callable[[str], list[str]], tuple[Pieces, Pieces]] = {}


def corpus_tokens(split: Callable[[str], list[str]]) -> tuple[Pieces, Pieces]:
    """The sentences (plain, then spaced) split by another tokenizer's ``split``; cached."""
    cached = _BY_SPLITTER.get(split)  # first: one lookup on every request
    if cached is None:
        if split is tokenize or isinstance(getattr(split, "__self__", None), BuiltinTokenizer):
            cached = SENTENCE_TOKENS, SPACED_SENTENCE_TOKENS
        else:
            cached = (
                tuple(tuple(split(s)) for s in SENTENCES),
                tuple(tuple(split(" " + s)) for s in SENTENCES),
            )
        _BY_SPLITTER[split] = cached
    return cached


_IDS_BY_SPLITTER: dict[Callable[[str], list[str]], tuple[Ids, Ids]] = {}


def corpus_ids(split: Callable[[str], list[str]]) -> tuple[Ids, Ids]:
    """The ids of :func:`corpus_tokens`' pieces (:func:`output_token_id`); cached.

    A random answer built from them carries its token ids, so the step engine's prefix cache
    names the blocks of generated text without looking up each token.
    """
    cached = _IDS_BY_SPLITTER.get(split)
    if cached is None:
        plain, spaced = corpus_tokens(split)
        cached = (
            tuple(tuple(map(output_token_id, piece)) for piece in plain),
            tuple(tuple(map(output_token_id, piece)) for piece in spaced),
        )
        _IDS_BY_SPLITTER[split] = cached
    return cached
