"""Latency, failure injection, scheduling limits and the step engine's costs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_settings import NoDecode

from llmsim.settings.field_types import FAILURE_TYPES, Duration, FailureType, StepDuration
from llmsim.settings.lora_modules import split_names


class TimingFields(BaseModel):
    """Latency, failure injection, scheduling limits and the step engine's costs."""

    # -- latency ----------------------------------------------------------------
    latency_model: Literal["constant", "per-token", "step"] = Field(
        "constant",
        description="constant: every request waits time-to-first-token; per-token: it waits "
        "frontend-latency plus one inter-token-latency plus prefill-time-per-token for each "
        "prompt token; step: one engine loop runs batches like vLLM's (KV-cache blocks, chunked "
        "prefill, preemption, prefix caching) and each step lasts inter-token-latency plus the "
        "step costs.",
    )
    time_to_first_token: Duration = Field(
        0.0,
        description="Delay from the start of running a request to its first token "
        "(constant latency model).",
    )
    time_to_first_token_std_dev: Duration = Field(
        0.0,
        description="Gaussian jitter on the time to first token (constant model: at most 30% "
        "of time-to-first-token).",
    )
    frontend_latency: Duration = Field(
        0.0,
        description="Fixed time each request spends before the engine (HTTP, tokenization, "
        "scheduling): it delays only that request's admission and first token, never the "
        "other requests' steps (per-token and step latency models; formerly prefill-overhead).",
    )
    frontend_serial_time: StepDuration = Field(
        0.0,
        description="The front end's time per request that requests take one at a time (step "
        "latency model): a burst of N requests reaches the engine over N times this, e.g. 1ms.",
    )
    frontend_time_per_running_request: StepDuration = Field(
        0.0,
        description="The front end's further time per request for each request the engine is "
        "running when it would reach the engine (step latency model): the API server streams "
        "their tokens, so a new request's handling waits behind that work, e.g. 150us.",
    )
    prefill_time_per_token: StepDuration = Field(
        0.0,
        description="Time to first token added per prompt token (per-token latency model), "
        "e.g. 50us.",
    )
    inter_token_latency: Duration = Field(0.0, description="Delay between consecutive tokens.")
    inter_token_latency_std_dev: Duration = Field(
        0.0, description="Gaussian jitter on inter-token-latency (at most 30% of it)."
    )
    time_factor_under_load: float = Field(
        1.0,
        ge=1.0,
        le=100.0,
        description="Latency multiplier reached when max-running-requests run; grows linearly from 1.",
    )
    lora_load_latency: Duration = Field(
        0.0, description="Time to load an adapter that is not in the CPU cache into a slot."
    )

    # -- failure injection ------------------------------------------------------
    failure_injection_rate: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Percentage of inference requests answered with an injected error.",
    )
    failure_types: Annotated[list[FailureType], NoDecode, BeforeValidator(split_names)] = Field(
        default_factory=lambda: list(FAILURE_TYPES),
        description="Errors to inject, from: " + ", ".join(FAILURE_TYPES) + ".",
    )
    stream_cut_rate: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Percentage of streams cut mid-way: the connection closes without [DONE].",
    )

    # -- scheduling -------------------------------------------------------------
    max_running_requests: int = Field(
        256,
        ge=1,
        le=1_000_000,
        description="Sequences that run at once (vLLM's max-num-seqs); the rest wait in the queue.",
    )
    max_waiting_queue_length: int = Field(
        1000,
        ge=0,
        le=10_000_000,
        description="Sequences that may wait; beyond it requests get 429.",
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs",
        description="fcfs: requests wait in arrival order and the last admitted is preempted "
        "first. priority: a request's priority field (default 0, lower first) orders the "
        "queue and the running request with the highest value is preempted first, as vLLM's "
        "--scheduling-policy priority.",
    )
    max_num_queued_reqs: int | None = Field(
        None,
        ge=0,
        le=100_000_000,
        description="Sequences in flight (waiting or running, on all of the server's engines) "
        "beyond which a new request is refused with 503 at once, as vLLM's "
        "--max-num-queued-reqs; a request counts its n times its prompts. Unset: no limit.",
    )
    max_num_queued_tokens: int | None = Field(
        None,
        ge=0,
        le=10_000_000_000,
        description="Prompt tokens of the requests still in prefill (no token out yet) at "
        "which a new request is refused with 503, as vLLM's --max-num-queued-tokens (a TTFT "
        "valve). Unset: no limit.",
    )
    max_num_active_seqs: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="The most sequences admitted into the running batch, as vLLM's "
        "--max-num-active-seqs: at most --max-num-seqs, which it leaves as the batch's "
        "capacity. Unset: --max-num-seqs.",
    )
    max_num_scheduled_tokens: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="The most tokens one engine step schedules (step latency model), as "
        "vLLM's --max-num-scheduled-tokens. Unset: --max-num-batched-tokens.",
    )
    watermark: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of the KV cache's blocks kept free when a waiting or preempted "
        "sequence is admitted beside others (step latency model), as vLLM's --watermark: "
        "headroom against preempting again soon. 0: none.",
    )
    prefill_schedule_interval: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Compute prompts only every N engine steps (step latency model), as "
        "vLLM's --prefill-schedule-interval: while a sequence decodes, new admissions and "
        "prompt chunks wait until N steps have passed since the last step that computed one, "
        "unless the queue outgrows what such a step takes. 1: every step.",
    )
    cache_aware_admission_window: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Within the first N waiting requests, admit those whose prefix is in the "
        "prefix cache first, deepest first (step latency model, with prefix caching and the "
        "fcfs policy), as vLLM's --cache-aware-admission-window: a cold prompt does not "
        "evict blocks a resident one still needs. 0: arrival order.",
    )
    cache_aware_admission_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="KV cache usage below which the cache-aware admission window is not "
        "applied, as vLLM's --cache-aware-admission-threshold. 0: on every step.",
    )
    max_loras: int = Field(
        1, ge=1, le=1024, description="LoRA adapters that can be active at once."
    )
    max_cpu_loras: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Adapters kept warm in the CPU cache (LRU); at least max-loras. Defaults to max-loras.",
    )
    kv_cache_size: int = Field(
        131_072,
        ge=1,
        le=1_000_000_000,
        description="Simulated KV cache capacity in tokens; kv_cache_usage_perc is tokens held / this.",
    )
    # -- step engine (latency-model step) ---------------------------------------
    block_size: int = Field(
        16,
        ge=1,
        le=4096,
        description="Tokens per KV-cache block (step latency model; vLLM's --block-size).",
    )
    max_num_batched_tokens: int = Field(
        8192,
        ge=1,
        le=10_000_000,
        description="Token budget of one engine step: decode tokens plus prefill chunks "
        "(step latency model; vLLM's --max-num-batched-tokens).",
    )
    enable_chunked_prefill: bool = Field(
        True,
        description="Split a long prompt over several steps (step latency model), as vLLM "
        "does by default. Off (vLLM's --no-enable-chunked-prefill): a prompt waits for a step "
        "with room for all of it; max-num-batched-tokens must then be at least max-model-len.",
    )
    scheduler_reserve_full_isl: bool = Field(
        True,
        description="Admit a waiting sequence only when the KV cache has free blocks for all "
        "of its prompt, not only for its first chunk (step latency model), as vLLM 0.34 does "
        "by default (--scheduler-reserve-full-isl): no admission that would soon preempt.",
    )
    long_prefill_token_threshold: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="The most prompt tokens one sequence computes in a step while others are "
        "running or waiting (step latency model; vLLM's --long-prefill-token-threshold), so "
        "a long prompt does not starve them. 0: no cap.",
    )
    long_prefill_token_threshold_adaptive: bool = Field(
        False,
        description="Never cap a prompt's chunk below a fair share of the step's budget "
        "(max-num-batched-tokens / sequences running and waiting), as vLLM's "
        "--long-prefill-token-threshold-adaptive.",
    )
    decode_time_per_sequence: StepDuration = Field(
        0.0,
        description="Step time added per decoding sequence beyond the first (step latency model).",
    )
    context_time_per_token: StepDuration = Field(
        0.0,
        description="Step time added per context token (prompt plus generated) held by the "
        "decoding sequences (step latency model).",
    )
    enable_prefix_caching: bool = Field(
        True,
        description="Reuse cached KV blocks of shared prompt prefixes (step latency model, "
        "or kv_blocks; vLLM's --enable-prefix-caching).",
    )
    kv_blocks: bool = Field(
        False,
        description="Keep a block-level KV cache under the constant and per-token latency "
        "models too: admission waits for the blocks of a sequence's prompt and output (no "
        "preemption), kv_cache_usage_perc reads the blocks, prefix-cache hits are counted "
        "(and shorten the per-token TTFT) and KV events are published when configured. Off "
        "by default: it hashes every prompt's blocks. The step latency model always keeps one.",
    )
    enable_prompt_tokens_details: bool = Field(
        False,
        description="Report usage.prompt_tokens_details.cached_tokens (vLLM's "
        "--enable-prompt-tokens-details).",
    )
    enable_force_include_usage: bool = Field(
        False,
        description="End every streamed chat or completion with a usage chunk, as if it asked "
        "for stream_options.include_usage (vLLM's --enable-force-include-usage).",
    )
    enable_per_request_metrics: bool = Field(
        False,
        description="Add the request's own timings to each chat or completion answer with one "
        "choice, as vLLM's --enable-per-request-metrics: a metrics object with "
        "time_to_first_token_ms, generation_time_ms, queue_time_ms, mean_itl_ms and "
        "tokens_per_second (in a stream, on its usage chunk).",
    )
