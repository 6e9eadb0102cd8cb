"""Fake values for any vllm: series, on an injected clock: counters integrate their rate,
histograms fill their buckets from a distribution, nothing goes backwards, and the PromQL
an autoscaler evaluates reads back the scripted scenario."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from promql import Scrape, histogram_quantile, parse, rate, select

from llmsim.engine import Engine
from llmsim.observability.fake_shapes import lognormal, piecewise
from llmsim.observability.metrics import Metrics
from llmsim.observability.vllm_series import TTFT_BUCKETS
from llmsim.settings.fake_metrics import FakeMetricsError, Schedule, parse_spec
from llmsim.settings.model import Settings

TTFT = "vllm:time_to_first_token_seconds"
SUCCESS = "vllm:request_success_total"
MINUTE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def metrics_on(clock: Clock, **settings: Any) -> tuple[Metrics, Engine]:
    config = Settings.model_validate({"port": 0, **settings})
    metrics = Metrics(config, clock=clock)
    engine = Engine(config, observer=metrics)
    metrics.track(engine.scheduler, config.kv_cache_size)
    return metrics, engine


def scrape(metrics: Metrics) -> Scrape:
    return parse(metrics.exposition().decode())


def total(scraped: Scrape, name: str, **match: str) -> float:
    return sum(select(scraped, name, **match).values())


# -- the scenario of the autoscaler recipe ----------------------------------------------

P90 = [[0, 0.2], [300, 2.0], [360, 2.0], [420, 0.2]]
RATE = [[0, 10], [300, 40], [420, 10]]
SCENARIO = {
    TTFT: {
        "rate": {"schedule": [[f"{t}s", v] for t, v in RATE]},
        "quantiles": {"p90": {"schedule": [[f"{t}s", v] for t, v in P90]}},
    },
    SUCCESS: {
        "labels": {"finished_reason": "stop"},
        "rate": {"schedule": [[f"{t}s", v] for t, v in RATE]},
    },
}


def scripted(points: list[list[float]], at: float) -> float:
    """The scenario's value at ``at``: straight lines between the points, as written."""
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= at <= t1:
            return v0 + (v1 - v0) * (at - t0) / (t1 - t0)
    return points[0][1] if at < points[0][0] else points[-1][1]


def mean_over(points: list[list[float]], start: float, end: float) -> float:
    steps = 600
    width = (end - start) / steps
    return sum(scripted(points, start + (i + 0.5) * width) for i in range(steps)) / steps


def window_p90(start: float, end: float) -> float:
    """The p90 of every observation the scenario makes in a window: each instant's
    distribution (a straight line in each bucket through the scripted p90) weighted by the
    instant's rate, then read back with the interpolation Prometheus uses."""
    steps = 240
    width = (end - start) / steps
    mixed = [0.0] * (len(TTFT_BUCKETS) + 1)
    for i in range(steps):
        at = start + (i + 0.5) * width
        shares, _ = piecewise([(0.9, scripted(P90, at))], TTFT_BUCKETS)
        for index, share in enumerate(shares):
            mixed[index] += scripted(RATE, at) * share
    rank = 0.9 * sum(mixed)
    below, lower = 0.0, 0.0
    for bound, share in zip(TTFT_BUCKETS, mixed, strict=False):
        if below + share >= rank:
            return lower + (bound - lower) * (rank - below) / share
        below, lower = below + share, bound
    return lower


def test_promql_reads_back_the_scripted_ttft_p90_and_request_rate() -> None:
    clock = Clock()
    metrics, _ = metrics_on(clock)
    metrics.set_overrides(parse_spec(SCENARIO))
    scrapes: dict[float, Scrape] = {}
    for t in range(0, 481, 15):  # Prometheus scraping every 15 s
        clock.now = 5000.0 + t
        scrapes[t] = scrape(metrics)
    for t in range(60, 481, 15):
        before, after = scrapes[t - 60], scrapes[t]
        measured_rate = rate(before, after, MINUTE, SUCCESS, finished_reason="stop")
        assert measured_rate == pytest.approx(mean_over(RATE, t - MINUTE, t), rel=0.05), t
        measured_p90 = histogram_quantile(0.9, before, after, TTFT)
        assert measured_p90 == pytest.approx(window_p90(t - MINUTE, t), rel=0.05), t
    plateau = histogram_quantile(0.9, scrapes[300], scrapes[360], TTFT)
    assert plateau == pytest.approx(2.0, rel=1e-3)
    assert rate(scrapes[300], scrapes[360], MINUTE, SUCCESS) == pytest.approx(32.5, rel=0.01)
    back = histogram_quantile(0.9, scrapes[420], scrapes[480], TTFT)
    assert back == pytest.approx(0.2, rel=1e-3)


