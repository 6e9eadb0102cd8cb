"""Every Prometheus series vLLM's ``PrometheusStatLogger`` registers, as plain data.

Taken from vLLM's ``vllm/v1/metrics/loggers.py`` (and the speculative-decoding counters of
``vllm/v1/spec_decode/metrics.py`` it registers through): name, type, label names, help
text and buckets exactly as vLLM declares them, plus when vLLM registers the series and what
llmsim reports in it. :mod:`llmsim.observability.metrics` builds its families from this
list, the metrics reference (``docs/metrics.md``) is generated from it, and a test compares
what a running server exports with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llmsim.settings.model import Settings

Kind = Literal["counter", "gauge", "histogram"]
When = Literal[
    "always",
    "lora",
    "sleep_mode",
    "hidden",
    "kv_cache_metrics",
    "kv_consumer",
    "speculative",
    "nans",
]

ENGINE_LABELS = ("model_name", "engine")
TOKEN_COUNT_BUCKETS = "1-2-5"
"""vLLM's ``build_1_2_5_buckets(max_model_len)``: 1, 2, 5, 10, 20, 50, ... up to the limit."""

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_GAP_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
N_BUCKETS = (1, 2, 5, 10, 20)
PREEMPTION_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
KV_RESIDENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60,
    120, 300, 600, 1200, 1800,
)  # fmt: skip

FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
"""vLLM's ``FINISH_REASON_STRINGS``: one ``vllm:request_success`` series each."""
PROMPT_TOKEN_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
"""vLLM's ``PromptTokenStats.ALL_SOURCES``."""
CACHE_HIT_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
"""vLLM's ``CacheHitSource``: the tiers a cached prompt token's KV came from."""
ADMISSION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")
"""vLLM's ``ADMISSION_REASONS``: the queue limits a request can be refused over."""
WAITING_REASONS = ("capacity", "deferred")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
CACHE_CONFIG_LABELS = (
    "block_size", "cache_dtype", "calculate_kv_scales", "cpu_offload_gb",
    "enable_prefix_caching", "gpu_memory_utilization", "is_attention_free", "num_cpu_blocks",
    "num_gpu_blocks", "num_gpu_blocks_override", "prefix_caching_hash_algo", "sliding_window",
    "swap_space", "swap_space_bytes",
)  # fmt: skip
LORA_LABELS = ("max_lora", "waiting_lora_adapters", "running_lora_adapters")

