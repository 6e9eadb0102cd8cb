"""Logprobs, echo and prompt logprobs: what a request asked for and the values it gets.

A simulator has no model, so the values are made up, but made up plausibly and
reproducibly: each position draws a short ranked list of logits from a generator seeded
by (request seed, choice, position), so the same ``seed`` gives the same numbers in a
JSON answer and in a stream. The sampled token is the most likely one; temperature
scales the logits, so as it goes to 0 the sampled token's logprob goes to 0 and the
alternatives fall away. Alternatives are other tokens of the configured tokenizer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmsim.api.http.errors import APIError
from llmsim.api.openai.prompts import render_chat
from llmsim.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from llmsim.engine import Sequence as Sequence_
from llmsim.engine.corpus import SENTENCES
from llmsim.engine.tokenizer import Tokenizer, TokenizerError
from llmsim.service.prompts import piece_id as piece_id  # also for the stream writers
from llmsim.service.prompts import prompt_text
from llmsim.service.sampling import check_logprobs_limit

MIN_LOGPROB = -9999.0
"""vLLM's floor for a logprob (it never sends ``-inf``)."""
RANKED = 20
"""Logits drawn per position, whatever the request asks for, so values don't depend on k."""
MIN_TEMPERATURE = 0.001


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    token_id: int


_POOLS: dict[int, tuple[Candidate, ...]] = {}


def candidates(tokenizer: Tokenizer) -> tuple[Candidate, ...]:
    """Distinct single-token strings of ``tokenizer`` to offer as alternatives (cached)."""
    pool = _POOLS.get(id(tokenizer))
    if pool is None:
        seen: dict[str, Candidate] = {}
        for sentence in SENTENCES:
            for piece in tokenizer.split(" " + sentence):
                if piece and piece not in seen:
                    ids = tokenizer.encode(piece)
                    if len(ids) == 1:
                        seen[piece] = Candidate(piece, ids[0])
        pool = tuple(seen.values())
        _POOLS[id(tokenizer)] = pool
    return pool


@dataclass(frozen=True, slots=True)
class Step:
    """One position: the token's logprob and rank, and the ranked alternatives."""

    token: Candidate
    logprob: float
    rank: int
    top: list[tuple[Candidate, float]]
    """The ``k`` most likely tokens, most likely first (the token itself among them if
    its rank is at most ``k``)."""


class LogprobSource:
    """Reproducible logprobs for one choice of one request."""

    def __init__(
        self, tokenizer: Tokenizer, seed: int, index: int, temperature: float | None
    ) -> None:
        self._pool = candidates(tokenizer)
        self._seed = seed
        self._index = index
        temperature = 1.0 if temperature is None else temperature
        self._temperature = max(temperature, MIN_TEMPERATURE)

    def step(
        self, position: int, token: str, token_id: int, k: int, *, prompt: bool = False
    ) -> Step:
        """Position ``position`` holding ``token``; prompt tokens are not always the top one."""
        rng = random.Random(hash((self._seed, self._index, position, prompt)))
        ranked = max(RANKED, k + 1)
        logits = [0.0]
        gap = 0.1 + rng.expovariate(1 / 1.5)  # the sampled token leads by a margin
        for _ in range(ranked):
            logits.append(logits[-1] - gap)
            gap = rng.expovariate(1 / 0.7)
        temperature = 1.0 if prompt else self._temperature
        scaled = [value / temperature for value in logits]
        tail = scaled[-1] - 2.0 / temperature  # the rest of the vocabulary, in one term
        peak = scaled[0]
        norm = peak + math.log(sum(math.exp(v - peak) for v in [*scaled, tail]))
        logprobs = [max(v - norm, MIN_LOGPROB) for v in scaled[:ranked]]
        rank = 1
        if prompt:
            rank = rng.choice((1, 1, 1, 2, 2, 3, 4))
        others = self._alternatives(rng, token, ranked - 1)
        ordered = [*others[: rank - 1], Candidate(token, token_id), *others[rank - 1 :]]
        top = list(zip(ordered[:k], logprobs[:k], strict=False))
        return Step(ordered[rank - 1], logprobs[rank - 1], rank, top)

    def _alternatives(self, rng: random.Random, token: str, count: int) -> list[Candidate]:
        picks = rng.sample(self._pool, min(count + 1, len(self._pool)))
        return [pick for pick in picks if pick.text != token][:count]