def test_counters_never_go_backwards_across_changes_and_live_counts_add_on_top() -> None:
    clock = Clock()
    metrics, _ = metrics_on(clock)
    tokens = "vllm:generation_tokens_total"
    metrics.generation_tokens.inc(7)  # live tokens before any fake
    metrics.set_overrides(parse_spec({tokens: {"rate": 100}}))
    clock.now += 10
    assert total(scrape(metrics), tokens) == 1007
    metrics.generation_tokens.inc(5)  # hidden while the series is faked
    metrics.set_overrides(parse_spec({tokens: {"rate": 1}}))  # a lower rate goes on from 1007
    clock.now += 10
    assert total(scrape(metrics), tokens) == 1017
    metrics.set_overrides(None)
    assert total(scrape(metrics), tokens) == 1017, "clearing keeps the value reached"
    metrics.generation_tokens.inc(3)
    assert total(scrape(metrics), tokens) == 1020, "live increments add on top"
    metrics.set_overrides(parse_spec({tokens: {"rate": 2}}))
    clock.now += 1
    assert total(scrape(metrics), tokens) == 1022


def test_histograms_grow_consistently_and_keep_their_counts_when_cleared() -> None:
    clock = Clock()
    metrics, _ = metrics_on(clock)
    spec = {TTFT: {"rate": 50, "lognormal": {"p50": "0.1", "p99": 1}}}
    with pytest.raises(FakeMetricsError, match="greater than 0"):
        parse_spec({TTFT: {"rate": 50, "lognormal": {"p50": 0, "p99": 1}}})
    spec[TTFT]["lognormal"]["p50"] = 0.1
    metrics.set_overrides(parse_spec(spec))
    clock.now += 20
    first = scrape(metrics)
    buckets = select(first, f"{TTFT}_bucket")
    cumulative = sorted((float(dict(labels)["le"]), value) for labels, value in buckets.items())
    counts = [value for _, value in cumulative]
    assert counts == sorted(counts), "cumulative buckets never decrease"
    assert counts[-1] == total(first, f"{TTFT}_count") == 1000
    assert dict(cumulative)[0.1] == pytest.approx(500, abs=2), "half below the median"
    assert total(first, f"{TTFT}_sum") == pytest.approx(
        1000 * 0.1 * math.exp(0.5 * (math.log(10) / 2.3263) ** 2), rel=1e-3
    )
    metrics.set_overrides(None)
    clock.now += 20
    second = scrape(metrics)
    assert select(second, f"{TTFT}_bucket") == buckets
    metrics.ttft.observe(0.003)
    assert total(scrape(metrics), f"{TTFT}_count") == 1001


def test_gauges_counters_and_new_label_sets_by_name_with_default_labels() -> None:
    clock = Clock()
    metrics, _ = metrics_on(clock, served_model_name=["chat"])
    spec = parse_spec(
        {
            "vllm:num_requests_waiting": {"schedule": [["0s", 0], ["10s", 20]]},
            SUCCESS: [
                {"labels": {"finished_reason": "stop"}, "rate": 3},
                {"labels": {"finished_reason": "length", "model_name": "other"}, "rate": 1},
            ],
            "vllm:prompt_tokens": {"rate": {"square": {"start": 0, "end": 100, "period": "2s"}}},
        }
    )
    metrics.set_overrides(spec)
    clock.now += 5.05
    scraped = scrape(metrics)
    waiting = select(scraped, "vllm:num_requests_waiting")
    assert waiting == {(("engine", "0"), ("model_name", "chat")): 10}
    assert total(scraped, SUCCESS, finished_reason="stop", model_name="chat") == 15
    assert total(scraped, SUCCESS, finished_reason="length", model_name="other") == 5
    assert total(scraped, SUCCESS, finished_reason="length", model_name="chat") == 0
    assert total(scraped, "vllm:prompt_tokens_total") == 200, "100/s in each second half"
    current = metrics.overrides.current()
    assert current["vllm:num_requests_waiting"] == {
        "labels": {"model_name": "chat", "engine": "0"},
        "value": 10,
    }
    assert [entry["value"] for entry in current[SUCCESS]] == [15, 5]