CONDITIONS: dict[When, str] = {
    "always": "always",
    "lora": "with LoRA enabled (`--enable-lora`); llmsim always",
    "sleep_mode": "with `--enable-sleep-mode`",
    "hidden": "deprecated: older releases, or `--show-hidden-metrics-for-version`; llmsim always",
    "kv_cache_metrics": "with `--kv-cache-metrics`; llmsim: also, in the step latency model",
    "kv_consumer": "with a `--kv-transfer-config` whose `kv_role` is `kv_consumer` or `kv_both`",
    "speculative": "with speculative decoding; not simulated by llmsim",
    "nans": "with `VLLM_COMPUTE_NANS_IN_LOGITS`; not simulated by llmsim",
}
EXPORTED: frozenset[When] = frozenset({"always", "lora", "hidden"})
"""The conditions under which llmsim exports a series in every latency model (``sleep_mode``
ones are added with ``--enable-sleep-mode``)."""


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    """As registered with prometheus-client (a counter's samples add ``_total``)."""
    kind: Kind
    help: str
    source: str
    """What llmsim reports in it."""
    labels: tuple[str, ...] = ENGINE_LABELS
    buckets: tuple[float, ...] | str | None = None
    when: When = "always"

    @property
    def sample_name(self) -> str:
        """The name its samples carry in the exposition (histograms: plus ``_bucket``...)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


def _gauge(
    name: str,
    help: str,
    source: str,
    *,
    labels: tuple[str, ...] = ENGINE_LABELS,
    when: When = "always",
) -> Series:
    return Series(name, "gauge", help, source, labels, None, when)


def _counter(
    name: str,
    help: str,
    source: str,
    *,
    labels: tuple[str, ...] = ENGINE_LABELS,
    when: When = "always",
) -> Series:
    return Series(name, "counter", help, source, labels, None, when)


def _histogram(
    name: str, help: str, source: str, buckets: tuple[float, ...] | str, *, when: When = "always"
) -> Series:
    return Series(name, "histogram", help, source, ENGINE_LABELS, buckets, when)


WAITING_BY_REASON_HELP = (
    "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling "
    "capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, "
    "blocked status). Sum of all reasons equals vllm:num_requests_waiting."
)
KV_FETCH_HELP = (
    "Number of waiting requests by async KV load stage. Stage labels: 'waiting_to_start' = "
    "needs an async KV load that has not started; 'in_progress' = load started and not yet "
    "reported finished; 'completed_waiting' = load finished, request not running yet."
)
SLEEP_HELP = (
    "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
    "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2."
)
RESIDENCY_NOTE = "Sampled metrics (controlled by --kv-cache-metrics-sample)."

SERIES: tuple[Series, ...] = (
    # -- scheduler state ----------------------------------------------------------
    _gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
           "sequences running (in the step model: in the engine loop's batch)"),
    _gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
           "sequences waiting (in the step model: also those held back by KV blocks, the "
           "token budget, a KV transfer or a preemption)"),
    _gauge("vllm:num_requests_waiting_by_reason", WAITING_BY_REASON_HELP,
           "`deferred`: sequences waiting for a LoRA slot, or for a KV transfer (P/D decode "
           "side, step model); `capacity`: the other waiting sequences",
           labels=(*ENGINE_LABELS, "reason")),
    _gauge("vllm:num_requests_kv_fetch_by_stage", KV_FETCH_HELP,
           "P/D decode side: `in_progress`, sequences receiving their prompt's KV (counted as "
           "waiting in the step model, as running in the others); `waiting_to_start`, those "
           "waiting for blocks to start (step model); "
           "`completed_waiting`, 0 (a sequence whose KV arrived runs at once)",
           labels=(*ENGINE_LABELS, "stage"), when="kv_consumer"),
    _gauge("vllm:engine_sleep_state", SLEEP_HELP, "the sleep state (see below)",
           labels=(*ENGINE_LABELS, "sleep_state"), when="sleep_mode"),
    _gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
           "KV blocks in use / all blocks (step model, `--kv-blocks`), else held tokens / `--kv-cache-size`"),
    _gauge("vllm:lora_requests_info", "Running stats on lora requests.",
           "the adapters running and waiting, in its labels (see below)",
           labels=LORA_LABELS, when="lora"),
    _gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
           "the cache configuration in its labels, value 1",
           labels=(*CACHE_CONFIG_LABELS, "engine")),
    # -- caches -------------------------------------------------------------------
    _counter("vllm:corrupted_requests",
             "Corrupted requests, in terms of total number of requests with NaNs in logits.",
             "not exported", when="nans"),
    _counter("vllm:prefix_cache_queries",
             "Prefix cache queries, in terms of number of queried tokens.",
             "prompt tokens looked up in the prefix cache (step model, `--kv-blocks`; else 0)"),
    _counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
             "of those, tokens found in the cache (step model, `--kv-blocks`; else 0)"),
    _counter("vllm:external_prefix_cache_queries",
             "External prefix cache queries from KV connector cross-instance cache sharing, "
             "in terms of number of queried tokens.", "0: no KV connector cache is simulated"),
    _counter("vllm:external_prefix_cache_hits",
             "External prefix cache hits from KV connector cross-instance cache sharing, "
             "in terms of number of cached tokens.", "0: no KV connector cache is simulated"),
    _counter("vllm:mm_cache_queries",
             "Multi-modal cache queries, in terms of number of queried items.",
             "0: no multi-modal input"),
    _counter("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.",
             "0: no multi-modal input"),
    # -- counters -----------------------------------------------------------------
    _counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
             "recompute preemptions (step model; 0 in the others)"),
    _counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
             "prompt tokens, when a sequence releases its first token"),
    _counter("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
             "the same prompt tokens by source: prefix-cache hits, KV received from a prefill "
             "instance, and computed", labels=(*ENGINE_LABELS, "source")),
    _counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).",
             "prompt tokens not computed: prefix-cache hits and KV received"),
    _counter("vllm:prompt_tokens_cached_by_source",
             "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), "
             "host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or "
             "external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + "
             "vllm:external_prefix_cache_hits.",
             "`device`: the tokens of `vllm:prefix_cache_hits`; the other tiers 0 (no "
             "offloading or connector cache is simulated)", labels=(*ENGINE_LABELS, "source")),
    _counter("vllm:generation_tokens", "Number of generation tokens processed.",
             "output tokens released"),
    _counter("vllm:request_success", "Count of successfully processed requests.",
             "finished sequences by `finished_reason`", labels=(*ENGINE_LABELS, "finished_reason")),
    _counter("vllm:admission_rejections",
             "Number of admission attempts rejected by a queue limit, by reason.",
             "requests refused with 503 over `--max-num-queued-reqs` or "
             "`--max-num-queued-tokens`, server-wide", labels=("model_name", "reason")),
    # -- histograms of counts -------------------------------------------------------
    _histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
               "prompt tokens of each finished sequence", TOKEN_COUNT_BUCKETS),
    _histogram("vllm:request_generation_tokens", "Number of generation tokens processed.",
               "tokens each finished sequence generated", TOKEN_COUNT_BUCKETS),
    _histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
               "tokens computed in one engine step (step model; the other models have no "
               "steps and observe nothing)", ITERATION_TOKEN_BUCKETS),
    _histogram("vllm:request_max_num_generation_tokens",
               "Histogram of maximum number of requested generation tokens.",
               "the most tokens one sequence of a request generated, once per request and "
               "prompt when all its `n` sequences finished", TOKEN_COUNT_BUCKETS),
    _histogram("vllm:request_params_n", "Histogram of the n request parameter.",
               "the request's `n`, once per accepted request", N_BUCKETS),
    _histogram("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
               "the request's `max_tokens` (or the room left in the context)",
               TOKEN_COUNT_BUCKETS),
    # -- histograms of time ---------------------------------------------------------
    _histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
               "arrival to the release of the first token", TTFT_BUCKETS),
    _histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
               "the gap between two consecutive tokens' releases", TOKEN_GAP_BUCKETS),
    _histogram("vllm:time_per_output_token_seconds",
               "Histogram of time per output token in seconds.",
               "the same observations as `vllm:inter_token_latency_seconds` (vLLM's older name)",
               TOKEN_GAP_BUCKETS, when="hidden"),
    _histogram("vllm:request_time_per_output_token_seconds",
               "Histogram of time_per_output_token_seconds per request.",
               "per finished sequence of two tokens or more: (last token - first token) / (tokens - 1)",
               TOKEN_GAP_BUCKETS),
    _histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
               "arrival to the release of the last token (the chunk with the finish reason)",
               REQUEST_LATENCY_BUCKETS),
    _histogram("vllm:request_queue_time_seconds",
               "Histogram of time spent in WAITING phase for request.",
               "arrival to first scheduling", REQUEST_LATENCY_BUCKETS),
    _histogram("vllm:request_inference_time_seconds",
               "Histogram of time spent in RUNNING phase for request.",
               "first scheduling to last token", REQUEST_LATENCY_BUCKETS),
    _histogram("vllm:request_prefill_time_seconds",
               "Histogram of time spent in PREFILL phase for request.",
               "first scheduling to first token", REQUEST_LATENCY_BUCKETS),
    _histogram("vllm:request_decode_time_seconds",
               "Histogram of time spent in DECODE phase for request.",
               "first token to last token", REQUEST_LATENCY_BUCKETS),
    _histogram("vllm:request_num_preemptions",
               "Histogram of the number of times a request was preempted.",
               "times each finished sequence was preempted (step model; 0 in the others)",
               PREEMPTION_BUCKETS),
    _histogram("vllm:request_prefill_kv_computed_tokens",
               "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
               "prompt tokens minus cached tokens of each finished sequence", TOKEN_COUNT_BUCKETS),
    # -- KV-cache residency (sampled) -----------------------------------------------
    _histogram("vllm:kv_block_lifetime_seconds",
               f"Histogram of KV cache block lifetime from allocation to eviction. {RESIDENCY_NOTE}",
               "sampled blocks: allocation to eviction (the block handed out again)",
               KV_RESIDENCY_BUCKETS, when="kv_cache_metrics"),
    _histogram("vllm:kv_block_idle_before_evict_seconds",
               f"Histogram of idle time before KV cache block eviction. {RESIDENCY_NOTE}",
               "sampled blocks: last prefix-cache hit (or allocation) to eviction",
               KV_RESIDENCY_BUCKETS, when="kv_cache_metrics"),
    _histogram("vllm:kv_block_reuse_gap_seconds",
               "Histogram of time gaps between consecutive KV cache block accesses. Only the "
               f"most recent accesses are recorded (ring buffer). {RESIDENCY_NOTE}",
               "sampled blocks: gaps between their last four prefix-cache hits, at eviction",
               KV_RESIDENCY_BUCKETS, when="kv_cache_metrics"),
    # -- speculative decoding -----------------------------------------------------------
    _counter("vllm:spec_decode_num_drafts", "Number of spec decoding drafts.", "not exported",
             when="speculative"),
    _counter("vllm:spec_decode_num_draft_tokens", "Number of draft tokens.", "not exported",
             when="speculative"),
    _counter("vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.",
             "not exported", when="speculative"),
    _counter("vllm:spec_decode_num_accepted_tokens_per_pos",
             "Accepted tokens per draft position.", "not exported",
             labels=(*ENGINE_LABELS, "position"), when="speculative"),
)  # fmt: skip

BY_NAME: dict[str, Series] = {series.name: series for series in SERIES}

BUCKET_FAMILY_OF: dict[tuple[float, ...] | str, str] = {
    TOKEN_COUNT_BUCKETS: "request_tokens",
    TTFT_BUCKETS: "time_to_first_token",
    TOKEN_GAP_BUCKETS: "inter_token_latency",
    REQUEST_LATENCY_BUCKETS: "request_latency",
    N_BUCKETS: "request_params_n",
    ITERATION_TOKEN_BUCKETS: "iteration_tokens",
    PREEMPTION_BUCKETS: "request_num_preemptions",
    KV_RESIDENCY_BUCKETS: "kv_cache_residency",
}
"""vLLM's bucket family of each default set of bounds (``--custom-histogram-buckets`` keys)."""