@dataclass
class OutputPlan:
    """What a request asked for beyond the text: logprobs, echo, prompt logprobs."""

    tokenizer: Tokenizer
    seed: int
    temperature: float | None
    logprobs: int | None = None
    """Top alternatives per generated token; None when logprobs are off."""
    prompt_logprobs: int | None = None
    echo: bool = False
    prompts: list[str] = field(default_factory=list)
    """Each prompt's text (echo, prompt logprobs)."""
    prompt_ids: list[list[int]] = field(default_factory=list)
    n: int = 1
    token_ids: bool = False
    """Name tokens ``token_id:N`` (vLLM's ``--return-tokens-as-token-ids``)."""

    def source(self, index: int) -> LogprobSource:
        return LogprobSource(self.tokenizer, self.seed, index, self.temperature)

    def prompt_of(self, index: int) -> int:
        """Which prompt a choice answers (choices are numbered prompt by prompt)."""
        return index // self.n

    def generated_steps(self, index: int, pieces: Sequence[str], start: int = 0) -> list[Step]:
        source = self.source(index)
        k = self.logprobs or 0
        return [
            source.step(position, piece, piece_id(self.tokenizer, piece), k)
            for position, piece in enumerate(pieces, start)
        ]

    def prompt_pieces(self, index: int) -> list[str]:
        """The prompt as one string per token id (with the model's special tokens)."""
        return token_texts(self.tokenizer, self.prompt_ids[self.prompt_of(index)])

    def prompt_step_slices(self, index: int, k: int, size: int) -> Iterator[list[Step | None]]:
        """:meth:`prompt_steps` in slices of ``size`` positions, each made when it is taken."""
        source = self.source(index)
        ids = self.prompt_ids[self.prompt_of(index)]
        if not ids:
            yield [None]  # as prompt_steps: the first position never has logprobs
        for start in range(0, len(ids), size):
            part = ids[start : start + size]
            texts = token_texts(self.tokenizer, part)
            yield [
                None if position == 0 else source.step(position, text, token_id, k, prompt=True)
                for position, text, token_id in zip(
                    range(start, start + len(part)), texts, part, strict=True
                )
            ]

    def prompt_steps(self, index: int, k: int) -> list[Step | None]:
        """Logprobs of the prompt's tokens: none for the first one, as vLLM."""
        source = self.source(index)
        ids = self.prompt_ids[self.prompt_of(index)]
        texts = token_texts(self.tokenizer, ids)
        steps: list[Step | None] = [None]
        for position in range(1, len(ids)):
            steps.append(source.step(position, texts[position], ids[position], k, prompt=True))
        return steps


