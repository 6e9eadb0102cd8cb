"""The hot-path counters and histograms write exactly what prometheus-client's own would."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from llmsim.observability.metric_types import FastCollector, FastFamily
from llmsim.observability.vllm_series import TOKEN_GAP_BUCKETS, token_count_buckets

LABELS = ("model_name", "engine")
VALUES = ("m", "0")


def without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def created_names(text: bytes) -> list[str]:
    return [line.split("{")[0] for line in text.decode().splitlines() if "_created{" in line]


@pytest.mark.parametrize("buckets", [TOKEN_GAP_BUCKETS, token_count_buckets(4096)])
def test_histogram_matches_prometheus_client(buckets: tuple[float, ...] | list[int]) -> None:
    rng = random.Random(5)
    values = [rng.choice([0.0, *buckets]) for _ in range(200)]  # values on the bounds too
    values += [rng.uniform(0, 2 * float(buckets[-1])) for _ in range(300)]

    reference = CollectorRegistry()
    histogram = Histogram("x:h", "doc", LABELS, buckets=buckets, registry=reference)
    fast_registry = CollectorRegistry()
    collector = FastCollector()
    fast = collector.add(FastFamily("x:h", "doc", LABELS, buckets)).histogram(*VALUES)
    fast_registry.register(collector)

    for value in values:
        histogram.labels(*VALUES).observe(value)
        fast.observe(value)
    histogram.labels(*VALUES).observe(0.0)
    histogram.labels(*VALUES).observe(0.0)
    fast.observe_repeated(0.0, 2)

    expected, actual = generate_latest(reference), generate_latest(fast_registry)
    assert without_created(actual) == without_created(expected)
    assert created_names(actual) == created_names(expected)


def test_counter_matches_prometheus_client() -> None:
    reference = CollectorRegistry()
    counter = Counter("x:c", "doc", [*LABELS, "reason"], registry=reference)
    fast_registry = CollectorRegistry()
    collector = FastCollector()
    family = collector.add(FastFamily("x:c", "doc", [*LABELS, "reason"]))
    fast_registry.register(collector)
    for reason, amount in (("stop", 3), ("length", 0), ("abort", 2.5)):
        counter.labels(*VALUES, reason).inc(amount)
        family.counter(*VALUES, reason).inc(amount)

    expected, actual = generate_latest(reference), generate_latest(fast_registry)
    assert without_created(actual) == without_created(expected)
    assert created_names(actual) == created_names(expected)


def test_created_series_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "True")
    registry = CollectorRegistry()
    collector = FastCollector()
    collector.add(FastFamily("x:c", "doc", LABELS)).counter(*VALUES).inc()
    collector.add(FastFamily("x:h", "doc", LABELS, (1.0, 2.0))).histogram(*VALUES).observe(1)
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert "_created" not in text
    assert 'x:h_bucket{engine="0",le="1.0",model_name="m"} 1.0' in text
    assert 'x:c_total{engine="0",model_name="m"} 1.0' in text
