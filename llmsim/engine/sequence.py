"""One sequence (a choice of a request) and everything measured about it.

vLLM schedules sequences, not HTTP requests: a request with ``n=3`` or three prompts
becomes three sequences, each counting against ``max_running_requests``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Literal

from llmsim.engine.generation import ToolSpan
from llmsim.engine.timing import TimingOverride

FinishReason = Literal["stop", "length", "abort"]


class State(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    request_id: str
    index: int
    adapter: str | None
    prompt_tokens: int
    output: list[str]
    natural_finish: FinishReason
    """How the output ends: ``stop`` or ``length``, or ``abort`` once the engine cut it short."""
    stop_reason: str | None
    max_tokens: int
    n: int
    arrival: float
    admitted: asyncio.Future[None] | None = field(repr=False)
    """Resolved when a waiting sequence is admitted; None for one admitted at once (made
    only for a sequence that has to wait: a stream keeps it for its whole life)."""
    state: State = State.WAITING
    scheduled_at: float | None = None
    ready_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    finished_at: float | None = None
    generated: int = 0
    finish_reason: FinishReason | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    """The task releasing this sequence's tokens, so shutdown can cancel it."""
    timing: TimingOverride | None = None
    """The request's own timing, replacing the configured latency means."""
    kv_transfer_delay: float | None = None
    """P/D decode side: the prompt's KV cache is received (this long) instead of computed."""
    tool_calls: tuple[ToolSpan, ...] = ()
    """Tool calls in the output (their arguments are tokens of ``output``)."""
    reported_finish: str | None = None
    """The API's finish reason when it is not the engine's (``tool_calls``)."""
    prompt_token_ids: Seq[int] | None = field(default=None, repr=False)
    """The prompt's token ids, carried only when the step engine hashes prefix blocks."""
    output_ids: Seq[int] | None = field(default=None, repr=False)
    """The output's token ids when generation knew them (random answers, step engine only;
    a simulated answer's are a range, never copied)."""
    reasoning_end: int = 0
    """The output's first tokens that are the model's thought (with a reasoning parser)."""
    cached_tokens: int = 0
    """Prompt tokens found in the prefix cache when the step engine first scheduled it."""
    num_preemptions: int = 0
    """Times the step engine preempted it (its KV freed, to be computed again)."""
    priority: int = 0
    """The request's priority (lower first), read with ``--scheduling-policy priority``."""

    def queue_key(self) -> tuple[int, float]:
        """Its place in a priority-ordered queue."""
        return self.priority, self.arrival

    @property
    def api_finish_reason(self) -> str:
        """``finish_reason`` as the API reports it (the engine's metrics keep the engine's)."""
        return self.reported_finish or self.natural_finish

    @property
    def cut_short(self) -> bool:
        """The engine ended it early (sleep's ``abort``): no more tokens will come."""
        return self.natural_finish == "abort"

    def cut(self) -> None:
        """End the output at the tokens already produced, reporting ``abort`` as vLLM does.

        A tool call not yet begun goes; one under way keeps the arguments streamed so far.
        """
        generated = self.generated
        del self.output[generated:]
        self.natural_finish = "abort"
        self.stop_reason = None
        self.reported_finish = None
        if self.tool_calls:
            self.tool_calls = tuple(span for span in self.tool_calls if span.start < generated)

    @property
    def kv_tokens(self) -> int:
        """Tokens this sequence holds in the simulated KV cache."""
        return self.prompt_tokens + self.generated

    @property
    def text(self) -> str:
        return "".join(self.output)
