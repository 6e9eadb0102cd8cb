"""Where the server listens, what it logs and how it is split over processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, Field, SecretStr

from llmsim.settings.field_types import (
    MAX_DATA_PARALLEL_SIZE,
    MAX_PORT,
    ByteSize,
    DataParallelBackend,
    Duration,
    JsonNames,
    Names,
    level_name,
)


class ServerFields(BaseModel):
    """Where the server listens, what it logs and how it is split over processes."""

    # -- server -----------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind. Use 0.0.0.0 inside containers.")
    port: int = Field(
        8000, ge=0, le=MAX_PORT, description="TCP port to listen on (0 picks a free one)."
    )
    uds: Path | None = Field(
        None,
        description="Listen on this Unix domain socket instead of host and port (vLLM's --uds); "
        "a stale socket file there is replaced, any other file refused. One server only: not "
        "with several data-parallel ports.",
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
    grpc_only: bool = Field(
        False,
        description="Serve vLLM's gRPC API (vllm.grpc.engine.VllmEngine, with health and "
        "reflection) on --host/--port instead of HTTP, as `vllm serve --grpc` does: no HTTP "
        "routes, no /metrics. One process only (not with several instances on the mp or "
        "workers backend). Needs the grpc extra.",
    )
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(level_name)
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
    fast_lane: bool = Field(
        True,
        description="Answer a plain, non-streaming chat request that comes alone on its "
        "connection without aiohttp's request machinery: the same handler and the same bytes "
        "on the wire, about 30% more answers per second. Off: every request goes through "
        "aiohttp. Needs msgspec (llmsim[fast]).",
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
    enable_server_load_tracking: bool = Field(
        True,
        description="Count the requests in flight on the model endpoints for GET /load "
        "(vLLM's --enable-server-load-tracking). Off: /load answers 0, as vLLM does without "
        "the flag, which is what a vLLM command line that does not give it gets.",
    )
    enable_tokenizer_info_endpoint: bool = Field(
        False,
        description="Serve GET /tokenizer_info, the tokenizer's configuration and chat template "
        "(vLLM's --enable-tokenizer-info-endpoint); without it the route answers 404.",
    )
    enable_scale_out: bool = Field(
        True,
        description="Serve the scale-out routes: /v1/chat/completions/render, "
        "/v1/completions/render, their /derender pair and /inference/v1/generate. Off, they "
        "answer vLLM's 403, as vLLM 0.34 does unless started with --enable-scale-out or "
        "--tokens-only, which is what a vLLM command line without either gets.",
    )
    enable_request_id_headers: bool = Field(
        False,
        description="Every response carries X-Request-Id: the request's own, else a new random "
        "one (vLLM's --enable-request-id-headers), errors and /health included.",
    )
    sse_keep_alive_interval: Duration = Field(
        0.0,
        description="Send a ': keep-alive' comment line on a chat or completion stream that "
        "has sent nothing for this long (queued, in prefill, between slow tokens), so an idle "
        "timeout does not cut it; 0: never. vLLM's --sse-keep-alive-interval (whole seconds).",
    )
    stream_interval: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Tokens per streamed chunk: a stream's first token goes out alone, then "
        "its tokens go in groups of this many, each when its last is due, and the rest with "
        "the last token, as vLLM's --stream-interval; a chat or completions request's "
        "stream_interval may raise it. 1: one chunk per token.",
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
    max_header_size: ByteSize = Field(
        4 * 1024 * 1024,
        ge=1,
        le=64 * 1024**2,
        description="Largest header block a request may send, as vLLM's "
        "--h11-max-incomplete-event-size: one header line (or the request line) may take "
        "this divided by max-header-count, at least 16KiB. Beyond it: 400.",
    )
    max_header_count: int = Field(
        256,
        ge=1,
        le=65_536,
        description="Most header lines a request may send, as vLLM's --h11-max-header-count. "
        "Beyond it: 400.",
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
    log_requests: bool = Field(
        False,
        description="Log each inference request as vLLM's --enable-log-requests: "
        '"Received request ID: params: ..." at info, its prompt at debug.',
    )
    log_outputs: bool = Field(
        False,
        description="With --log-requests, also log each answer as vLLM's "
        '--enable-log-outputs: "Generated response ID: output: ...".',
    )
    log_deltas: bool = Field(
        True,
        description="With --log-outputs, also log each streamed token as it is sent, as "
        'vLLM\'s --enable-log-deltas: "Generated response ID (streaming delta): ...".',
    )
    max_log_len: int | None = Field(
        None,
        ge=0,
        description="Characters of prompt and output text (and token ids) that the request "
        "log keeps, as vLLM's --max-log-len. Unset: all of them.",
    )
    log_error_stack: bool = Field(
        False,
        description="Log every error response with the stack trace that led to it (vLLM's "
        "--log-error-stack), to see where a 4xx or 5xx came from.",
    )
    log_stats: bool = Field(
        False,
        description="Log each engine's throughput, queue and KV-cache usage every "
        "log-stats-interval, as vLLM does (at debug while idle; not while the dashboard is "
        "shown). On for a vLLM command line unless it says --disable-log-stats.",
    )
    log_stats_interval: Duration = Field(
        "10s",  # type: ignore[assignment]  # validated like user input
        gt=0,
        description="How often --log-stats logs. Also read from VLLM_LOG_STATS_INTERVAL (a bare "
        "number there counts seconds, as in vLLM).",
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