def test_a_spec_reads_back_from_its_description() -> None:
    spec = parse_spec(
        {
            **SCENARIO,
            "num_requests_running": 3,
            "vllm:kv_cache_usage_perc": {"labels": {"engine": "0"}, "value": 0.5},
            "vllm:prompt_tokens_total": [{"rate": 5}, {"labels": {"model_name": "b"}, "rate": 1}],
            "vllm:e2e_request_latency_seconds": {
                "rate": 2,
                "lognormal": {
                    "p50": 1,
                    "p99": {"oscillate": {"start": 4, "end": 8, "period": "1m"}},
                },
            },
            "vllm:request_params_n": {"rate": 1, "buckets": {"1": 9, "+Inf": 1}},
        }
    )
    assert parse_spec(spec.describe()) == spec


def test_a_replaced_rate_counts_up_to_the_moment_of_the_change() -> None:
    clock = Clock()
    metrics, _ = metrics_on(clock, fake_metrics_refresh_interval="1s")
    metrics.set_overrides(parse_spec({"vllm:num_preemptions": {"rate": 10}}))
    clock.now += 2.5  # the last whole second is 2, but the spec ran for 2.5
    metrics.set_overrides(parse_spec({"vllm:num_preemptions": {"rate": 0}}))
    clock.now += 5
    assert total(scrape(metrics), "vllm:num_preemptions_total") == 25


def test_the_faked_label_sets_a_server_keeps_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmsim.observability.fake_series.MAX_TRACKED", 2)
    metrics, _ = metrics_on(Clock())
    metrics.set_overrides(parse_spec({"vllm:prompt_tokens": {"rate": 1}}))
    metrics.set_overrides(parse_spec({"vllm:generation_tokens": {"rate": 1}}))
    with pytest.raises(FakeMetricsError, match="at most 2 counter and histogram label sets"):
        metrics.set_overrides(parse_spec({"vllm:num_preemptions": {"rate": 1}}))
    metrics.set_overrides(parse_spec({"vllm:prompt_tokens": {"rate": 2}}))  # known ones still can


def test_values_move_once_per_refresh_interval() -> None:
    clock = Clock()
    metrics, _ = metrics_on(clock, fake_metrics_refresh_interval="1s")
    metrics.set_overrides(
        parse_spec({SUCCESS: {"labels": {"finished_reason": "abort"}, "rate": 10}})
    )
    seen = []
    for step in (0.5, 0.4, 0.2, 0.5, 0.5):
        clock.now += step
        seen.append(total(scrape(metrics), SUCCESS, finished_reason="abort"))
    assert seen == [0, 0, 10, 10, 20]


