"""The one settings object every part of llmsim receives.

Each field is at the same time a CLI flag (``--time-to-first-token``), an environment
variable (``LLMSIM_TIME_TO_FIRST_TOKEN``) and a TOML key (``time_to_first_token``).
How the layers are merged lives in :mod:`llmsim.settings.sources`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llmsim.settings.data_parallel import data_parallel_layout, data_parallel_problem
from llmsim.settings.fake_metrics import FakeMetrics, FakeMetricsError, load_spec
from llmsim.settings.kv_events import (
    KV_EVENTS_EXTRA,
    KVEventsConfig,
    PrefixCachingHashAlgo,
    missing_kv_events_packages,
    parse_kv_events_config,
    xxhash_missing,
)
from llmsim.settings.lora_modules import LoraModule, split_lora_modules, split_names, unique
from llmsim.settings.parsers import REASONING_PARSERS, invalid_reasoning_parser
from llmsim.settings.responses import ResponseRules, ResponsesError, load_rules
from llmsim.settings.tls import tls_conflict
from llmsim.settings.units import MAX_DURATION, parse_duration, parse_size

ENV_PREFIX = "LLMSIM_"
MAX_STD_DEV_RATIO = 0.3
MAX_DATA_PARALLEL_SIZE = 16
MAX_PORT = 65535
MAX_STEP_DURATION = 1.0
"""Longest per-token or per-sequence cost, in seconds (real ones are microseconds)."""

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(le=MAX_DURATION, json_schema_extra={"duration": True}),
]
StepDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(le=MAX_STEP_DURATION, json_schema_extra={"duration": True}),
]
"""A time per token or per sequence: it is multiplied, so its bound is lower."""
ByteSize = Annotated[int, BeforeValidator(parse_size), Field(json_schema_extra={"size": True})]

FailureType = Literal[
    "rate_limit",
    "invalid_api_key",
    "context_length",
    "server_error",
    "invalid_request",
    "model_not_found",
]
FAILURE_TYPES: tuple[FailureType, ...] = get_args(FailureType)
DataParallelBackend = Literal["mp", "inprocess", "workers"]


class ConfigError(Exception):
    """Settings could not be built; each line names an option and the reason."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


Names = Annotated[list[str], NoDecode, BeforeValidator(split_names), AfterValidator(unique)]


def _load_fake_metrics(value: Any) -> Any:
    """A path to a JSON or TOML file, inline JSON, or (from a profile) a table."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return load_spec(value)
    except FakeMetricsError as exc:
        raise ValueError(exc.message) from None


def _load_responses(value: Any) -> Any:
    """``builtin:tasks``, a TOML file of rules or (from a profile) a ``[responses]`` table."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return load_rules(value)
    except ResponsesError as exc:
        raise ValueError(str(exc)) from None


def _level_name(value: Any) -> Any:
    """vLLM's ``VLLM_LOGGING_LEVEL`` spells levels in capitals (``INFO``, ``WARN``)."""
    if isinstance(value, str):
        value = value.strip().lower()
        return "warning" if value == "warn" else value
    return value


