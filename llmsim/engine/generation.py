"""What a simulated model says: echo and random answers, stop strings, finish reasons.

Outputs are produced in full when a request is submitted; the scheduler and the
latency model then decide *when* each token is released. Generation is cheap (a few
list operations) and keeping it apart from timing keeps both simple.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Literal

from llmsim.engine.answer import Answer, ToolCall
from llmsim.engine.corpus import corpus_ids, corpus_tokens
from llmsim.engine.tokenizer import tokenize

Splitter = Callable[[str], list[str]]

FinishReason = Literal["stop", "length"]
Mode = Literal["echo", "random"]


@dataclass(frozen=True, slots=True)
class ToolSpan:
    """A tool call inside a sequence's output: its arguments are ``output[start:end]``.

    The arguments are tokens like any other, so they are paced, counted in usage and cut
    by ``max_tokens``; a cut call keeps the arguments generated so far, as vLLM does.
    """

    name: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class GeneratedText:
    tokens: list[str]
    finish_reason: FinishReason
    stop_reason: str | None = None
    tool_calls: tuple[ToolSpan, ...] = ()
    reported_finish: str | None = None
    """What the API reports when it differs from the engine's reason (``tool_calls``)."""
    ids: list[int] | None = None
    """The tokens' ids, when they were asked for and came at no cost (random answers)."""
    reasoning_end: int = 0
    """The output's first ``reasoning_end`` tokens are the model's thought (a reasoning parser)."""


def generate(
    *,
    answer: Answer | None = None,
    mode: Mode,
    echo_text: str,
    max_tokens: int | None,
    budget: int,
    ignore_eos: bool,
    stop: Seq[str],
    rng: random.Random,
    split: Splitter = tokenize,
    with_ids: bool = False,
    reasoning: bool = False,
) -> GeneratedText:
    """Produce one sequence's output.

    ``budget`` is what the context window leaves after the prompt; ``max_tokens`` is the
    client's limit (None when not given). Echo ignores ``max_tokens`` and ``ignore_eos``
    because it exists for wiring tests, where the exact text matters more than length.
    A chosen ``answer`` replaces the mode; its text is cut like a random answer. Stop strings
    do not cut tool calls: their arguments end where the call ends or ``max_tokens`` cuts.
    ``split`` is the configured tokenizer's, so every count is in its tokens. With
    ``reasoning`` the output starts with a thought (:func:`_thinking_first`).
    """
    if max_tokens == 0:  # echo-only requests (completions ``echo`` with ``max_tokens: 0``)
        return GeneratedText([], "length")
    if reasoning:
        thought = _thought(rng, split)
        return _thinking_first(
            thought, answer, mode, echo_text, max_tokens, budget, ignore_eos, stop, rng, split
        )
    if answer is not None:
        limit = budget if max_tokens is None else min(max_tokens, budget)
        if answer.tool_calls:
            return _tool_call_answer(answer, limit, split)
        result = _answer_text(answer, limit, split)
    elif mode == "echo":
        result = _truncate(split(echo_text), budget)
    else:
        limit = budget if max_tokens is None else min(max_tokens, budget)
        result = _random_answer(limit, ignore_eos, rng, split, with_ids)
    return apply_stop(result, stop, split) if stop else result


def _thought(rng: random.Random, split: Splitter) -> list[str]:
    """A short simulated thought: one or two corpus sentences, drawn from the request's
    generator (a seeded request thinks the same thought)."""
    sentence_tokens, spaced_sentence_tokens = corpus_tokens(split)
    count = len(sentence_tokens)
    tokens = list(sentence_tokens[rng.randrange(count)])
    if rng.random() < 0.5:
        tokens.extend(spaced_sentence_tokens[rng.randrange(count)])
    return tokens


def _thinking_first(
    thought: list[str],
    answer: Answer | None,
    mode: Mode,
    echo_text: str,
    max_tokens: int | None,
    budget: int,
    ignore_eos: bool,
    stop: Seq[str],
    rng: random.Random,
    split: Splitter,
) -> GeneratedText:
    """The thought, then the answer within what the thought left of ``max_tokens`` and the
    context: the thought is generated first, so a small limit cuts the thought (no answer)."""
    limit = budget if max_tokens is None else min(max_tokens, budget)
    size = len(thought)
    if size >= limit:
        return GeneratedText(thought[:limit], "length", reasoning_end=limit)
    rest = generate(
        answer=answer,
        mode=mode,
        echo_text=echo_text,
        max_tokens=None if max_tokens is None else max_tokens - size,
        budget=budget - size,
        ignore_eos=ignore_eos,
        stop=stop,
        rng=rng,
        split=split,
    )
    calls = tuple(
        ToolSpan(span.name, span.start + size, span.end + size) for span in rest.tool_calls
    )
    return GeneratedText(
        thought + rest.tokens,
        rest.finish_reason,
        rest.stop_reason,
        calls,
        rest.reported_finish,
        reasoning_end=size,
    )


