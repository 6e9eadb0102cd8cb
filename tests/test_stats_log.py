"""The periodic stats line, from the metrics' counters, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from llmsim.observability.metrics import Metrics
from llmsim.observability.stats_log import StatsLog
from llmsim.settings.model import Settings
from llmsim.settings.sources import load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    found = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "llmsim.stats"]
    caplog.clear()
    return found


def test_rates_over_the_interval_and_idle_intervals_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="llmsim.stats")
    metrics = Metrics(Settings())
    clock = Clock()
    stats = StatsLog([(0, metrics)], clock)
    metrics.prompt_tokens.inc(500)
    metrics.generation_tokens.inc(100)
    metrics.prefix_cache_queries.inc(40)
    metrics.prefix_cache_hits.inc(10)
    metrics.preemptions.inc(2)
    clock.now += 10
    stats.log()
    assert lines(caplog) == [
        (
            logging.INFO,
            "Engine 000: Avg prompt throughput: 50.0 tokens/s, Avg generation throughput: "
            "10.0 tokens/s, Running: 0 reqs, Waiting: 0 reqs, Preemptions: 2, "
            "GPU KV cache usage: 0.0%, Prefix cache hit rate: 25.0%",
        )
    ]
    clock.now += 10
    stats.log()  # the interval after a busy one still logs at info, as vLLM's
    ((level, message),) = lines(caplog)
    assert level == logging.INFO
    assert "Avg prompt throughput: 0.0 tokens/s" in message
    assert "Prefix cache hit rate: 25.0%" in message  # kept without new lookups
    clock.now += 10
    stats.log()
    assert [level for level, _ in lines(caplog)] == [logging.DEBUG]


def test_one_line_per_engine_named_by_its_rank(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmsim.stats")
    first = Metrics(Settings())
    second = Metrics(Settings(), engine=3, parent=first)
    clock = Clock()
    stats = StatsLog([(0, first), (3, second)], clock)
    second.generation_tokens.inc(5)
    clock.now += 5
    stats.log()
    assert [(level, message[:10]) for level, message in lines(caplog)] == [
        (logging.DEBUG, "Engine 000"),
        (logging.INFO, "Engine 003"),
    ]


@pytest.mark.parametrize(
    ("vllm", "llmsim", "seconds"),
    [("2", None, 2.0), ("0.5", None, 0.5), ("300ms", None, 0.3), ("2", "200", 0.2)],
)
def test_vllms_interval_variable_counts_seconds_and_llmsims_wins(
    monkeypatch: pytest.MonkeyPatch, vllm: str, llmsim: str | None, seconds: float
) -> None:
    monkeypatch.setenv("VLLM_LOG_STATS_INTERVAL", vllm)
    if llmsim is not None:
        monkeypatch.setenv("LLMSIM_LOG_STATS_INTERVAL", llmsim)
    assert load_settings().settings.log_stats_interval == pytest.approx(seconds)