def _json_list_or_names(value: Any) -> Any:
    """vLLM's JSON list (``'["*"]'``), or names as elsewhere (``a,b``, repeated flags)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list: {exc.msg}") from None
    if isinstance(value, list) and len(value) == 1:
        return _json_list_or_names(value[0])
    return split_names(value)


JsonNames = Annotated[list[str], NoDecode, BeforeValidator(_json_list_or_names)]


def _as_list(value: Any) -> Any:
    """One text (from the environment or a single flag) is a list of one."""
    return [value] if isinstance(value, str) else value


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, rest = value.strip().partition("://")
    if scheme not in ("http", "https") or not rest.strip("/"):
        raise ValueError(f"expected an http:// or https:// URL, not {value!r}")
    return value.strip().rstrip("/")


class Settings(BaseSettings):
    """Everything that shapes a running llmsim server."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
        populate_by_name=True,
    )

    # -- server -----------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind. Use 0.0.0.0 inside containers.")
    port: int = Field(
        8000, ge=0, le=MAX_PORT, description="TCP port to listen on (0 picks a free one)."
    )
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=MAX_PORT,
        description="Also serve vLLM's gRPC API (vllm.grpc.engine.VllmEngine, with health "
        "and reflection) on this TCP port, beside HTTP on the same engines (0 picks a free "
        "one; with --dp-ports each rank's server uses grpc-port + its index). Needs the grpc "
        "extra.",
    )
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_level_name)
    ] = Field(
        "info",
        validation_alias=AliasChoices("LLMSIM_LOG_LEVEL", "VLLM_LOGGING_LEVEL"),
        description="Logging verbosity. Also read from VLLM_LOGGING_LEVEL (INFO, DEBUG, ...).",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log format on standard error: text for people, json for log shippers "
        "(one JSON object per line).",
    )
    access_log: bool = Field(
        True,
        description="Log one line per HTTP request (method, path, status, duration, bytes, "
        "tokens). Always off while the dashboard is shown.",
    )
    disable_access_log_for_endpoints: Names = Field(
        default_factory=list,
        description="Paths whose requests the access log leaves out (comma-separated, e.g. "
        "/health,/metrics), as vLLM's --disable-access-log-for-endpoints.",
    )
    dashboard: bool = Field(
        False,
        description="Show a live terminal view of load, LoRA slots, request and token rates, "
        "latency percentiles and recent errors (replaces the access log).",
    )
    config: Path | None = Field(
        None,
        description="TOML profile to read settings from (flag and environment variable only).",
    )
    profile: str | None = Field(
        None,
        min_length=1,
        description="Named profile: a [profiles.NAME] table of the --config file or a built-in "
        "profile (`llmsim profiles list`); flag and environment variable only.",
    )
    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("LLMSIM_API_KEY", "VLLM_API_KEY"),
        description="Require 'Authorization: Bearer KEY' on /v1/* and /admin/* routes. Also "
        "read from VLLM_API_KEY. Never logged or shown.",
    )
    allowed_origins: JsonNames = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (CORS), as vLLM's "
        "--allowed-origins: a JSON list or names, * for any. Empty: no CORS headers.",
    )
    allowed_methods: JsonNames = Field(
        default_factory=lambda: ["*"],
        description="Methods a cross-origin request may use (vLLM's --allowed-methods).",
    )
    allowed_headers: JsonNames = Field(
        default_factory=lambda: ["*"],
        description="Headers a cross-origin request may send (vLLM's --allowed-headers).",
    )
    allow_credentials: bool = Field(
        False,
        description="Allow cross-origin requests with credentials (vLLM's --allow-credentials).",
    )
    root_path: str | None = Field(
        None,
        pattern=r"^/.*[^/]$",
        description="A path prefix a proxy may keep in front of every route (vLLM's "
        "--root-path, e.g. /llm): /llm/v1/models and /v1/models both answer.",
    )
    disable_fastapi_docs: bool = Field(
        False,
        description="Serve no /openapi.json (vLLM's --disable-fastapi-docs, which also drops "
        "its /docs and /redoc pages).",
    )
    max_request_body_size: ByteSize = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="Largest request body accepted (e.g. 4MiB, 512KiB); larger ones get 413.",
    )
    responses_store_max_entries: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="Responses API objects kept for GET /v1/responses/{id} and "
        "previous_response_id (0 keeps none); the least recently used go first.",
    )
    responses_store_max_size: ByteSize = Field(
        256 * 1024 * 1024,
        ge=0,
        le=64 * 1024**3,
        description="Total size (as JSON) of the kept Responses API objects, e.g. 256MiB; the "
        "least recently used go first.",
    )
    startup_duration: Duration = Field(
        0.0,
        description="Simulated model loading: /health/ready answers 503 and inference 503 "
        "for this long after start.",
    )
    shutdown_timeout: Duration = Field(
        "30s",  # type: ignore[assignment]  # validated like user input; a bare 30 means 30 ms
        description="On SIGTERM/SIGINT, how long in-flight and queued requests may take to "
        "finish before they are aborted.",
    )
    data_parallel_size: int = Field(
        1,
        ge=1,
        le=MAX_DATA_PARALLEL_SIZE,
        description="vLLM's data-parallel ranks: engines with their own scheduler, KV cache, "
        'adapters and metrics (engine="0" .. "N-1") behind one port, balanced as vLLM\'s '
        "API server does.",
    )
    data_parallel_rank: int | None = Field(
        None,
        ge=0,
        description="External load balancing: this server is this rank alone (its metrics say "
        'engine="R"); run one server per rank and balance outside.',
    )
    data_parallel_size_local: int | None = Field(
        None,
        ge=0,
        description="Ranks on this node; with --data-parallel-start-rank or "
        "--data-parallel-hybrid-lb this server runs only ranks start .. start+local-1.",
    )
    data_parallel_start_rank: int | None = Field(
        None,
        ge=0,
        description="The first rank on this node; with --data-parallel-size-local it turns on "
        "hybrid load balancing, as in vLLM.",
    )
    data_parallel_hybrid_lb: bool = Field(
        False,
        description="Hybrid load balancing: one port in front of this node's ranks "
        "(--data-parallel-start-rank .. + --data-parallel-size-local - 1).",
    )
    data_parallel_external_lb: bool = Field(
        False,
        description="External load balancing (needs --data-parallel-rank): one rank per server.",
    )
    api_server_count: int | None = Field(
        None,
        ge=1,
        description="vLLM's API server processes sharing the port; llmsim serves the port from "
        "one front end that balances as they do together, so only the banner shows it.",
    )
    dp_ports: bool = Field(
        False,
        description="llmsim only: each data-parallel rank as its own server on its own port "
        "(port .. port+N-1) instead of vLLM's engines behind one port.",
    )
    data_parallel_backend: DataParallelBackend = Field(
        "mp",
        description="With --dp-ports, how the ranks' servers run: mp, one process each (uses "
        "every core); inprocess, all on one event loop in one process (least memory); "
        "workers, spread over --workers processes, many on each event loop (large fleets).",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="llmsim only: with --data-parallel-backend workers, how many worker "
        "processes share the instances (default: one per core; never more than instances).",
    )

    # -- TLS (vLLM's --ssl-* flags) ------------------------------------------------
    ssl_keyfile: Annotated[Path | None, AfterValidator(_existing_file)] = Field(
        None,
        description="Private key (PEM) of the TLS certificate; serve HTTPS. Needs ssl-certfile.",
    )
    ssl_certfile: Annotated[Path | None, AfterValidator(_existing_file)] = Field(
        None,
        description="TLS certificate chain (PEM) to serve HTTPS with; may hold the key too.",
    )
    ssl_ca_certs: Annotated[Path | None, AfterValidator(_existing_file)] = Field(
        None,
        description="CA certificates (PEM) that client certificates are checked against "
        "(mutual TLS, with ssl-cert-reqs).",
    )
    ssl_cert_reqs: int = Field(
        0,
        ge=0,
        le=2,
        description="Client certificates, as Python's ssl module numbers them: 0 not asked "
        "for, 1 checked if sent, 2 required (mutual TLS).",
    )
    enable_ssl_refresh: bool = Field(
        False,
        description="Reload the certificate, key and CA files when they change, without a "
        "restart or dropping connections.",
    )
    self_signed_certs: bool = Field(
        False,
        description="Serve HTTPS with a certificate made at start-up for localhost, "
        "127.0.0.1, the host bound and this machine's name; the banner says where its CA is "
        "written. Needs llmsim[tls].",
    )

    vllm_flags_without_effect: Annotated[list[str], NoDecode, BeforeValidator(_as_list)] = Field(
        default_factory=list,
        description="vLLM flags given on the command line that llmsim accepts but that change "
        "nothing here (filled in from a `vllm serve` command line; shown in the start-up panel "
        "and by `llmsim config show`).",
    )

    # -- model ------------------------------------------------------------------
    model: str = Field(
        "llmsim/sim-model",
        min_length=1,
        description="Model name or path the server pretends to serve.",
    )
    served_model_name: Names = Field(
        default_factory=list,
        description="Names the API accepts for the model; the first is the one reported. "
        "Defaults to the model name.",
    )
    lora: Names = Field(
        default_factory=list,
        description="LoRA adapter names to serve (comma-separated, repeatable). "
        "The adapter path reported in /v1/models is the name itself.",
    )
    lora_modules: Annotated[list[LoraModule], NoDecode, BeforeValidator(split_lora_modules)] = (
        Field(
            default_factory=list,
            description="LoRA adapters in vLLM's forms: name=path, or JSON "
            '{"name": ..., "path": ..., "base_model_name": ...}.',
        )
    )
    max_model_len: int = Field(
        4096, ge=1, le=10_000_000, description="Context window: prompt plus output tokens."
    )
    tokenizer: str | None = Field(
        None,
        min_length=1,
        description="Hugging Face tokenizer to count tokens with: a tokenizer.json file, a "
        "directory holding one, or a hub id (local cache first; needs llmsim[tokenizers]). "
        "Unset: the built-in tokenizer.",
    )
    chat_template: str | None = Field(
        None,
        min_length=1,
        description="Jinja2 chat template (a file, or the template itself) that renders chat "
        "messages into the prompt; overrides the tokenizer's own.",
    )
    max_logprobs: int = Field(
        20,
        ge=0,
        le=1_000_000,
        description="Most logprobs and prompt_logprobs a request may ask for (vLLM's default 20).",
    )
    max_request_work: int = Field(
        2_000_000,
        ge=1,
        le=10**12,
        description="Most work one request may ask for, counted in token positions times (1 + "
        "logprobs per position): n x max_tokens per prompt (max_model_len less the prompt when "
        "unset), plus prompt tokens scored for echo or prompt_logprobs. Bounds the time and "
        "size of one answer; above it a request gets 400.",
    )
    response_role: str = Field(
        "assistant",
        min_length=1,
        description="The role of the chat answer's message, as vLLM's --response-role.",
    )
    return_tokens_as_token_ids: bool = Field(
        False,
        description="Name tokens token_id:N in logprobs (vLLM's --return-tokens-as-token-ids), "
        "for clients that cannot tell apart tokens with the same text.",
    )
    reasoning_parser: str | None = Field(
        None,
        description="vLLM's --reasoning-parser (deepseek_r1, qwen3, granite...): chat answers "
        "start with a short simulated thought, returned apart as the message's reasoning (a "
        "Responses reasoning item, a Messages thinking block), counted and paced like other "
        "tokens. Unset: no reasoning.",
    )
    enable_auto_tool_choice: bool | None = Field(
        None,
        description="vLLM's --enable-auto-tool-choice. False: chat and Messages requests with "
        "tools get vLLM's 400 for tool_choice auto (the default when tools are sent), required "
        "or a named tool, as vLLM answers without a tool parser. Unset: llmsim's default, all "
        "allowed; a vLLM command line without the flag sets it False.",
    )
    tool_call_parser: str | None = Field(
        None,
        description="vLLM's --tool-call-parser (hermes, llama3_json...): the tool-call format "
        "named for vLLM; llmsim's tool calls are the same whichever it names.",
    )
    runner: Literal["auto", "generate", "pooling", "draft"] = Field(
        "auto",
        description="vLLM's --runner: pooling serves an embedding model (/v1/embeddings, "
        "/pooling, and the scoring routes /score, /rerank, /classify, /v2/embed) whose chat, "
        "completions, responses and messages routes answer 404, as vLLM registers none for it; "
        "auto, generate and draft serve the generating routes and no scoring routes.",
    )
    embedding_dimension: int = Field(
        4096,
        ge=1,
        le=65_536,
        description="Length of the vectors /v1/embeddings and /pooling return.",
    )

    # -- generation -------------------------------------------------------------
    mode: Literal["echo", "random"] = Field(
        "random",
        description="echo: answer with the last user message (chat) or the prompt (completions); "
        "random: answer with natural sentences.",
    )
    seed: int | None = Field(
        None, description="Seed for reproducible random outputs (unset: different on every run)."
    )
    tool_call_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="With tool_choice auto, how often a turn calls tools instead of answering "
        "in text (never right after a tool result; a request's seed makes it reproducible).",
    )

    # -- chosen answers ---------------------------------------------------------
    responses: Annotated[ResponseRules | None, NoDecode, BeforeValidator(_load_responses)] = Field(
        None,
        description="Response rules: a TOML file of ordered rules (or a responses table in a "
        "profile), or builtin:tasks for answers that fit the request type. Replaceable at run "
        "time via /admin/responses.",
    )
    dataset: Annotated[Path | None, AfterValidator(_existing_file)] = Field(
        None,
        description="Conversation dataset (ShareGPT JSON/JSONL or OpenAI chat JSONL): a known "
        "conversation gets its recorded answer; random mode draws answers from its assistant "
        "turns.",
    )
    replay: Annotated[Path | None, AfterValidator(_existing_file)] = Field(
        None,
        description="A recording made by `llmsim record`: matching requests get the recorded "
        "answer, paced by the recorded time to first token and inter-token gaps.",
    )
    replay_speed: float = Field(
        1.0,
        gt=0.0,
        le=1000.0,
        description="Replay the recorded timing this many times faster (0.5: twice as slow).",
    )
    replay_strict: bool = Field(
        False,
        description="Answer requests that match no recording with 404 instead of the "
        "configured mode.",
    )
    upstream: Annotated[str | None, AfterValidator(_http_url)] = Field(
        None,
        description="Forward chat and completions requests to this OpenAI-compatible server "
        "(e.g. a real vLLM) and simulate only when it fails or times out.",
    )
    upstream_timeout: Duration = Field(
        "10s",  # type: ignore[assignment]  # validated like user input; a bare 10 means 10 ms
        description="How long to wait for the upstream's answer (or the start of its stream) "
        "before simulating instead.",
    )

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

    # -- metrics ----------------------------------------------------------------
    fake_metrics: Annotated[FakeMetrics | None, NoDecode, BeforeValidator(_load_fake_metrics)] = (
        Field(
            None,
            description="Fake values for vllm: series: gauges as values, counters as rates, "
            "histograms as a rate and a latency distribution, each fixed or a function of time "
            "(ramp, oscillate, square, schedule); also the LoRA info metric. Inline JSON or a "
            "JSON/TOML file. Also settable at run time via /admin/metrics.",
        )
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

    # -- KV events, disaggregated prefill/decode, sleep mode ----------------------
    kv_events_config: Annotated[
        KVEventsConfig | None, NoDecode, BeforeValidator(parse_kv_events_config)
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

    @model_validator(mode="after")
    def _check_kv_features(self) -> Settings:
        for mean_name in ("kv_cache_transfer_latency", "kv_cache_transfer_time_per_token"):
            mean, std = getattr(self, mean_name), getattr(self, f"{mean_name}_std_dev")
            if std > MAX_STD_DEV_RATIO * mean + 1e-12:
                raise _cross_field_error(
                    f"{mean_name}_std_dev", f"must be at most 30% of {mean_name.replace('_', '-')}"
                )
        events = self.kv_events_config
        if events is not None and events.publishes and missing_kv_events_packages():
            raise _cross_field_error(
                "kv_events_config", f"publishing KV events needs the extra: {KV_EVENTS_EXTRA}"
            )
        if self.prefix_caching_hash_algo.startswith("xxhash") and xxhash_missing():
            raise _cross_field_error(
                "prefix_caching_hash_algo", f"xxhash needs the extra: {KV_EVENTS_EXTRA}"
            )
        return self

    @field_validator("reasoning_parser")
    @classmethod
    def _known_reasoning_parser(cls, value: str | None) -> str | None:
        if value is not None and value not in REASONING_PARSERS:
            raise ValueError(invalid_reasoning_parser(value))
        return value

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        jittered = ["inter_token_latency"]
        if self.latency_model == "constant":
            jittered.append("time_to_first_token")
        for mean_name in jittered:
            mean = getattr(self, mean_name)
            std = getattr(self, f"{mean_name}_std_dev")
            if std > MAX_STD_DEV_RATIO * mean + 1e-12:
                raise _cross_field_error(
                    f"{mean_name}_std_dev",
                    f"must be at most 30% of {mean_name.replace('_', '-')}",
                )
        keeps_blocks = self.latency_model == "step" or self.kv_blocks
        if keeps_blocks and self.kv_cache_size < self.max_model_len:
            what = "the step latency model" if self.latency_model == "step" else "kv-blocks"
            raise _cross_field_error(
                "kv_cache_size",
                f"{what} needs kv-cache-size ({self.kv_cache_size} tokens) "
                f"of at least max-model-len ({self.max_model_len} tokens)",
            )
        problem = data_parallel_problem(self)
        if problem is not None:
            raise _cross_field_error(*problem)
        last_port = self.port + data_parallel_layout(self).port_count - 1
        if self.port and last_port > MAX_PORT:
            raise _cross_field_error(
                "data_parallel_size",
                f"ports {self.port}..{last_port} go past {MAX_PORT}; lower the port",
            )
        last_grpc_port = (self.grpc_port or 0) + data_parallel_layout(self).port_count - 1
        if self.grpc_port and last_grpc_port > MAX_PORT:
            raise _cross_field_error(
                "grpc_port",
                f"gRPC ports {self.grpc_port}..{last_grpc_port} go past {MAX_PORT}; lower the port",
            )
        tls_problem = tls_conflict(self)
        if tls_problem is not None:
            raise _cross_field_error(*tls_problem)
        if self.replay_strict and self.replay is None:
            raise _cross_field_error("replay_strict", "needs a recording to replay (--replay)")
        if not self.failure_types and self.failure_injection_rate > 0:
            raise _cross_field_error("failure_types", "must name at least one type")
        if self.max_cpu_loras is None:
            self.max_cpu_loras = self.max_loras
        elif self.max_cpu_loras < self.max_loras:
            raise _cross_field_error("max_cpu_loras", "must be at least max-loras")
        names = [*self.lora, *(module.name for module in self.lora_modules)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise _cross_field_error("lora", f"adapter names given twice: {', '.join(duplicates)}")
        clashes = sorted(set(names) & set(self.served_names))
        if clashes:
            raise _cross_field_error(
                "lora", f"adapter names clash with the model: {', '.join(clashes)}"
            )
        return self

    # -- derived views ----------------------------------------------------------
    @property
    def served_names(self) -> list[str]:
        """Names the API accepts for the base model; the first is reported."""
        return self.served_model_name or [self.model]

    @property
    def model_label(self) -> str:
        """The ``model_name`` label vLLM puts on engine metrics."""
        return self.served_names[0]

    @property
    def access_log_enabled(self) -> bool:
        """The access log is written unless turned off or the dashboard is shown."""
        return self.access_log and not self.dashboard

    @property
    def cpu_lora_capacity(self) -> int:
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras

    @property
    def adapters(self) -> list[LoraModule]:
        """Every adapter known at start-up, ``--lora`` names first."""
        return [LoraModule(name=name, path=name) for name in self.lora] + list(self.lora_modules)


def _cross_field_error(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(
        "cross_field", "{field}: {reason}", {"field": field, "reason": message}
    )


def option_flag(field: str) -> str:
    """The CLI flag for a settings field."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _fields_marked(marker: str) -> frozenset[str]:
    return frozenset(
        name
        for name, info in Settings.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(marker)
    )


DURATION_FIELDS = _fields_marked("duration")
SIZE_FIELDS = _fields_marked("size")
SECRET_FIELDS = frozenset({"api_key"})
LAYER_FIELDS = frozenset({"config", "profile"})
"""Fields that choose settings layers; they cannot be set from inside a layer (a file)."""
