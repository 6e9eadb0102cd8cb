"""What an answer source decides for one request."""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.engine import Answer, TimingOverride


@dataclass(frozen=True, slots=True)
class RuleError:
    """An error answer chosen instead of tokens (status, vLLM error type, message)."""

    status: int
    type: str
    message: str


@dataclass(frozen=True, slots=True)
class Choice:
    """A chosen answer (or error) with the overrides that go with it.

    ``source`` names where it came from (``rule 'weather'``, ``builtin:tasks``,
    ``dataset``, ``replay``), for logs and tests.
    """

    source: str
    answer: Answer | None = None
    error: RuleError | None = None
    max_tokens: int | None = None
    timing: TimingOverride | None = None
