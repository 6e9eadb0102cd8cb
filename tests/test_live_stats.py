"""The dashboard's sliding window, driven by a hand-set clock (no HTTP, no timers)."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import pytest

from llmsim.engine import FanOutObserver, NullObserver
from llmsim.observability.live_stats import (
    BIN_COUNT,
    MAX_MESSAGE_CHARS,
    LiveStats,
    bin_index,
    bin_value,
    percentiles,
)

BIN_PRECISION = 0.05
"""A percentile is the middle of a bin eight to a doubling: within 4.5 % of the truth."""


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSequence:
    """The only fields the stats read."""

    finish_reason: str | None = "stop"
    prompt_tokens: int = 5


def make_stats(window: int = 10, errors: int = 8) -> tuple[LiveStats, Clock]:
    clock = Clock()
    stats = LiveStats(window=window, recent_errors=errors, clock=clock, wall_clock=lambda: 0.0)
    return stats, clock


def nearest_rank(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    index = max(1, -(-len(ordered) * quantile // 1)) - 1
    return ordered[int(index)]


# -- bins and percentiles -----------------------------------------------------------


@pytest.mark.parametrize("seconds", [2e-5, 1e-4, 0.00123, 0.05, 0.25, 1.0, 7.5, 300.0])
def test_a_value_lands_in_a_bin_whose_middle_is_close(seconds: float) -> None:
    assert bin_value(bin_index(seconds)) == pytest.approx(seconds, rel=BIN_PRECISION)


def test_zero_and_tiny_values_share_bin_zero_and_huge_ones_the_last_bin() -> None:
    assert bin_index(0.0) == bin_index(5e-6) == 0
    assert bin_value(0) == 0.0
    assert bin_index(1e9) == BIN_COUNT - 1


def test_percentiles_of_an_empty_window_are_none() -> None:
    assert percentiles([0] * BIN_COUNT) is None


def test_percentiles_match_nearest_rank_within_the_bin_precision() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(-4.0, 1.0) for _ in range(5000)]  # around 18 ms, long tail
    bins = [0] * BIN_COUNT
    for value in values:
        bins[bin_index(value)] += 1
    result = percentiles(bins)
    assert result is not None
    assert result.count == 5000
    assert result.p50 == pytest.approx(nearest_rank(values, 0.50), rel=BIN_PRECISION)
    assert result.p90 == pytest.approx(nearest_rank(values, 0.90), rel=BIN_PRECISION)
    assert result.p99 == pytest.approx(nearest_rank(values, 0.99), rel=BIN_PRECISION)
    assert result.p50 < result.p90 < result.p99


# -- the observer -------------------------------------------------------------------


def test_ttft_and_itl_percentiles_from_engine_events() -> None:
    stats, clock = make_stats()
    sequence = FakeSequence()
    for index in range(100):
        stats.first_token(sequence, 0.010 + index * 0.001)  # 10 ms .. 109 ms
    stats.next_tokens(sequence, 0.020, 0)
    stats.next_tokens(sequence, 0.020, 3)  # one gap of 20 ms, three released with it
    clock.now += 1.0
    snapshot = stats.snapshot()
    assert snapshot.ttft is not None
    assert snapshot.itl is not None
    assert snapshot.ttft.count == 100
    assert snapshot.ttft.p50 == pytest.approx(0.059, rel=BIN_PRECISION)
    assert snapshot.ttft.p99 == pytest.approx(0.108, rel=BIN_PRECISION)
    assert snapshot.itl.count == 5
    assert snapshot.itl.p50 == 0.0  # three of five gaps were zero
    assert snapshot.itl.p90 == pytest.approx(0.020, rel=BIN_PRECISION)
    assert snapshot.total_tokens == 100 + 1 + 4


def test_rates_over_the_window_with_an_injected_clock() -> None:
    stats, clock = make_stats(window=10)
    sequence = FakeSequence()
    for _ in range(20):  # 2 requests and 10 tokens in each of 20 seconds
        for _ in range(2):
            stats.request_submitted(1)
        stats.first_token(sequence, 0.01)
        stats.next_tokens(sequence, 0.01, 8)
        clock.now += 1.0
    snapshot = stats.snapshot()
    # Only the last 10 s count: the current second (empty so far) and the 9 before it.
    assert snapshot.window_seconds == pytest.approx(9.0)
    assert snapshot.requests_per_second == pytest.approx(18 / 9.0)
    assert snapshot.tokens_per_second == pytest.approx(90 / 9.0)
    assert snapshot.total_requests == 40
    assert snapshot.total_tokens == 200


def test_rates_right_after_start_divide_by_the_time_since_start() -> None:
    stats, clock = make_stats(window=10)
    clock.now += 0.5
    for _ in range(5):
        stats.request_submitted(1)
    clock.now += 1.5  # two seconds after start
    assert stats.snapshot().requests_per_second == pytest.approx(5 / 2.0)


def test_old_seconds_leave_the_window() -> None:
    stats, clock = make_stats(window=5)
    sequence = FakeSequence()
    stats.request_submitted(1)
    stats.first_token(sequence, 0.5)
    stats.record_error(429, "RateLimitError", "full", "POST", "/v1/completions")
    clock.now += 30.0
    snapshot = stats.snapshot()
    assert snapshot.requests_per_second == 0.0
    assert snapshot.errors_per_second == 0.0
    assert snapshot.ttft is None
    # Totals and the list of recent errors outlive the window.
    assert snapshot.total_requests == 1
    assert snapshot.total_errors == 1
    assert len(snapshot.recent_errors) == 1


def test_finished_sequences_are_counted_by_reason() -> None:
    stats, _ = make_stats()
    for reason in ("stop", "stop", "length", None):
        stats.sequence_finished(FakeSequence(finish_reason=reason))
    assert stats.snapshot().finished == {"stop": 2, "length": 1, "abort": 1}


def test_recent_errors_keep_the_last_n_with_long_messages_cut() -> None:
    stats, _ = make_stats(errors=3)
    for status in (400, 401, 404, 429, 500):
        stats.record_error(status, f"type{status}", "x" * 1000, "POST", "/v1/chat/completions")
    recent = stats.snapshot().recent_errors
    assert [error.status for error in recent] == [404, 429, 500]
    assert all(len(error.message) <= MAX_MESSAGE_CHARS + 1 for error in recent)
    assert recent[-1].request == "POST /v1/chat/completions"
    assert recent[-1].type == "type500"


def test_memory_stays_bounded_however_many_events_arrive() -> None:
    stats, clock = make_stats(window=10, errors=8)
    sequence = FakeSequence()
    rng = random.Random(1)

    def footprint() -> int:
        buckets = stats._seconds
        return len(buckets) + sum(len(b.ttft) + len(b.itl) for b in buckets)

    for _ in range(50):  # 50 s of traffic, 2 000 events a second
        for _ in range(1000):
            stats.first_token(sequence, rng.random())
            stats.next_tokens(sequence, rng.random(), 2)
        stats.record_error(500, "InternalServerError", "boom", "GET", "/")
        clock.now += 1.0
        assert footprint() == 10 + 10 * 2 * BIN_COUNT
    assert len(stats.snapshot().recent_errors) == 8
    assert sys.getsizeof(stats._errors) < 10_000


def test_a_window_shorter_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        LiveStats(window=0)


def test_fan_out_passes_every_event_to_every_observer() -> None:
    first, _ = make_stats()
    second, _ = make_stats()
    fan_out = FanOutObserver(first, second, NullObserver())
    sequence = FakeSequence()
    fan_out.request_submitted(2)
    fan_out.first_token(sequence, 0.1)
    fan_out.next_tokens(sequence, 0.05, 1)
    fan_out.sequence_finished(sequence)
    for stats in (first, second):
        snapshot = stats.snapshot()
        assert snapshot.total_requests == 1
        assert snapshot.total_tokens == 3
        assert snapshot.finished["stop"] == 1
