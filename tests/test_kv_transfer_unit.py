"""The KV transfer time that replaces a decode instance's prefill."""

from __future__ import annotations

import random

import pytest

from llmsim.engine.kv_transfer import kv_transfer_delay
from llmsim.settings.model import Settings


def test_constant_model_uses_the_latency() -> None:
    settings = Settings(kv_cache_transfer_latency="200ms", kv_cache_transfer_time_per_token="1ms")
    assert kv_transfer_delay(settings, 1000, random.Random(0)) == pytest.approx(0.2)


def test_per_token_model_scales_with_the_prompt() -> None:
    settings = Settings(
        latency_model="per-token",
        kv_cache_transfer_latency="5s",
        kv_cache_transfer_time_per_token="1ms",
    )
    assert kv_transfer_delay(settings, 500, random.Random(0)) == pytest.approx(0.5)


def test_step_model_adds_the_latency_and_the_per_token_time() -> None:
    settings = Settings(
        latency_model="step",
        kv_cache_transfer_latency="50ms",
        kv_cache_transfer_time_per_token="1ms",
    )
    assert kv_transfer_delay(settings, 500, random.Random(0)) == pytest.approx(0.55)


def test_jitter_stays_near_the_mean() -> None:
    settings = Settings(kv_cache_transfer_latency="1s", kv_cache_transfer_latency_std_dev="300ms")
    rng = random.Random(1)
    samples = [kv_transfer_delay(settings, 10, rng) for _ in range(2000)]
    assert min(samples) >= 0.3
    assert max(samples) <= 1.7
    assert 0.95 < sum(samples) / len(samples) < 1.05
    assert len(set(samples)) > 100


def test_transfer_times_change_at_run_time() -> None:
    from llmsim.runtime.adjustable import RuntimeUpdateError, validate_update

    updated = validate_update(Settings(), {"kv_cache_transfer_latency": "250ms"})
    assert updated.kv_cache_transfer_latency == pytest.approx(0.25)
    with pytest.raises(RuntimeUpdateError, match="at most 30%"):
        validate_update(updated, {"kv_cache_transfer_latency_std_dev": "200ms"})
