"""vLLM's KV-cache residency metrics (``--kv-cache-metrics``) in the step model."""

from __future__ import annotations

import random
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from conftest import post_json
from prometheus_client.parser import text_string_to_metric_families

from llmsim.engine.kv_listener import NullKVCacheListener
from llmsim.engine.step.block_pool import BlockPool
from llmsim.engine.step.residency import BlockResidency

if TYPE_CHECKING:
    from conftest import RunningServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_evicted_block_reports_its_lifetime_idle_time_and_reuse_gaps() -> None:
    clock = Clock()
    events: list[tuple[float, float, list[float]]] = []
    pool = BlockPool(2, 16, NullKVCacheListener())
    pool.residency = BlockResidency(1.0, lambda *event: events.append(event), clock)
    blocks = pool.allocate(2)  # t = 0: both followed from now
    pool.free(blocks)
    for at in (1.0, 3.0, 4.5):  # three prefix-cache hits on the first block
        clock.now = at
        pool.touch(blocks[:1])
        pool.free(blocks[:1])
    assert events == []
    clock.now = 10.0
    pool.allocate(2)  # both handed out again: their contents are evicted
    assert sorted(events) == [(10.0, 5.5, [2.0, 1.5]), (10.0, 10.0, [])]
    assert pool.residency.num_followed == 2  # the new contents are followed in turn


def test_sampling_follows_about_the_given_share_and_a_cleared_cache_reports_nothing() -> None:
    events: list[tuple[float, float, list[float]]] = []
    pool = BlockPool(1000, 16, NullKVCacheListener())
    residency = BlockResidency(0.1, lambda *event: events.append(event), rng=random.Random(5))
    pool.residency = residency
    pool.free(pool.allocate(1000))
    assert 60 < residency.num_followed < 140
    pool.clear_cache()
    assert residency.num_followed == 0
    pool.allocate(1000)
    assert events == []


def _samples(server: RunningServer) -> dict[str, float]:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("vllm:kv_block_")
    }


def test_a_step_server_exports_residency_of_evicted_blocks(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--latency-model", "step", "--kv-cache-metrics", "--kv-cache-metrics-sample", "1",
        "--kv-cache-size", "512", "--max-model-len", "512", "--block-size", "16",
    )  # fmt: skip
    assert _samples(server)["vllm:kv_block_lifetime_seconds_count"] == 0
    for index in range(4):  # distinct prompts of ~20 blocks each: the pool of 32 turns over
        body = {
            "model": "llmsim/sim-model",
            "prompt": f"prompt {index} " + "word " * 300,
            "max_tokens": 2,
        }
        status, answer = post_json(server, "/v1/completions", body)
        assert status == 200, answer
    found = _samples(server)
    assert found["vllm:kv_block_lifetime_seconds_count"] > 0
    assert (
        found["vllm:kv_block_idle_before_evict_seconds_count"]
        == (found["vllm:kv_block_lifetime_seconds_count"])
    )
    assert found["vllm:kv_block_lifetime_seconds_sum"] > 0
