"""What the engine tells the outside world (metrics, dashboards) as things happen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmsim.engine.scheduler import Scheduler
    from llmsim.engine.sequence import Sequence


class EngineObserver(Protocol):
    def request_submitted(self, n: int) -> None:
        """A request's sequences were accepted (once per request, not per sequence)."""

    def scheduler_changed(self, scheduler: Scheduler) -> None:
        """Something entered, left or moved between the queue and the running set."""

    def first_token(self, sequence: Sequence, time_to_first_token: float) -> None: ...

    def next_tokens(self, sequence: Sequence, gap: float | None, overdue: int) -> None:
        """Tokens after the first, released in one batch: one after ``gap`` seconds
        (None when the batch began with the first token), then ``overdue`` more that were
        already due, each with a gap of 0."""

    def zero_gap_tokens(self, count: int) -> None:
        """``count`` tokens after the first ones of their sequences, each with a gap of 0,
        from sequences not told apart (a zero-latency run of decode steps)."""

    def sequence_finished(self, sequence: Sequence) -> None:
        """Finished or aborted; ``sequence.finish_reason`` says which."""

    def admission_rejected(self, reason: str) -> None:
        """A request was refused over a queue limit (:mod:`llmsim.engine.admission`)."""


class NullObserver:
    """Observer for engines used without metrics (unit tests, embedding)."""

    def request_submitted(self, n: int) -> None:
        return None

    def scheduler_changed(self, scheduler: Scheduler) -> None:
        return None

    def first_token(self, sequence: Sequence, time_to_first_token: float) -> None:
        return None

    def next_tokens(self, sequence: Sequence, gap: float | None, overdue: int) -> None:
        return None

    def zero_gap_tokens(self, count: int) -> None:
        return None

    def sequence_finished(self, sequence: Sequence) -> None:
        return None

    def admission_rejected(self, reason: str) -> None:
        return None


class FanOutObserver:
    """Passes every event to several observers (metrics and the dashboard's live stats).

    Only used when a second observer is attached, so the usual single-observer path
    pays nothing for it.
    """

    def __init__(self, *observers: EngineObserver) -> None:
        self.observers = observers

    def request_submitted(self, n: int) -> None:
        for observer in self.observers:
            observer.request_submitted(n)

    def scheduler_changed(self, scheduler: Scheduler) -> None:
        for observer in self.observers:
            observer.scheduler_changed(scheduler)

    def first_token(self, sequence: Sequence, time_to_first_token: float) -> None:
        for observer in self.observers:
            observer.first_token(sequence, time_to_first_token)

    def next_tokens(self, sequence: Sequence, gap: float | None, overdue: int) -> None:
        for observer in self.observers:
            observer.next_tokens(sequence, gap, overdue)

    def zero_gap_tokens(self, count: int) -> None:
        for observer in self.observers:
            observer.zero_gap_tokens(count)

    def sequence_finished(self, sequence: Sequence) -> None:
        for observer in self.observers:
            observer.sequence_finished(sequence)

    def admission_rejected(self, reason: str) -> None:
        for observer in self.observers:
            observer.admission_rejected(reason)
