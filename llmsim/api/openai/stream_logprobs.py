"""Logprobs and echo in a stream: per-choice positions and text offsets as chunks go out.

With ``echo`` and ``logprobs`` a choice's first chunk carries its whole prompt, every prompt
token with its alternatives: thousands of positions. Those are made before the stream starts
(:meth:`StreamLogprobs.prepare`), a slice at a time with the event loop free in between,
because the chunks themselves are written from the engine's timer callbacks, where a long
computation would hold every other request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from llmsim.api.http.jsonio import dumps
from llmsim.api.openai.logprobs import (
    LogprobSource,
    OutputPlan,
    Step,
    chat_content,
    completion_logprobs,
    piece_id,
    token_labels,
    top_dict,
)
from llmsim.engine import Sequence

PREPARE_SLICE = 16
"""Prompt positions made between two returns to the event loop."""


@dataclass
class EchoPrefix:
    """One choice's echoed prompt in the legacy ``logprobs`` arrays, made ahead of its chunk."""

    offsets: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    tops: list[bytes] = field(default_factory=list)
    """``top_logprobs`` entries, encoded, a slice per item."""
    end: int = 0
    """The text offset after the prompt."""
    token_ids: bool = False
    """Name tokens ``token_id:N`` (``--return-tokens-as-token-ids``)."""

    def add(self, texts: list[str], steps: list[Step | None]) -> None:
        for text in texts:
            self.offsets.append(self.end)
            self.end += len(text)
        ids = self.token_ids
        self.tokens.extend(token_labels(texts, steps, ids))
        self.values.extend(None if step is None else step.logprob for step in steps)
        self.tops.append(
            dumps([None if step is None else top_dict(step, ids) for step in steps])[1:-1]
        )

    def with_tokens(self, tokens: list[tuple[str, Step]]) -> bytes:
        """The first chunk's ``logprobs``: the prompt's entries, then its tokens'."""
        offsets, values = list(self.offsets), list(self.values)
        labels, tops = list(self.tokens), list(self.tops)
        end = self.end
        for text, step in tokens:
            offsets.append(end)
            end += len(text)
            values.append(step.logprob)
            labels += token_labels([text], [step], self.token_ids)
            tops.append(dumps(top_dict(step, self.token_ids)))
        return (
            b'{"text_offset":'
            + dumps(offsets)
            + b',"token_logprobs":'
            + dumps(values)
            + b',"tokens":'
            + dumps(labels)
            + b',"top_logprobs":['
            + b",".join(item for item in tops if item)
            + b"]}"
        )


class StreamLogprobs:
    """Per-choice position and text offset while a response streams."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self._positions: dict[int, int] = {}
        self._offsets: dict[int, int] = {}
        self._sources: dict[int, LogprobSource] = {}
        self._prefixes: dict[int, EchoPrefix] = {}

    async def prepare(self, indexes: list[int]) -> None:
        """Make the echoed prompts' logprobs of choices ``indexes`` ahead of their first chunk."""
        plan = self.plan
        if not plan.echo or plan.logprobs is None:
            return
        for index in indexes:
            prefix = EchoPrefix(token_ids=self.plan.token_ids)
            texts = plan.prompt_pieces(index)
            slices = plan.prompt_step_slices(index, plan.logprobs, PREPARE_SLICE)
            for number, steps in enumerate(slices):
                start = number * PREPARE_SLICE
                prefix.add(texts[start : start + PREPARE_SLICE], steps)
                await asyncio.sleep(0)
            self._prefixes[index] = prefix

    def _advance(self, sequence: Sequence, text: str) -> tuple[int, Step | None]:
        """The token's position and step (None for the empty end of an empty answer)."""
        index = sequence.index
        position = self._positions.get(index, 0)
        if not sequence.output or self.plan.logprobs is None:
            return position, None
        self._positions[index] = position + 1
        source = self._sources.get(index)
        if source is None:
            source = self._sources[index] = self.plan.source(index)
        token_id = piece_id(self.plan.tokenizer, text)
        return position, source.step(position, text, token_id, self.plan.logprobs)

    def _steps(self, sequence: Sequence, pieces: Seq[str]) -> list[tuple[str, Step]]:
        """The tokens ``pieces`` (one, or a stream-interval group) with their steps."""
        stepped = []
        for text in pieces:
            step = self._advance(sequence, text)[1]
            if step is not None:
                stepped.append((text, step))
        return stepped

    def chat(self, sequence: Sequence, pieces: Seq[str]) -> bytes:
        """The ``logprobs`` value of a chunk carrying the tokens ``pieces``."""
        steps = [step for _, step in self._steps(sequence, pieces)]
        if not steps:
            return b"null"
        return dumps({"content": chat_content(steps, self.plan.token_ids)})

    def completion(self, sequence: Sequence, pieces: Seq[str]) -> tuple[str, bytes]:
        """The text (the prompt first, with echo) and ``logprobs`` value of a chunk carrying
        the tokens ``pieces``."""
        plan, index = self.plan, sequence.index
        first = index not in self._offsets
        offset = self._offsets.get(index, 0)
        out_text = "".join(pieces)
        texts: list[str] = []
        steps: list[Step | None] = []
        prefix = None
        if first and plan.echo:
            out_text = plan.prompts[plan.prompt_of(index)] + out_text
            prefix = self._prefixes.pop(index, None)
            if plan.logprobs is not None and prefix is None:
                texts = plan.prompt_pieces(index)
                steps = plan.prompt_steps(index, plan.logprobs)
        stepped = self._steps(sequence, pieces)
        self._offsets[index] = offset + len(out_text)
        if plan.logprobs is None:
            return out_text, b"null"
        if prefix is not None:
            return out_text, prefix.with_tokens(stepped)
        for text, step in stepped:
            texts.append(text)
            steps.append(step)
        return out_text, dumps(completion_logprobs(texts, steps, offset, self.plan.token_ids))
