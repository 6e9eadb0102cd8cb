"""Lazy decoding in virtual time gives the run that visiting every sequence at every step
gives: every request's record, the time series and the statistics, bit for bit."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmsim.settings.model import Settings
from llmsim.settings.sources import load_settings
from llmsim.simulation import cluster as cluster_module
from llmsim.simulation.cluster import Cluster
from llmsim.simulation.driver import Simulation
from llmsim.simulation.recorder import Recorder
from llmsim.simulation.synthetic import Lengths, Synthetic
from llmsim.simulation.workload import Request


def _settings(**extra: Any) -> Settings:
    values: dict[str, Any] = {"profile": "llama-3.1-8b-a100", "latency_model": "step"}
    values.update(extra)
    return load_settings(values).settings


def _workload(rate: float, count: int) -> Synthetic:
    """Varied lengths, shared system prompts and two-turn conversations."""
    return Synthetic(
        rate,
        Lengths("uniform", 20, 2500),
        Lengths("uniform", 1, 120),
        count=count,
        burstiness=0.5,
        num_prefixes=3,
        prefix_len=200,
        turns=2,
        think_time=0.3,
    )


def _run(
    settings: Settings, router: str, lazy: bool, out: Path, prefill: list[Settings] | None = None
) -> tuple[Recorder, Cluster]:
    replicas = 3
    cluster = Cluster([settings] * replicas, router, seed=5, prefill=prefill or [], lazy=lazy)
    recorder = Recorder(len(cluster.instances), output=out, interval=0.25)
    end = cluster.run(_workload(40.0, 120).requests(5), recorder)
    recorder.close(cluster, end)
    return recorder, cluster


def _same(tmp_path: Path, settings: Settings, router: str, **kw: Any) -> Cluster:
    eager, _ = _run(settings, router, False, tmp_path / "eager", **kw)
    lazy, cluster = _run(settings, router, True, tmp_path / "lazy", **kw)
    for name in ("requests.jsonl", "timeseries.csv"):
        assert (tmp_path / "lazy" / name).read_bytes() == (tmp_path / "eager" / name).read_bytes()
    assert lazy.stats == eager.stats  # histograms, KV usage integral, peaks, counters
    assert sum(instance.run.engine.scheduler.lazy.skipped for instance in cluster.instances)
    return cluster


@pytest.mark.parametrize("router", ["least-requests", "precise-prefix", "prefix-affinity"])
def test_a_loaded_fleet_runs_the_same_lazy_or_not(tmp_path: Path, router: str) -> None:
    # chunked prefill, a jittered step time and a cache small enough to preempt
    settings = _settings(kv_cache_size=12000, max_model_len=4096, max_num_batched_tokens=512)
    cluster = _same(tmp_path, settings, router)
    assert sum(instance.run.engine.num_preemptions for instance in cluster.instances)


def test_a_fleet_without_prefix_caching_runs_the_same_lazy_or_not(tmp_path: Path) -> None:
    settings = _settings(
        enable_prefix_caching=False, block_size=32, kv_cache_size=9000, max_model_len=4096
    )
    cluster = _same(tmp_path, settings, "power-of-two")
    assert sum(instance.run.engine.num_preemptions for instance in cluster.instances)


def test_a_pd_fleet_runs_the_same_lazy_or_not(tmp_path: Path) -> None:
    settings = _settings(kv_cache_transfer_time_per_token="20us")
    _same(tmp_path, settings, "least-kv-usage", prefill=[_settings()])


def test_one_server_records_the_same_lazy_or_not() -> None:
    settings = _settings(max_num_batched_tokens=512)
    requests = [Request(f"p{k % 7}", 100 + 37 * k, 1 + (k * 13) % 90, 0.02 * k) for k in range(80)]
    eager = Simulation(settings, seed=3, lazy=False).run(requests, warm_up=True)
    lazy = Simulation(settings, seed=3, lazy=True).run(requests, warm_up=True)
    assert lazy == eager


@pytest.mark.parametrize("prompt", [1024, 1000])
def test_repeated_prompts_record_the_same_lazy_or_not(prompt: int) -> None:
    # the same prompts (and answers) again while the first copies run, after they finished
    # and after eviction: deferred prompt blocks are found, shared and dropped as named ones
    settings = _settings(kv_cache_size=6000, max_model_len=4096, max_num_batched_tokens=768)
    requests = [
        Request(f"p{k % 4}", prompt + 16 * (k % 3), 20 + (k * 7) % 60, 0.015 * k) for k in range(90)
    ]
    eager, lazy = Simulation(settings, seed=4, lazy=False), Simulation(settings, seed=4)
    assert lazy.run(requests) == eager.run(requests)
    engines = eager.run_state.engine, lazy.run_state.engine
    counts = [(engine.prefix_hits, engine.num_preemptions) for engine in engines]
    assert counts[0] == counts[1]
    assert counts[1][0]
    assert counts[1][1]


def test_a_fleet_with_lora_adapters_runs_the_same_lazy_or_not(tmp_path: Path) -> None:
    settings = _settings(lora="x,y,z", max_loras=2, lora_load_latency="50ms")

    def run(lazy: bool, out: Path) -> bytes:
        cluster = Cluster([settings] * 2, "least-requests", seed=2, lazy=lazy)
        recorder = Recorder(2, output=out)
        workload = replace(_workload(30.0, 80), adapters=("x", "y", "z"))
        recorder.close(cluster, cluster.run(workload.requests(2), recorder))
        return (out / "requests.jsonl").read_bytes()

    assert run(True, tmp_path / "lazy") == run(False, tmp_path / "eager")


def test_a_run_records_the_same_whatever_the_collector_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run looks for reference cycles rarely, and leaves the collector as it found it."""
    before = gc.get_threshold()
    _run(_settings(), "least-requests", True, tmp_path / "rare")
    assert gc.get_threshold() == before
    monkeypatch.setattr(cluster_module, "YOUNG_OBJECTS", 1)  # the usual threshold
    _run(_settings(), "least-requests", True, tmp_path / "usual")
    for name in ("requests.jsonl", "timeseries.csv"):
        assert (tmp_path / "rare" / name).read_bytes() == (tmp_path / "usual" / name).read_bytes()