def _answer_text(answer: Answer, limit: int, split: Splitter) -> GeneratedText:
    result = _truncate(split(answer.text), limit)
    if result.finish_reason == "length" or answer.finish_reason in (None, "stop"):
        return result
    if answer.finish_reason == "length":
        return GeneratedText(result.tokens, "length")
    return GeneratedText(result.tokens, "stop", reported_finish=answer.finish_reason)


def _tool_call_answer(answer: Answer, limit: int, split: Splitter) -> GeneratedText:
    """Text (if any), then each call's argument tokens; calls cut off entirely are dropped."""
    tokens = split(answer.text)
    spans: list[ToolSpan] = []
    for call in answer.tool_calls:
        start = len(tokens)
        tokens.extend(_argument_tokens(call, split))
        spans.append(ToolSpan(call.name, start, len(tokens)))
    if len(tokens) > limit:
        kept = tuple(span for span in spans if span.start < limit)
        return GeneratedText(tokens[:limit], "length", tool_calls=kept)
    reported = answer.finish_reason or "tool_calls"
    if reported == "length":
        return GeneratedText(tokens, "length", tool_calls=tuple(spans))
    return GeneratedText(tokens, "stop", tool_calls=tuple(spans), reported_finish=reported)


def _argument_tokens(call: ToolCall, split: Splitter) -> list[str]:
    """At least one token per call, so every call is streamed and counted."""
    return split(call.arguments) or [""]


def _truncate(tokens: list[str], limit: int) -> GeneratedText:
    if len(tokens) > limit:
        return GeneratedText(tokens[:limit], "length")
    return GeneratedText(tokens, "stop")


def _random_answer(
    limit: int, ignore_eos: bool, rng: random.Random, split: Splitter, with_ids: bool = False
) -> GeneratedText:
    """Whole sentences up to a sampled length; cut at ``limit`` if they run over."""
    if limit <= 0:
        return GeneratedText([], "length")
    sentence_tokens, spaced_sentence_tokens = corpus_tokens(split)
    target = limit if ignore_eos else 1 + _below(rng.getrandbits, limit)
    count = len(sentence_tokens)
    sentence_ids, spaced_sentence_ids = corpus_ids(split) if with_ids else ((), ())
    draw, bits = rng.getrandbits, count.bit_length()
    tokens: list[str] = []
    ids: list[int] | None = [] if with_ids else None  # the same draws, each sentence's ids
    texts, text_ids = sentence_tokens, sentence_ids  # the first sentence unspaced, then spaced
    while len(tokens) < target:  # every random answer runs this: _below's draws, written out
        pick = draw(bits)
        while pick >= count:
            pick = draw(bits)
        tokens.extend(texts[pick])
        if ids is not None:
            ids.extend(text_ids[pick])
        texts, text_ids = spaced_sentence_tokens, spaced_sentence_ids
    if len(tokens) >= limit:
        return GeneratedText(tokens[:limit], "length", ids=None if ids is None else ids[:limit])
    return GeneratedText(tokens, "stop", ids=ids)


def _below(draw: Callable[[int], int], n: int) -> int:
    """``random.Random.randrange(n)`` for ``n >= 1``, drawn as the standard library
    draws it (so seeded answers stay the same) from the generator's ``getrandbits``."""
    bits = n.bit_length()
    pick = draw(bits)
    while pick >= n:
        pick = draw(bits)
    return pick


def apply_stop(result: GeneratedText, stop: Seq[str], split: Splitter = tokenize) -> GeneratedText:
    """Cut the output before the first stop string, as vLLM does (string not included)."""
    text = "".join(result.tokens)
    best: tuple[int, str] | None = None
    for candidate in stop:
        if not candidate:
            continue
        position = text.find(candidate)
        if position >= 0 and (best is None or position < best[0]):
            best = (position, candidate)
    if best is None:
        return result
    return GeneratedText(split(text[: best[0]]), "stop", best[1])