def exported(
    *, sleep_mode: bool = False, kv_cache_metrics: bool = False, kv_consumer: bool = False
) -> tuple[Series, ...]:
    """The series an llmsim instance exports: those of every latency model, plus those of
    ``--enable-sleep-mode``, of ``--kv-cache-metrics`` (step model) and of a KV consumer
    when asked for."""
    extra = {
        "sleep_mode": sleep_mode,
        "kv_cache_metrics": kv_cache_metrics,
        "kv_consumer": kv_consumer,
    }
    return tuple(s for s in SERIES if s.when in EXPORTED or extra.get(s.when, False))


def token_count_buckets(maximum: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``maximum`` (vLLM's token-count buckets)."""
    buckets: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > maximum:
                return buckets
            buckets.append(value)
        exponent += 1


def buckets_of(
    series: Series, max_model_len: int, custom: Mapping[str, Sequence[float]] | None = None
) -> tuple[float, ...]:
    """A histogram's upper bounds (without ``+Inf``) for an instance with this context, or
    those ``custom`` (``--custom-histogram-buckets``) gives its family."""
    if custom:
        assert series.buckets is not None, f"{series.name} is not a histogram"
        bounds = custom.get(BUCKET_FAMILY_OF[series.buckets])
        if bounds is not None:
            return tuple(float(bound) for bound in bounds)
    if series.buckets == TOKEN_COUNT_BUCKETS:
        return tuple(token_count_buckets(max_model_len))
    assert isinstance(series.buckets, tuple), f"{series.name} is not a histogram"
    return series.buckets


def cache_config_labels(settings: Settings, num_gpu_blocks: int) -> dict[str, str]:
    """The labels of ``vllm:cache_config_info``: vLLM's ``CacheConfig`` fields as text."""
    return {
        "block_size": str(settings.block_size),
        "cache_dtype": "auto",
        "calculate_kv_scales": "False",
        "cpu_offload_gb": "0",
        "enable_prefix_caching": str(settings.enable_prefix_caching),
        "gpu_memory_utilization": "0.9",
        "is_attention_free": "False",
        "num_cpu_blocks": "None",
        "num_gpu_blocks": str(num_gpu_blocks),
        "num_gpu_blocks_override": "None",
        "prefix_caching_hash_algo": str(settings.prefix_caching_hash_algo),
        "sliding_window": "None",
        "swap_space": "4",
        "swap_space_bytes": str(4 * 2**30),
    }
