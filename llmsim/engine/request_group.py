"""The sequences of one API request: run together, counted together, aborted together."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmsim.engine.pacer import TokenSink
from llmsim.engine.request import GenerationRequest
from llmsim.engine.sequence import Sequence

if TYPE_CHECKING:
    from llmsim.engine.engine import Engine


class RequestGroup:
    """The sequences of one API request, run together and aborted together."""

    __slots__ = ("engine", "request", "sequences")

    def __init__(
        self, engine: Engine, request: GenerationRequest, sequences: list[Sequence]
    ) -> None:
        self.engine = engine
        self.request = request
        self.sequences = sequences

    @property
    def prompt_tokens(self) -> int:
        """Usage counts each prompt once, however many choices it has."""
        prompts = self.request.prompts
        if len(prompts) == 1:
            return prompts[0].token_count
        return sum(prompt.token_count for prompt in prompts)

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens found in the prefix cache, counted once per prompt (its first choice)."""
        return sum(sequence.cached_tokens for sequence in self.sequences[:: self.request.n])

    @property
    def completion_tokens(self) -> int:
        sequences = self.sequences
        if len(sequences) == 1:
            return sequences[0].generated
        return sum(sequence.generated for sequence in sequences)

    def run(self, sink: TokenSink | None = None) -> Coroutine[Any, Any, None]:
        """Run the sequences to their end (one alone: its own run, not one more frame)."""
        if len(self.sequences) == 1:
            return self.engine.run_sequence(self.sequences[0], sink)
        return self._run_all(sink)

    async def _run_all(self, sink: TokenSink | None) -> None:
        tasks = [
            asyncio.ensure_future(self.engine.run_sequence(sequence, sink))
            for sequence in self.sequences
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def abort(self) -> None:
        step = self.engine.step
        for sequence in self.sequences:
            if step is not None:
                step.abort(sequence)
            self.engine.scheduler.abort(sequence)

    def __enter__(self) -> RequestGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()
