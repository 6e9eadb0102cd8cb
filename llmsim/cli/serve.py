"""The ``llmsim serve`` command: one option per settings field, grouped into help panels.

Every option is typed as text here and validated by the settings model, so a bad value gives
the same one-line error whether it came from a flag, an ``LLMSIM_*`` variable or a TOML
profile. On/off settings are flag pairs (``--access-log/--no-access-log``) that stay ``None``
when not given, so the environment and the profile still apply.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmsim.cli.launching import launch_or_exit
from llmsim.cli.options import load_or_exit
from llmsim.cli.serve_options import (
    ANSWERS,
    FAULTS,
    KV,
    LATENCY,
    METRICS,
    MODEL,
    SCHED,
    SERVER,
    TLS,
    opt,
    switch,
)
from llmsim.settings.instances import data_parallel_instances


def serve(
    config: Annotated[
        str | None, opt("config", "--config", "-c", panel=SERVER, metavar="FILE")
    ] = None,
    profile: Annotated[str | None, opt("profile", panel=SERVER, metavar="NAME")] = None,
    host: Annotated[str | None, opt("host", panel=SERVER, metavar="HOST")] = None,
    port: Annotated[str | None, opt("port", panel=SERVER, metavar="INT")] = None,
    uds: Annotated[str | None, opt("uds", panel=SERVER, metavar="PATH")] = None,
    grpc_port: Annotated[str | None, opt("grpc_port", panel=SERVER, metavar="INT")] = None,
    grpc_only: Annotated[
        bool | None, opt("grpc_only", "--grpc-only/--no-grpc-only", "--grpc", panel=SERVER)
    ] = None,
    log_level: Annotated[str | None, opt("log_level", panel=SERVER, metavar="LEVEL")] = None,
    log_format: Annotated[str | None, opt("log_format", panel=SERVER, metavar="text|json")] = None,
    access_log: Annotated[bool | None, switch("access_log", SERVER)] = None,
    fast_lane: Annotated[bool | None, switch("fast_lane", SERVER)] = None,
    disable_access_log_for_endpoints: Annotated[
        list[str] | None,
        opt("disable_access_log_for_endpoints", panel=SERVER, metavar="PATH,PATH"),
    ] = None,
    log_requests: Annotated[bool | None, switch("log_requests", SERVER)] = None,
    log_outputs: Annotated[bool | None, switch("log_outputs", SERVER)] = None,
    log_deltas: Annotated[bool | None, switch("log_deltas", SERVER)] = None,
    max_log_len: Annotated[str | None, opt("max_log_len", panel=SERVER, metavar="INT")] = None,
    log_stats: Annotated[bool | None, switch("log_stats", SERVER)] = None,
    log_error_stack: Annotated[bool | None, switch("log_error_stack", SERVER)] = None,
    log_stats_interval: Annotated[
        str | None, opt("log_stats_interval", panel=SERVER, metavar="DURATION")
    ] = None,
    dashboard: Annotated[bool | None, switch("dashboard", SERVER)] = None,
    api_key: Annotated[str | None, opt("api_key", panel=SERVER, metavar="KEY")] = None,
    allowed_origins: Annotated[
        list[str] | None, opt("allowed_origins", panel=SERVER, metavar="JSON|A,B")
    ] = None,
    allowed_methods: Annotated[
        list[str] | None, opt("allowed_methods", panel=SERVER, metavar="JSON|A,B")
    ] = None,
    allowed_headers: Annotated[
        list[str] | None, opt("allowed_headers", panel=SERVER, metavar="JSON|A,B")
    ] = None,
    allow_credentials: Annotated[bool | None, switch("allow_credentials", SERVER)] = None,
    root_path: Annotated[str | None, opt("root_path", panel=SERVER, metavar="PATH")] = None,
    sse_keep_alive_interval: Annotated[
        str | None, opt("sse_keep_alive_interval", panel=SERVER, metavar="DURATION")
    ] = None,
    stream_interval: Annotated[
        str | None, opt("stream_interval", panel=SERVER, metavar="INT")
    ] = None,
    enable_server_load_tracking: Annotated[
        bool | None, switch("enable_server_load_tracking", SERVER)
    ] = None,
    enable_tokenizer_info_endpoint: Annotated[
        bool | None, switch("enable_tokenizer_info_endpoint", SERVER)
    ] = None,
    enable_scale_out: Annotated[bool | None, switch("enable_scale_out", SERVER)] = None,
    enable_request_id_headers: Annotated[
        bool | None, switch("enable_request_id_headers", SERVER)
    ] = None,
    disable_fastapi_docs: Annotated[bool | None, switch("disable_fastapi_docs", SERVER)] = None,
    max_request_body_size: Annotated[
        str | None, opt("max_request_body_size", panel=SERVER, metavar="SIZE")
    ] = None,
    max_header_size: Annotated[
        str | None, opt("max_header_size", panel=SERVER, metavar="SIZE")
    ] = None,
    max_header_count: Annotated[
        str | None, opt("max_header_count", panel=SERVER, metavar="INT")
    ] = None,
    responses_store_max_entries: Annotated[
        str | None, opt("responses_store_max_entries", panel=SERVER, metavar="INT")
    ] = None,
    responses_store_max_size: Annotated[
        str | None, opt("responses_store_max_size", panel=SERVER, metavar="SIZE")
    ] = None,
    startup_duration: Annotated[
        str | None, opt("startup_duration", panel=SERVER, metavar="DURATION")
    ] = None,
    shutdown_timeout: Annotated[
        str | None, opt("shutdown_timeout", panel=SERVER, metavar="DURATION")
    ] = None,
    data_parallel_size: Annotated[
        str | None,
        opt("data_parallel_size", "--data-parallel-size", "-dp", panel=SERVER, metavar="INT"),
    ] = None,
    data_parallel_rank: Annotated[
        str | None,
        opt("data_parallel_rank", "--data-parallel-rank", "-dpn", panel=SERVER, metavar="INT"),
    ] = None,
    data_parallel_size_local: Annotated[
        str | None,
        opt(
            "data_parallel_size_local",
            "--data-parallel-size-local",
            "-dpl",
            panel=SERVER,
            metavar="INT",
        ),
    ] = None,
    data_parallel_start_rank: Annotated[
        str | None,
        opt(
            "data_parallel_start_rank",
            "--data-parallel-start-rank",
            "-dpr",
            panel=SERVER,
            metavar="INT",
        ),
    ] = None,
    data_parallel_hybrid_lb: Annotated[
        bool | None,
        opt(
            "data_parallel_hybrid_lb",
            "--data-parallel-hybrid-lb/--no-data-parallel-hybrid-lb",
            "-dph",
            panel=SERVER,
        ),
    ] = None,
    data_parallel_external_lb: Annotated[
        bool | None,
        opt(
            "data_parallel_external_lb",
            "--data-parallel-external-lb/--no-data-parallel-external-lb",
            "-dpe",
            panel=SERVER,
        ),
    ] = None,
    api_server_count: Annotated[
        str | None,
        opt("api_server_count", "--api-server-count", "-asc", panel=SERVER, metavar="INT"),
    ] = None,
    dp_ports: Annotated[bool | None, opt("dp_ports", "--dp-ports/--no-dp-ports", panel=SERVER)] = (
        None
    ),
    data_parallel_backend: Annotated[
        str | None, opt("data_parallel_backend", panel=SERVER, metavar="mp|inprocess|workers")
    ] = None,
    workers: Annotated[str | None, opt("workers", panel=SERVER, metavar="INT")] = None,
    ssl_keyfile: Annotated[str | None, opt("ssl_keyfile", panel=TLS, metavar="FILE")] = None,
    ssl_certfile: Annotated[str | None, opt("ssl_certfile", panel=TLS, metavar="FILE")] = None,
    ssl_ca_certs: Annotated[str | None, opt("ssl_ca_certs", panel=TLS, metavar="FILE")] = None,
    ssl_cert_reqs: Annotated[str | None, opt("ssl_cert_reqs", panel=TLS, metavar="0|1|2")] = None,
    ssl_ciphers: Annotated[str | None, opt("ssl_ciphers", panel=TLS, metavar="CIPHERS")] = None,
    enable_ssl_refresh: Annotated[bool | None, switch("enable_ssl_refresh", TLS)] = None,
    self_signed_certs: Annotated[bool | None, switch("self_signed_certs", TLS)] = None,
    vllm_flags_without_effect: Annotated[
        list[str] | None, opt("vllm_flags_without_effect", panel=SERVER, metavar="FLAG")
    ] = None,
    model: Annotated[str | None, opt("model", panel=MODEL, metavar="NAME")] = None,
    served_model_name: Annotated[
        list[str] | None, opt("served_model_name", panel=MODEL, metavar="NAME...")
    ] = None,
    lora: Annotated[list[str] | None, opt("lora", panel=MODEL, metavar="A,B")] = None,
    lora_modules: Annotated[
        list[str] | None, opt("lora_modules", panel=MODEL, metavar="NAME=PATH...")
    ] = None,
    max_model_len: Annotated[str | None, opt("max_model_len", panel=MODEL, metavar="INT")] = None,
    tokenizer: Annotated[str | None, opt("tokenizer", panel=MODEL, metavar="PATH|HUB_ID")] = None,
    chat_template: Annotated[str | None, opt("chat_template", panel=MODEL, metavar="FILE")] = None,
    max_logprobs: Annotated[str | None, opt("max_logprobs", panel=MODEL, metavar="INT")] = None,
    max_request_work: Annotated[
        str | None, opt("max_request_work", panel=MODEL, metavar="INT")
    ] = None,
    response_role: Annotated[str | None, opt("response_role", panel=MODEL, metavar="ROLE")] = None,
    return_tokens_as_token_ids: Annotated[
        bool | None, switch("return_tokens_as_token_ids", MODEL)
    ] = None,
    reasoning_parser: Annotated[
        str | None, opt("reasoning_parser", panel=MODEL, metavar="NAME")
    ] = None,
    enable_auto_tool_choice: Annotated[
        bool | None, switch("enable_auto_tool_choice", MODEL)
    ] = None,
    tool_call_parser: Annotated[
        str | None, opt("tool_call_parser", panel=MODEL, metavar="NAME")
    ] = None,
    default_chat_template_kwargs: Annotated[
        str | None, opt("default_chat_template_kwargs", panel=MODEL, metavar="JSON")
    ] = None,
    reasoning_effort_map: Annotated[
        str | None, opt("reasoning_effort_map", panel=MODEL, metavar="JSON")
    ] = None,
    generation_config: Annotated[
        str | None, opt("generation_config", panel=MODEL, metavar="auto|vllm|DIR")
    ] = None,
    override_generation_config: Annotated[
        str | None, opt("override_generation_config", panel=MODEL, metavar="JSON")
    ] = None,
    exclude_tools_when_tool_choice_none: Annotated[
        bool | None, switch("exclude_tools_when_tool_choice_none", MODEL)
    ] = None,
    trust_request_chat_template: Annotated[
        bool | None, switch("trust_request_chat_template", MODEL)
    ] = None,
    fingerprint_mode: Annotated[
        str | None, opt("fingerprint_mode", panel=MODEL, metavar="full|hash|custom|none")
    ] = None,
    fingerprint_value: Annotated[
        str | None, opt("fingerprint_value", panel=MODEL, metavar="TEXT")
    ] = None,
    runner: Annotated[
        str | None, opt("runner", panel=MODEL, metavar="auto|generate|pooling|draft")
    ] = None,
    embedding_dimension: Annotated[
        str | None, opt("embedding_dimension", panel=MODEL, metavar="INT")
    ] = None,
    mode: Annotated[str | None, opt("mode", panel=MODEL, metavar="echo|random")] = None,
    seed: Annotated[str | None, opt("seed", panel=MODEL, metavar="INT")] = None,
    tool_call_probability: Annotated[
        str | None, opt("tool_call_probability", panel=MODEL, metavar="FLOAT")
    ] = None,
    responses: Annotated[
        str | None, opt("responses", panel=ANSWERS, metavar="FILE|builtin:tasks")
    ] = None,
    dataset: Annotated[str | None, opt("dataset", panel=ANSWERS, metavar="FILE")] = None,
    replay: Annotated[str | None, opt("replay", panel=ANSWERS, metavar="FILE")] = None,
    replay_speed: Annotated[str | None, opt("replay_speed", panel=ANSWERS, metavar="FLOAT")] = None,
    replay_strict: Annotated[bool | None, switch("replay_strict", ANSWERS)] = None,
    upstream: Annotated[str | None, opt("upstream", panel=ANSWERS, metavar="URL")] = None,
    upstream_timeout: Annotated[
        str | None, opt("upstream_timeout", panel=ANSWERS, metavar="DURATION")
    ] = None,
    latency_model: Annotated[
        str | None, opt("latency_model", panel=LATENCY, metavar="constant|per-token|step")
    ] = None,
    time_to_first_token: Annotated[
        str | None, opt("time_to_first_token", panel=LATENCY, metavar="DURATION")
    ] = None,
    time_to_first_token_std_dev: Annotated[
        str | None, opt("time_to_first_token_std_dev", panel=LATENCY, metavar="DURATION")
    ] = None,
    frontend_latency: Annotated[
        str | None, opt("frontend_latency", panel=LATENCY, metavar="DURATION")
    ] = None,
    frontend_serial_time: Annotated[
        str | None, opt("frontend_serial_time", panel=LATENCY, metavar="DURATION")
    ] = None,
    frontend_time_per_running_request: Annotated[
        str | None,
        opt("frontend_time_per_running_request", panel=LATENCY, metavar="DURATION"),
    ] = None,
    prefill_overhead: Annotated[
        str | None,
        typer.Option("--prefill-overhead", hidden=True, help="Old name of --frontend-latency."),
    ] = None,
    prefill_time_per_token: Annotated[
        str | None, opt("prefill_time_per_token", panel=LATENCY, metavar="DURATION")
    ] = None,
    inter_token_latency: Annotated[
        str | None, opt("inter_token_latency", panel=LATENCY, metavar="DURATION")
    ] = None,
    inter_token_latency_std_dev: Annotated[
        str | None, opt("inter_token_latency_std_dev", panel=LATENCY, metavar="DURATION")
    ] = None,
    time_factor_under_load: Annotated[
        str | None, opt("time_factor_under_load", panel=LATENCY, metavar="FLOAT")
    ] = None,
    lora_load_latency: Annotated[
        str | None, opt("lora_load_latency", panel=LATENCY, metavar="DURATION")
    ] = None,
    max_running_requests: Annotated[
        str | None,
        opt(
            "max_running_requests",
            "--max-running-requests",
            "--max-num-seqs",
            panel=SCHED,
            metavar="INT",
        ),
    ] = None,
    max_waiting_queue_length: Annotated[
        str | None, opt("max_waiting_queue_length", panel=SCHED, metavar="INT")
    ] = None,
    scheduling_policy: Annotated[
        str | None, opt("scheduling_policy", panel=SCHED, metavar="fcfs|priority")
    ] = None,
    max_num_queued_reqs: Annotated[
        str | None, opt("max_num_queued_reqs", panel=SCHED, metavar="INT")
    ] = None,
    max_num_queued_tokens: Annotated[
        str | None, opt("max_num_queued_tokens", panel=SCHED, metavar="TOKENS")
    ] = None,
    max_num_active_seqs: Annotated[
        str | None, opt("max_num_active_seqs", panel=SCHED, metavar="INT")
    ] = None,
    max_num_scheduled_tokens: Annotated[
        str | None, opt("max_num_scheduled_tokens", panel=SCHED, metavar="TOKENS")
    ] = None,
    watermark: Annotated[str | None, opt("watermark", panel=SCHED, metavar="FRACTION")] = None,
    prefill_schedule_interval: Annotated[
        str | None, opt("prefill_schedule_interval", panel=SCHED, metavar="STEPS")
    ] = None,
    cache_aware_admission_window: Annotated[
        str | None, opt("cache_aware_admission_window", panel=SCHED, metavar="REQUESTS")
    ] = None,
    cache_aware_admission_threshold: Annotated[
        str | None, opt("cache_aware_admission_threshold", panel=SCHED, metavar="FRACTION")
    ] = None,
    max_loras: Annotated[str | None, opt("max_loras", panel=SCHED, metavar="INT")] = None,
    max_cpu_loras: Annotated[str | None, opt("max_cpu_loras", panel=SCHED, metavar="INT")] = None,
    kv_cache_size: Annotated[
        str | None, opt("kv_cache_size", panel=SCHED, metavar="TOKENS")
    ] = None,
    # -- step engine ------------------------------------------------------------
    block_size: Annotated[str | None, opt("block_size", panel=SCHED, metavar="INT")] = None,
    max_num_batched_tokens: Annotated[
        str | None, opt("max_num_batched_tokens", panel=SCHED, metavar="INT")
    ] = None,
    enable_chunked_prefill: Annotated[bool | None, switch("enable_chunked_prefill", SCHED)] = None,
    scheduler_reserve_full_isl: Annotated[
        bool | None, switch("scheduler_reserve_full_isl", SCHED)
    ] = None,
    long_prefill_token_threshold: Annotated[
        str | None, opt("long_prefill_token_threshold", panel=SCHED, metavar="TOKENS")
    ] = None,
    long_prefill_token_threshold_adaptive: Annotated[
        bool | None, switch("long_prefill_token_threshold_adaptive", SCHED)
    ] = None,
    decode_time_per_sequence: Annotated[
        str | None, opt("decode_time_per_sequence", panel=LATENCY, metavar="DURATION")
    ] = None,
    context_time_per_token: Annotated[
        str | None, opt("context_time_per_token", panel=LATENCY, metavar="DURATION")
    ] = None,
    enable_prefix_caching: Annotated[bool | None, switch("enable_prefix_caching", SCHED)] = None,
    kv_blocks: Annotated[bool | None, switch("kv_blocks", SCHED)] = None,
    enable_prompt_tokens_details: Annotated[
        bool | None, switch("enable_prompt_tokens_details", METRICS)
    ] = None,
    enable_force_include_usage: Annotated[
        bool | None, switch("enable_force_include_usage", METRICS)
    ] = None,
    enable_per_request_metrics: Annotated[
        bool | None, switch("enable_per_request_metrics", METRICS)
    ] = None,
    failure_injection_rate: Annotated[
        str | None, opt("failure_injection_rate", panel=FAULTS, metavar="PERCENT")
    ] = None,
    failure_types: Annotated[
        list[str] | None, opt("failure_types", panel=FAULTS, metavar="A,B")
    ] = None,
    stream_cut_rate: Annotated[
        str | None, opt("stream_cut_rate", panel=FAULTS, metavar="PERCENT")
    ] = None,
    fake_metrics: Annotated[
        str | None, opt("fake_metrics", panel=METRICS, metavar="FILE|JSON")
    ] = None,
    fake_metrics_refresh_interval: Annotated[
        str | None, opt("fake_metrics_refresh_interval", panel=METRICS, metavar="DURATION")
    ] = None,
    kv_cache_metrics: Annotated[bool | None, switch("kv_cache_metrics", METRICS)] = None,
    custom_histogram_buckets: Annotated[
        str | None, opt("custom_histogram_buckets", panel=METRICS, metavar="JSON")
    ] = None,
    kv_cache_metrics_sample: Annotated[
        str | None, opt("kv_cache_metrics_sample", panel=METRICS, metavar="FRACTION")
    ] = None,
    kv_events_config: Annotated[
        str | None, opt("kv_events_config", panel=KV, metavar="JSON")
    ] = None,
    kv_transfer_config: Annotated[
        str | None, opt("kv_transfer_config", panel=KV, metavar="JSON")
    ] = None,
    prefix_caching_hash_algo: Annotated[
        str | None, opt("prefix_caching_hash_algo", panel=KV, metavar="ALGO")
    ] = None,
    enable_sleep_mode: Annotated[bool | None, switch("enable_sleep_mode", KV)] = None,
    kv_cache_transfer_latency: Annotated[
        str | None, opt("kv_cache_transfer_latency", panel=KV, metavar="DURATION")
    ] = None,
    kv_cache_transfer_latency_std_dev: Annotated[
        str | None, opt("kv_cache_transfer_latency_std_dev", panel=KV, metavar="DURATION")
    ] = None,
    kv_cache_transfer_time_per_token: Annotated[
        str | None, opt("kv_cache_transfer_time_per_token", panel=KV, metavar="DURATION")
    ] = None,
    kv_cache_transfer_time_per_token_std_dev: Annotated[
        str | None, opt("kv_cache_transfer_time_per_token_std_dev", panel=KV, metavar="DURATION")
    ] = None,
) -> None:
    """Start the simulated vLLM server (Ctrl-C or SIGTERM to stop).

    Also takes `vllm serve`'s command line as it is (llmsim serve MODEL -tp 8 ...);
    vLLM's flags without a meaning here are accepted and listed at start-up.
    Durations accept 250ms, 1.5s, 750us or a bare number of milliseconds.
    Precedence: flags > LLMSIM_* environment > --profile NAME > --config TOML file > defaults.
    """
    flags = {key: value for key, value in locals().items() if value is not None}
    settings = load_or_exit(flags).settings
    launch_or_exit(
        data_parallel_instances(settings),
        settings.data_parallel_backend,
        settings.log_level,
        settings.workers,
    )