@pytest.mark.parametrize(
    ("spec", "param", "fragment"),
    [
        ({"vllm:no_such_thing": 1}, "vllm:no_such_thing", "no such series"),
        ({"vllm:num_requests_running": {"rate": 5}}, "vllm:num_requests_running", "is a gauge"),
        ({SUCCESS: {"labels": {"finished_reason": "stop"}, "value": 5}}, SUCCESS, "is a counter"),
        ({SUCCESS: {"rate": 5}}, f"{SUCCESS}.labels", "finished_reason"),
        ({TTFT: {"rate": 5}}, TTFT, "is a histogram"),
        ({TTFT: {"rate": 5, "buckets": {"0.3": 1}}}, f"{TTFT}.buckets", "no bucket '0.3'"),
        (
            {"vllm:prompt_tokens": {"rate": 5, "labels": {"pod": "a"}}},
            "vllm:prompt_tokens.labels",
            "no label 'pod'",
        ),
        (
            {SUCCESS: [{"labels": {"finished_reason": "stop"}, "rate": 1}] * 2},
            f"{SUCCESS}[1]",
            "same label set",
        ),
    ],
)
def test_specs_that_do_not_fit_the_registry_are_refused(
    spec: dict[str, Any], param: str, fragment: str
) -> None:
    metrics, _ = metrics_on(Clock())
    metrics.set_overrides(parse_spec({"num_requests_waiting": 4}))
    with pytest.raises(FakeMetricsError) as caught:
        metrics.set_overrides(parse_spec(spec))
    assert caught.value.param == param
    assert fragment in caught.value.message
    assert metrics.overrides.value("num_requests_waiting") == 4, "the old spec stays"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({SUCCESS: {"rate": -1}}, "rate must not be negative"),
        ({SUCCESS: {"rate": 1, "value": 2}}, 'give "value"'),
        ({TTFT: {"rate": 1, "quantiles": {"p100": 1}}}, "quantile keys"),
        ({TTFT: {"rate": 1, "quantiles": {"p50": 2, "p90": 1}}}, "must grow"),
        (
            {TTFT: {"rate": 1, "quantiles": {"p90": 1}, "lognormal": {"p50": 1, "p99": 2}}},
            "one distribution",
        ),
        ({TTFT: {"rate": 1, "buckets": {"0.1": -1}}}, "must not be negative"),
        ({"vllm:num_requests_waiting": {"schedule": [["2s", 1], ["1s", 2]]}}, "must not decrease"),
        ({"vllm:num_requests_waiting": {"schedule": []}}, "at least 1"),
        ({"series": {}}, "series: unknown key"),
        ({"vllm:prompt_tokens": {"rate": 1, "labels": {"engine": 0}}}, "valid string"),
    ],
)
def test_bad_numbers_are_refused_when_read(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(FakeMetricsError, match=fragment):
        parse_spec(spec)


# -- distributions -------------------------------------------------------------------------


def test_schedules_interpolate_hold_step_and_repeat() -> None:
    line = Schedule(points=[("1s", 10), ("3s", 30), ("3s", 0)])
    assert [line.at(t) for t in (0, 1, 2, 2.999, 3, 10)] == pytest.approx([10, 10, 20, 29.99, 0, 0])
    loop = parse_spec(
        {"num_requests_waiting": {"schedule": {"points": [["0s", 0], ["4s", 8]], "repeat": True}}}
    )
    assert loop.sample("num_requests_waiting", 6) == 4
    assert loop.sample("num_requests_waiting", 7) == 6
    assert loop.describe() == {
        "num_requests_waiting": {"schedule": {"points": [["0ms", 0], ["4s", 8]], "repeat": True}}
    }


def _cdf(shares: list[float], bounds: tuple[float, ...], value: float) -> float:
    """The straight-line-in-each-bucket distribution function at ``value``."""
    below, lower = 0.0, 0.0
    for bound, share in zip(bounds, shares, strict=False):
        if value <= bound:
            return below + share * (value - lower) / (bound - lower)
        below, lower = below + share, bound
    return below


@pytest.mark.parametrize(
    "targets",
    [
        [(0.9, 0.2)],
        [(0.9, 2.0)],
        [(0.5, 0.05), (0.9, 0.2), (0.99, 1.0)],
        [(0.5, 0.3), (0.9, 0.6), (0.99, 1.5)],  # neighbouring buckets
        [(0.5, 0.11), (0.9, 0.3), (0.95, 0.6), (0.99, 0.9)],
        [(0.5, 0.5), (0.99, 30.0)],
    ],
)
def test_quantile_targets_are_read_back_exactly(
    targets: list[tuple[float, float]],
) -> None:
    shares, mean = piecewise(targets, TTFT_BUCKETS)
    assert sum(shares) == pytest.approx(1.0)
    assert min(shares) >= 0
    for quantile, value in targets:
        assert _cdf(shares, TTFT_BUCKETS, value) == pytest.approx(quantile)
    assert 0 < mean < TTFT_BUCKETS[-1]


def test_targets_the_buckets_cannot_hold_are_approached_without_breaking_the_histogram() -> None:
    # p50 and p90 inside (0.1, 0.25]: the line through both would pass 1 before 0.25.
    shares, _ = piecewise([(0.5, 0.12), (0.9, 0.2)], TTFT_BUCKETS)
    assert sum(shares) == pytest.approx(1.0)
    assert min(shares) >= 0
    assert _cdf(shares, TTFT_BUCKETS, 0.2) == pytest.approx(0.8)


def test_lognormal_shares_follow_the_median_and_p99() -> None:
    shares, mean = lognormal(0.1, 1.0, TTFT_BUCKETS)
    cumulative = dict(
        zip(TTFT_BUCKETS, [sum(shares[: i + 1]) for i in range(len(TTFT_BUCKETS))], strict=True)
    )
    assert cumulative[0.1] == pytest.approx(0.5)
    assert cumulative[1.0] == pytest.approx(0.99)
    assert mean > 0.1


def test_quantile_targets_that_cross_in_time_leave_the_higher_one_out() -> None:
    shares, _ = piecewise([(0.5, 1.0), (0.9, 0.5)], TTFT_BUCKETS)
    assert sum(shares) == pytest.approx(1.0)
    assert _cdf(shares, TTFT_BUCKETS, 1.0) == pytest.approx(0.5)
    clock = Clock()
    metrics, _ = metrics_on(clock)
    p50 = {"ramp": {"start": 0.1, "end": 1.0, "period": "10s"}}
    metrics.set_overrides(parse_spec({TTFT: {"rate": 10, "quantiles": {"p50": p50, "p90": 0.5}}}))
    clock.now += 20
    assert total(scrape(metrics), f"{TTFT}_count") == 200
