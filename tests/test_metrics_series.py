"""Every series vLLM exports exists, with vLLM's name, type and labels, in every latency
model; the new series carry what they say; the reference in docs/metrics.md matches the list."""

from __future__ import annotations

import asyncio
import importlib.util
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

import pytest
from conftest import post_json
from prometheus_client.parser import text_string_to_metric_families

from llmsim.engine import Engine, Sequence
from llmsim.observability.metrics import Metrics
from llmsim.observability.registry import fast_families
from llmsim.observability.vllm_series import (
    BY_NAME,
    FINISHED_REASONS,
    PROMPT_TOKEN_SOURCES,
    SERIES,
    exported,
)
from llmsim.settings.model import Settings

if TYPE_CHECKING:
    from conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent
Shape = dict[str, tuple[str, frozenset[str]]]


def scrape(server: RunningServer) -> str:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
        return str(response.read().decode())


def shapes(text: str) -> Shape:
    """``vllm:`` family name -> (type, label names), as a Prometheus scraper reads them."""
    found: Shape = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("vllm:") or family.name.endswith("_created"):
            continue  # prometheus-client's creation times, vLLM's too
        labels = {name for sample in family.samples for name in sample.labels if name != "le"}
        found[family.name] = (family.type, frozenset(labels))
    return found


def expected(*, sleep_mode: bool = False, kv_cache_metrics: bool = False) -> Shape:
    series = exported(sleep_mode=sleep_mode, kv_cache_metrics=kv_cache_metrics)
    return {s.name: (s.kind, frozenset(s.labels)) for s in series}