def token_texts(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own; an id outside the vocabulary reads ``token_id:N``."""
    texts = []
    for token_id in ids:
        try:
            texts.append(tokenizer.decode([token_id]))
        except TokenizerError:
            texts.append(f"token_id:{token_id}")
    return texts


def prompt_logprobs_json(steps: Sequence[Step | None]) -> list[dict[str, Any] | None]:
    """vLLM's ``prompt_logprobs``: per token ``{id: {logprob, rank, decoded_token}}``."""
    out: list[dict[str, Any] | None] = []
    for step in steps:
        if step is None:
            out.append(None)
            continue
        token = step.token
        entry = {str(token.token_id): _logprob(step.logprob, step.rank, token.text)}
        for position, (candidate, logprob) in enumerate(step.top, 1):
            entry.setdefault(str(candidate.token_id), _logprob(logprob, position, candidate.text))
        out.append(entry)
    return out


def _logprob(logprob: float, rank: int, text: str) -> dict[str, Any]:
    return {"logprob": logprob, "rank": rank, "decoded_token": text}


def chat_content(steps: Sequence[Step], token_ids: bool = False) -> list[dict[str, Any]]:
    """Chat's ``logprobs.content`` entries."""
    return [
        {
            **_chat_token(_label(step.token, token_ids), step.logprob),
            "top_logprobs": [_chat_token(_label(c, token_ids), logprob) for c, logprob in step.top],
        }
        for step in steps
    ]


def _label(candidate: Candidate, token_ids: bool) -> str:
    """How a token is named in logprobs: its text, or ``token_id:N``."""
    return f"token_id:{candidate.token_id}" if token_ids else candidate.text


def _chat_token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def completion_logprobs(
    texts: Sequence[str], steps: Sequence[Step | None], offset: int = 0, token_ids: bool = False
) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object; ``offset`` is where ``texts`` start."""
    offsets: list[int] = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {
        "text_offset": offsets,
        "token_logprobs": [None if step is None else step.logprob for step in steps],
        "tokens": token_labels(texts, steps, token_ids),
        "top_logprobs": [None if step is None else top_dict(step, token_ids) for step in steps],
    }


def token_labels(texts: Sequence[str], steps: Sequence[Step | None], token_ids: bool) -> list[str]:
    """Tokens as the legacy ``tokens`` array names them: their texts or, with
    ``--return-tokens-as-token-ids``, ``token_id:N`` where a step gives the id (an echoed
    prompt may have more texts than steps, or fewer)."""
    if not token_ids:
        return list(texts)
    labels = []
    for i, text in enumerate(texts):
        step = steps[i] if i < len(steps) else None
        labels.append(text if step is None else _label(step.token, True))
    return labels


def top_dict(step: Step, token_ids: bool = False) -> dict[str, float]:
    top = {_label(step.token, token_ids): step.logprob}
    for candidate, logprob in step.top:
        top.setdefault(_label(candidate, token_ids), logprob)
    return top


def chat_plan(
    body: ChatCompletionRequest, tokenizer: Tokenizer, max_logprobs: int
) -> OutputPlan | None:
    """What a chat request asked for beyond text; None (the fast path) if nothing."""
    if not body.logprobs and not body.top_logprobs and body.prompt_logprobs is None:
        return None  # the common case: nothing to check or plan
    if body.top_logprobs and not body.logprobs:
        raise APIError(
            400, "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs"
        )
    top = (body.top_logprobs or 0) if body.logprobs else None
    check_logprobs_limit(top, max_logprobs)
    check_logprobs_limit(body.prompt_logprobs, max_logprobs, "prompt")
    if top is None and body.prompt_logprobs is None:
        return None
    plan = _plan(body, tokenizer, top)
    if body.prompt_logprobs is not None:
        text = render_chat(body, tokenizer)
        plan.prompts = [text]
        plan.prompt_ids = [tokenizer.encode(text)]
    return plan


def completion_plan(
    body: CompletionRequest, tokenizer: Tokenizer, max_logprobs: int
) -> OutputPlan | None:
    """What a completions request asked for beyond text; None (the fast path) if nothing."""
    check_logprobs_limit(body.logprobs, max_logprobs)
    check_logprobs_limit(body.prompt_logprobs, max_logprobs, "prompt")
    if body.logprobs is None and body.prompt_logprobs is None and not body.echo:
        return None
    plan = _plan(body, tokenizer, body.logprobs)
    plan.echo = bool(body.echo)
    prompt = body.prompt
    items: list[str | list[int]]
    if isinstance(prompt, str):
        items = [prompt]
    elif all(isinstance(item, int) for item in prompt):
        items = [prompt]  # type: ignore[list-item]
    else:
        items = list(prompt)  # type: ignore[arg-type]
    for item in items:
        if isinstance(item, str):
            plan.prompts.append(item)
            plan.prompt_ids.append(tokenizer.encode(item, add_special_tokens=True))
        else:
            plan.prompts.append(prompt_text(item, tokenizer))
            plan.prompt_ids.append(list(item))
    return plan


def _plan(
    body: ChatCompletionRequest | CompletionRequest, tokenizer: Tokenizer, top: int | None
) -> OutputPlan:
    seed = body.seed if body.seed is not None else random.getrandbits(63)
    return OutputPlan(
        tokenizer=tokenizer,
        seed=seed,
        temperature=body.temperature,
        logprobs=top,
        prompt_logprobs=body.prompt_logprobs,
        n=body.n,
    )


def _generated(sequence: Sequence_) -> list[str]:
    return sequence.output[: sequence.generated]


def completion_extras(
    plan: OutputPlan, sequence: Sequence_
) -> tuple[str, dict[str, Any] | None, list[dict[str, Any] | None] | None]:
    """A completions choice's text (echoed prompt first), logprobs and prompt logprobs."""
    index = sequence.index
    pieces = _generated(sequence)
    text = sequence.text
    if plan.echo:
        text = plan.prompts[plan.prompt_of(index)] + text
    logprobs = None
    if plan.logprobs is not None:
        texts: list[str] = []
        steps: list[Step | None] = []
        if plan.echo:
            texts = plan.prompt_pieces(index)
            steps = plan.prompt_steps(index, plan.logprobs)
        texts += pieces
        steps += plan.generated_steps(index, pieces)
        logprobs = completion_logprobs(texts, steps, token_ids=plan.token_ids)
    prompt_logprobs = None
    if plan.prompt_logprobs is not None:
        prompt_logprobs = prompt_logprobs_json(plan.prompt_steps(index, plan.prompt_logprobs))
    return text, logprobs, prompt_logprobs


def chat_logprobs(plan: OutputPlan, sequence: Sequence_) -> dict[str, Any] | None:
    if plan.logprobs is None:
        return None
    steps = plan.generated_steps(sequence.index, _generated(sequence))
    return {"content": chat_content(steps, plan.token_ids)}


def chat_prompt_logprobs(plan: OutputPlan) -> list[dict[str, Any] | None] | None:
    if plan.prompt_logprobs is None:
        return None
    return prompt_logprobs_json(plan.prompt_steps(0, plan.prompt_logprobs))
