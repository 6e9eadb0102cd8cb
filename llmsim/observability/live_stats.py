"""Rates and latency percentiles over the last few seconds, for the live dashboard.

An engine observer like :class:`~llmsim.observability.metrics.Metrics`, but answering "what is
happening now" instead of "what happened since start": requests/s, tokens/s and
TTFT/ITL percentiles over a sliding window, and the last few error responses.

Memory and the cost of an event are bounded whatever the load: events are counted in
one bucket per second (the last ``window`` seconds are kept), and latencies go into
log-spaced bins (eight per doubling, so a percentile is within about 5 % of the exact
value). Attached only while the dashboard is on, so it costs nothing otherwise.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmsim.engine import Scheduler, Sequence

WINDOW_SECONDS = 10
RECENT_ERRORS = 8
MAX_MESSAGE_CHARS = 300

BINS_PER_DOUBLING = 8
SMALLEST = 1e-5
"""Latencies below 10 µs (and the zero gaps of tokens released together) share bin 0."""
BIN_COUNT = 1 + BINS_PER_DOUBLING * 32
"""Bin 1 starts at 10 µs; the last bin holds everything from about 11.9 hours up."""


def bin_index(seconds: float) -> int:
    if seconds < SMALLEST:
        return 0
    index = 1 + int(math.log2(seconds / SMALLEST) * BINS_PER_DOUBLING)
    return index if index < BIN_COUNT else BIN_COUNT - 1


def bin_value(index: int) -> float:
    """The representative value of a bin: its geometric middle (0 for bin 0)."""
    if index == 0:
        return 0.0
    return float(SMALLEST * 2 ** ((index - 0.5) / BINS_PER_DOUBLING))


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float
    p90: float
    p99: float
    count: int


def percentiles(bins: list[int]) -> Percentiles | None:
    """Nearest-rank p50/p90/p99 of binned latencies; None when there are none."""
    total = sum(bins)
    if not total:
        return None
    values = []
    for quantile in (0.50, 0.90, 0.99):
        rank = max(1, math.ceil(quantile * total))
        seen = 0
        for index, count in enumerate(bins):
            seen += count
            if seen >= rank:
                values.append(bin_value(index))
                break
    return Percentiles(values[0], values[1], values[2], total)


class _Second:
    """What happened during one whole second of the clock."""

    __slots__ = ("errors", "itl", "requests", "second", "tokens", "ttft")

    def __init__(self, second: int) -> None:
        self.second = second
        self.requests = 0
        self.tokens = 0
        self.errors = 0
        self.ttft = [0] * BIN_COUNT
        self.itl = [0] * BIN_COUNT


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One error response, as the dashboard lists it."""

    time: float
    """Wall-clock time (``time.time()``)."""
    status: int
    type: str
    message: str
    request: str
    """``METHOD /path``."""


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    window_seconds: float
    """The span the rates cover: the window, or the time since start if shorter."""
    requests_per_second: float
    tokens_per_second: float
    errors_per_second: float
    ttft: Percentiles | None
    itl: Percentiles | None
    total_requests: int
    total_tokens: int
    total_errors: int
    finished: dict[str, int]
    """Finished sequences by finish reason (stop, length, abort) since start."""
    recent_errors: tuple[ErrorEntry, ...]


class LiveStats:
    """Engine observer and error listener feeding the dashboard."""

    def __init__(
        self,
        window: int = WINDOW_SECONDS,
        recent_errors: int = RECENT_ERRORS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least one second")
        self.window = window
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._seconds = [_Second(-1) for _ in range(window)]
        self._errors: deque[ErrorEntry] = deque(maxlen=recent_errors)
        self._total_requests = 0
        self._total_tokens = 0
        self._total_errors = 0
        self._finished = {"stop": 0, "length": 0, "abort": 0}

    def _now(self) -> _Second:
        """The bucket of the current second, recycled from ``window`` seconds ago."""
        second = int(self._clock())
        bucket = self._seconds[second % self.window]
        if bucket.second != second:
            bucket = _Second(second)
            self._seconds[second % self.window] = bucket
        return bucket

    # -- EngineObserver ---------------------------------------------------------
    def request_submitted(self, n: int) -> None:
        self._now().requests += 1
        self._total_requests += 1

    def scheduler_changed(self, scheduler: Scheduler) -> None:
        return None  # the dashboard reads the scheduler's state when it draws

    def first_token(self, sequence: Sequence, time_to_first_token: float) -> None:
        bucket = self._now()
        bucket.ttft[bin_index(time_to_first_token)] += 1
        bucket.tokens += 1
        self._total_tokens += 1

    def next_tokens(self, sequence: Sequence, gap: float | None, overdue: int) -> None:
        bucket = self._now()
        itl = bucket.itl
        count = overdue
        if gap is not None:
            itl[bin_index(gap)] += 1
            count += 1
        itl[0] += overdue
        bucket.tokens += count
        self._total_tokens += count

    def zero_gap_tokens(self, count: int) -> None:
        bucket = self._now()
        bucket.itl[0] += count
        bucket.tokens += count
        self._total_tokens += count

    def sequence_finished(self, sequence: Sequence) -> None:
        reason = sequence.finish_reason or "abort"
        self._finished[reason] = self._finished.get(reason, 0) + 1

    def admission_rejected(self, reason: str) -> None:
        return None  # the refusal is an error response, which the dashboard counts

    # -- errors -----------------------------------------------------------------
    def record_error(
        self, status: int, error_type: str, message: str, method: str, path: str
    ) -> None:
        """An error response was sent (called by the HTTP layer)."""
        self._now().errors += 1
        self._total_errors += 1
        text = " ".join(message.split())  # one line on the dashboard
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + "…"
        self._errors.append(
            ErrorEntry(self._wall_clock(), status, error_type, text, f"{method} {path}")
        )

    # -- reading ----------------------------------------------------------------
    def snapshot(self) -> StatsSnapshot:
        now = self._clock()
        current = int(now)
        recent = [b for b in self._seconds if current - self.window < b.second <= current]
        # The buckets cover the whole seconds before this one plus this one so far.
        span = min(now - self._started, self.window - 1 + (now - current))
        span = max(span, 1e-3)
        ttft = [0] * BIN_COUNT
        itl = [0] * BIN_COUNT
        for bucket in recent:
            ttft = [a + b for a, b in zip(ttft, bucket.ttft, strict=True)]
            itl = [a + b for a, b in zip(itl, bucket.itl, strict=True)]
        return StatsSnapshot(
            window_seconds=span,
            requests_per_second=sum(b.requests for b in recent) / span,
            tokens_per_second=sum(b.tokens for b in recent) / span,
            errors_per_second=sum(b.errors for b in recent) / span,
            ttft=percentiles(ttft),
            itl=percentiles(itl),
            total_requests=self._total_requests,
            total_tokens=self._total_tokens,
            total_errors=self._total_errors,
            finished=dict(self._finished),
            recent_errors=tuple(self._errors),
        )
