"""Fake metrics, KV-cache metrics, KV events, P/D transfer and sleep mode."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_settings import NoDecode

from llmsim.settings.fake_metrics import FakeMetrics
from llmsim.settings.field_types import (
    Duration,
    StepDuration,
    histogram_buckets,
    json_object_config,
    load_fake_metrics_input,
)
from llmsim.settings.kv_events import KVEventsConfig, PrefixCachingHashAlgo
from llmsim.settings.kv_transfer import KVTransferConfig


class MetricsKvFields(BaseModel):
    """Fake metrics, KV-cache metrics, KV events, P/D transfer and sleep mode."""

    # -- metrics ----------------------------------------------------------------
    fake_metrics: Annotated[
        FakeMetrics | None, NoDecode, BeforeValidator(load_fake_metrics_input)
    ] = Field(
        None,
        description="Fake values for vllm: series: gauges as values, counters as rates, "
        "histograms as a rate and a latency distribution, each fixed or a function of time "
        "(ramp, oscillate, square, schedule); also the LoRA info metric. Inline JSON or a "
        "JSON/TOML file. Also settable at run time via /admin/metrics.",
    )
    fake_metrics_refresh_interval: Duration = Field(
        "100ms",  # type: ignore[assignment]  # validated like user input
        gt=0,
        description="How often fake metric values move on: a scrape sees them as at the last "
        "whole interval since the override was set (counters and histograms integrated up to it).",
    )

    kv_cache_metrics: bool = Field(
        False,
        description="Sample KV blocks and export their lifetime, idle time before eviction "
        "and reuse gaps (step latency model; vLLM's --kv-cache-metrics).",
    )
    kv_cache_metrics_sample: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="Share of KV blocks sampled for --kv-cache-metrics, in (0, 1] "
        "(vLLM's --kv-cache-metrics-sample).",
    )

    custom_histogram_buckets: Annotated[
        dict[str, list[float]] | None, NoDecode, BeforeValidator(histogram_buckets)
    ] = Field(
        None,
        description="Bucket bounds by vLLM's histogram family (vLLM's "
        "--custom-histogram-buckets), as JSON or a TOML table: "
        '{"time_to_first_token": [0.05, 0.1, 0.5, 1], "request_latency": [1, 5, 30]}. '
        "Families: request_latency, time_to_first_token, inter_token_latency, "
        "iteration_tokens, request_params_n, request_num_preemptions, request_tokens, "
        "kv_cache_residency; every histogram of a listed family takes its bounds.",
    )

    # -- KV events, disaggregated prefill/decode, sleep mode ----------------------
    kv_events_config: Annotated[
        KVEventsConfig | None, NoDecode, BeforeValidator(json_object_config)
    ] = Field(
        None,
        description="Publish KV-cache events as vLLM does: vLLM's JSON "
        '(e.g. {"enable_kv_cache_events": true, "endpoint": "tcp://*:5557"}) or a TOML table. '
        "Needs llmsim[kv-events].",
    )
    prefix_caching_hash_algo: PrefixCachingHashAlgo = Field(
        "sha256",
        description="Block hash of the prefix cache, as vLLM: sha256 (pickle), sha256_cbor "
        "(for consumers in any language), xxhash, xxhash_cbor. PYTHONHASHSEED seeds it.",
    )
    enable_sleep_mode: bool = Field(
        False,
        description="Allow POST /sleep and POST /wake_up (with VLLM_SERVER_DEV_MODE=1), "
        "as vLLM's --enable-sleep-mode.",
    )
    kv_transfer_config: Annotated[
        KVTransferConfig | None, NoDecode, BeforeValidator(json_object_config)
    ] = Field(
        None,
        description="P/D role as vLLM's --kv-transfer-config JSON: with a kv_connector, "
        "kv_producer answers kv_transfer_params.do_remote_decode, kv_consumer serves "
        "do_remote_prefill, kv_both either; engine_id is the remote_engine_id it names. "
        "Without a kv_connector kv_transfer_params are ignored, as vLLM does. Unset: "
        "llmsim's default, both honoured; a vLLM command line without the flag ignores them.",
    )
    kv_cache_transfer_latency: Duration = Field(
        0.0,
        description="Decode instance (kv_transfer_params.do_remote_prefill): time to receive "
        "the prompt's KV cache, replacing the prefill (constant and step latency models).",
    )
    kv_cache_transfer_latency_std_dev: Duration = Field(
        0.0, description="Gaussian jitter on kv-cache-transfer-latency (at most 30% of it)."
    )
    kv_cache_transfer_time_per_token: StepDuration = Field(
        0.0,
        description="Decode instance: KV transfer time per prompt token, replacing the "
        "prefill (per-token and step latency models).",
    )
    kv_cache_transfer_time_per_token_std_dev: StepDuration = Field(
        0.0,
        description="Gaussian jitter on kv-cache-transfer-time-per-token (at most 30% of it).",
    )