def values(text: str, name: str) -> dict[str, float]:
    """``name``'s samples keyed by their label values other than model and engine."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                rest = {k: v for k, v in sample.labels.items() if k not in ("model_name", "engine")}
                found[",".join(rest.values())] = sample.value
    return found


def chat(server: RunningServer, **extra: object) -> None:
    body = {
        "model": "llmsim/sim-model",
        "messages": [{"role": "user", "content": "the same long prompt " * 12}],
        "max_tokens": 4,
        "ignore_eos": True,
        **extra,
    }
    status, answer = post_json(server, "/v1/chat/completions", body)
    assert status == 200, answer


def test_the_list_holds_every_series_of_vllms_logger_once() -> None:
    names = [series.name for series in SERIES]
    assert len(names) == len(set(names))
    for name in (
        "vllm:request_time_per_output_token_seconds",
        "vllm:request_max_num_generation_tokens",
        "vllm:kv_block_lifetime_seconds",
        "vllm:kv_block_idle_before_evict_seconds",
        "vllm:kv_block_reuse_gap_seconds",
        "vllm:prefix_cache_queries",
        "vllm:cache_config_info",
    ):
        assert name in BY_NAME
    for series in SERIES:
        assert (series.kind == "histogram") == (series.buckets is not None), series.name
        assert series.help.strip(), series.name
        assert series.source.strip(), series.name


@pytest.mark.parametrize(
    ("model", "flags"),
    [
        ("constant", ()),
        ("per-token", ()),
        ("step", ("--enable-sleep-mode", "--kv-cache-metrics")),
    ],
)
def test_a_server_exports_exactly_vllms_series_in_every_latency_model(
    llmsim_server: Callable[..., RunningServer], model: str, flags: tuple[str, ...]
) -> None:
    server = llmsim_server("--latency-model", model, "--inter-token-latency", "1ms", *flags)
    chat(server)  # series with children created on first use would show up now
    found = shapes(scrape(server))
    assert found == expected(sleep_mode=bool(flags), kv_cache_metrics=bool(flags))


def test_per_request_series_are_observed_once_per_request(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--inter-token-latency", "2ms", "--time-to-first-token", "5ms")
    chat(server, n=2)
    text = scrape(server)
    assert values(text, "vllm:request_max_num_generation_tokens_count") == {"": 1.0}
    assert values(text, "vllm:request_max_num_generation_tokens_sum") == {"": 4.0}
    assert values(text, "vllm:request_time_per_output_token_seconds_count") == {"": 2.0}
    mean_tpot = values(text, "vllm:request_time_per_output_token_seconds_sum")[""] / 2
    assert 0.0 < mean_tpot < 0.05
    by_source = values(text, "vllm:prompt_tokens_by_source_total")
    prompt = values(text, "vllm:prompt_tokens_total")[""]
    assert set(by_source) == set(PROMPT_TOKEN_SOURCES)
    assert by_source["local_compute"] == prompt > 0
    assert values(text, "vllm:request_prefill_kv_computed_tokens_sum")[""] == prompt
    assert set(values(text, "vllm:request_success_total")) == set(FINISHED_REASONS)
    assert values(text, "vllm:request_success_total")["length"] == 2.0
    assert values(text, "vllm:prefix_cache_queries_total") == {"": 0.0}
    info = values(text, "vllm:cache_config_info")
    assert list(info.values()) == [1.0]


def test_prefix_hits_count_as_cached_prompt_tokens_in_the_step_model(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--latency-model", "step", "--block-size", "16")
    chat(server)
    chat(server)  # the same prompt: its full blocks are cached now
    text = scrape(server)
    hits = values(text, "vllm:prefix_cache_hits_total")[""]
    assert hits >= 16
    by_source = values(text, "vllm:prompt_tokens_by_source_total")
    assert by_source["local_cache_hit"] == hits
    assert values(text, "vllm:prompt_tokens_cached_total")[""] == hits
    prompt = values(text, "vllm:prompt_tokens_total")[""]
    assert by_source["local_compute"] == prompt - hits
    assert values(text, "vllm:request_prefill_kv_computed_tokens_sum")[""] == prompt - hits
    waiting = values(text, "vllm:num_requests_waiting_by_reason")
    assert waiting == {"capacity": 0.0, "deferred": 0.0}


def test_a_pinned_waiting_gauge_is_split_by_reason_consistently() -> None:
    settings = Settings(fake_metrics={"num_requests_waiting": 7}, config=None)
    metrics = Metrics(settings)
    metrics.track(Engine(settings, observer=metrics).scheduler, settings.kv_cache_size)
    metrics.set_overrides(settings.fake_metrics)  # as the app does once every series exists
    text = metrics.exposition().decode()
    assert values(text, "vllm:num_requests_waiting_by_reason") == {
        "capacity": 7.0,
        "deferred": 0.0,
    }


def test_families_carry_vllms_help_and_buckets() -> None:
    settings = Settings(max_model_len=1000, config=None)
    families = fast_families(settings)
    tokens = families["vllm:request_max_num_generation_tokens"]
    assert tokens.buckets == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    tpot = families["vllm:request_time_per_output_token_seconds"]
    assert tpot.documentation == "Histogram of time_per_output_token_seconds per request."
    assert tpot.buckets is not None
    assert (tpot.buckets[0], tpot.buckets[-1]) == (0.01, 80.0)


def _generator() -> ModuleType:
    path = ROOT / "docs" / "gen_metrics_reference.py"
    spec = importlib.util.spec_from_file_location("gen_metrics_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_series_table_in_the_docs_is_generated_from_the_list() -> None:
    generator = _generator()
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert generator.BEGIN in text
    regenerated = generator.replace_region(text, generator.render_reference())
    assert regenerated == text, (
        "the series table in docs/metrics.md is out of date; "
        "regenerate it with: python docs/gen_metrics_reference.py"
    )
    for series in SERIES:
        assert f"| `{series.sample_name}` | {series.kind} |" in text


def finished(name: str, *, prompt: int, generated: int, **fields: object) -> Sequence:
    sequence = Sequence(
        request_id=name,
        index=0,
        adapter=None,
        prompt_tokens=prompt,
        output=["x"] * generated,
        natural_finish="length",
        stop_reason=None,
        max_tokens=generated,
        n=1,
        arrival=0.0,
        admitted=cast("asyncio.Future[None]", None),
        scheduled_at=0.0,
        first_token_at=0.1,
        last_token_at=0.1 + 0.01 * (generated - 1),
        finished_at=0.2,
        generated=generated,
        finish_reason="length",
    )
    for key, value in fields.items():
        setattr(sequence, key, value)
    return sequence


def test_cached_received_and_parallel_sequences_change_only_their_own_observations() -> None:
    metrics = Metrics(Settings(max_model_len=1000, config=None))
    plain = finished("plain", prompt=40, generated=5)
    cached = finished("cached", prompt=40, generated=5, cached_tokens=32)
    received = finished("received", prompt=40, generated=1, kv_transfer_delay=0.05)
    siblings = [
        finished("par", prompt=10, generated=7, n=3, index=0),
        finished("par", prompt=10, generated=9, n=3, index=1),
        finished("par", prompt=10, generated=2, n=3, index=2, finish_reason="abort"),
    ]
    for sequence in (plain, cached, received, *siblings):
        if sequence.finish_reason != "abort":
            metrics.first_token(sequence, 0.1)
        metrics.sequence_finished(sequence)
    text = metrics.exposition().decode()
    assert values(text, "vllm:prompt_tokens_by_source_total") == {
        "local_compute": 40 + 8 + 20.0,
        "local_cache_hit": 32.0,
        "external_kv_transfer": 40.0,
    }
    assert values(text, "vllm:prompt_tokens_cached_total") == {"": 72.0}
    assert values(text, "vllm:request_prefill_kv_computed_tokens_sum") == {"": 40 + 8 + 0 + 20.0}
    assert values(text, "vllm:request_prefill_kv_computed_tokens_count") == {"": 5.0}
    # one observation per request: 5, 5, 1 and the parallel request's most, 9
    assert values(text, "vllm:request_max_num_generation_tokens_count") == {"": 4.0}
    assert values(text, "vllm:request_max_num_generation_tokens_sum") == {"": 20.0}
    buckets = values(text, "vllm:request_max_num_generation_tokens_bucket")
    assert (buckets["1.0"], buckets["5.0"], buckets["10.0"]) == (1.0, 3.0, 4.0)
    assert values(text, "vllm:request_generation_tokens_count") == {"": 5.0}
    # mean time per output token of each sequence of two tokens or more
    assert values(text, "vllm:request_time_per_output_token_seconds_count") == {"": 4.0}


def _bounds(text: str, name: str) -> list[str]:
    """The ``le`` labels of the first series of histogram ``name``."""
    for family in text_string_to_metric_families(text):
        if family.name == name:
            les = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
            return les[: les.index("+Inf") + 1]
    raise AssertionError(f"{name} not exported")


def test_custom_histogram_buckets_replace_a_familys_bounds() -> None:
    custom = {"time_to_first_token": [0.5, 1], "request_tokens": [10, 100]}
    metrics = Metrics(Settings(custom_histogram_buckets=custom, config=None))
    text = metrics.exposition().decode()
    assert _bounds(text, "vllm:time_to_first_token_seconds") == ["0.5", "1.0", "+Inf"]
    for name in ("vllm:request_prompt_tokens", "vllm:request_prefill_kv_computed_tokens"):
        assert _bounds(text, name) == ["10.0", "100.0", "+Inf"]
    assert _bounds(text, "vllm:e2e_request_latency_seconds")[0] == "0.3"  # not listed: vLLM's


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"ttft": [1]}', "unknown bucket family 'ttft'"),
        ('{"request_latency": []}', "bucket list must not be empty"),
        ('{"request_latency": [1, true]}', "must be a number, not a boolean"),
        ('{"request_latency": [0, 1]}', "must be finite and greater than 0"),
        ('{"request_latency": [2, 1]}', "must be strictly increasing"),
    ],
)
def test_custom_histogram_buckets_are_checked_as_vllm_checks_them(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(custom_histogram_buckets=value, config=None)
