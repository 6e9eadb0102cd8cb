"""An answer decided before generation: fixed text, or tool calls.

Tool calls, structured outputs, response rules, datasets and replays all decide *what* a
sequence says before it runs; the engine still decides *when* each token is released, so a
chosen answer flows through the scheduler, the latency model and the metrics like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call: ``arguments`` is the JSON text the client receives."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What every sequence of a request says, cut by ``max_tokens`` and the context window.

    ``finish_reason`` overrides the natural one (``stop``, or ``tool_calls`` when there are
    tool calls) when the answer is not cut short.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None
    others: tuple[Answer, ...] = ()
    """What choices 1, 2, ... of an ``n > 1`` request say (a replayed recording's other
    choices), in turn; without them every choice says this answer."""

    @property
    def size(self) -> int:
        """Characters a choice tokenizes (the most of any choice's answer)."""
        own = len(self.text) + sum(len(call.arguments) for call in self.tool_calls)
        return max([own, *(other.size for other in self.others)])

    def for_choice(self, index: int) -> Answer:
        """The answer of choice ``index`` (0 is this one)."""
        if index == 0 or not self.others:
            return self
        return self.others[(index - 1) % len(self.others)]
